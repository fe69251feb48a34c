"""The client without a server: defaults before any document, the bootstrap file, overrides."""

from __future__ import annotations

import json
import threading
import time

import pytest
from flagclient import PROVIDER_NOT_READY, FlagClient

from tests.sdk.documents import document
from tests.servers import free_port


def dead_url() -> str:
    return f"http://127.0.0.1:{free_port()}"  # nothing listens there


@pytest.fixture
def bootstrap(tmp_path):
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(document()))
    return path


@pytest.fixture
def offline(bootstrap):
    with FlagClient(offline=True, bootstrap_path=bootstrap) as client:
        yield client


def wait_for(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"not within {timeout}s"
        time.sleep(0.01)


def test_server_down_at_start_serves_the_callers_defaults_with_provider_not_ready():
    with FlagClient(dead_url(), "ffs_x", poll_interval=0.2) as client:
        assert client.value("new-checkout", {"targetingKey": "u"}, default=True) is True
        details = client.details("new-checkout", {"targetingKey": "u"}, default="fallback")
        assert (details.value, details.reason) == ("fallback", "ERROR")
        assert details.error_code == PROVIDER_NOT_READY
        assert client.all({"targetingKey": "u"}) == {}
        assert not client.ready
        wait_for(lambda: client.stale)
        assert client.wait_until_ready(0.1) is False


def test_bootstrap_file_serves_until_the_server_answers(bootstrap):
    with FlagClient(dead_url(), "ffs_x", bootstrap_path=bootstrap) as client:
        assert client.ready and client.version == 7
        assert client.value("new-checkout", {"country": "US"}, default=False) is True
        assert client.value("new-checkout", {"country": "FR"}, default=True) is False
        wait_for(lambda: client.stale)  # served, but not confirmed by the server


def test_an_unreadable_bootstrap_file_is_ignored(tmp_path):
    path = tmp_path / "flags.json"
    path.write_text("{not json")
    with FlagClient(offline=True, bootstrap_path=path) as client:
        assert not client.ready
        assert client.value("new-checkout", {}, default=True) is True


def test_details_carry_variant_reason_and_rule(offline):
    details = offline.details("new-checkout", {"country": "US"}, default=False)
    assert (details.value, details.variant, details.reason, details.rule_id) == (
        True,
        "on",
        "TARGETING_MATCH",
        "1",
    )
    assert details.error_code is None


def test_all_evaluates_every_flag(offline):
    results = offline.all({"country": "US"})
    assert {key: result.value for key, result in results.items()} == {
        "new-checkout": True,
        "banner-text": "Hello",
        "theme": {"color": "black"},
    }


@pytest.mark.parametrize(
    ("flag", "context", "default", "code"),
    [
        ("no-such-flag", {}, "d", "FLAG_NOT_FOUND"),
        ("banner-text", {}, False, "TYPE_MISMATCH"),  # a boolean default expects a boolean
        ("new-checkout", ["not", "an", "object"], False, "INVALID_CONTEXT"),
        ("new-checkout", {"targetingKey": 42}, False, "INVALID_CONTEXT"),
    ],
)
def test_evaluation_problems_answer_the_default_with_an_error_code(
    offline, flag, context, default, code
):
    assert offline.value(flag, context, default) == default
    details = offline.details(flag, context, default)
    assert (details.value, details.reason, details.error_code) == (default, "ERROR", code)


def test_expected_type_can_be_named_when_the_default_says_nothing(offline):
    assert offline.details("banner-text", {}, None).value == "Hello"
    mismatch = offline.details("banner-text", {}, None, expected_type="number")
    assert mismatch.error_code == "TYPE_MISMATCH"


def test_the_evaluation_path_never_raises(offline):
    class Hostile(dict):
        def get(self, *args):
            raise RuntimeError("boom")

    assert offline.value("new-checkout", Hostile(), default=True) is True
    assert offline.details("new-checkout", Hostile(), default=True).error_code == "GENERAL"


def test_override_serves_a_value_in_a_block_and_restores_it(offline):
    with offline.override("new-checkout", False):
        assert offline.value("new-checkout", {"country": "US"}, default=True) is False
        with offline.override("new-checkout", True):
            details = offline.details("new-checkout", {})
            assert (details.value, details.variant, details.reason) == (True, "on", "STATIC")
        assert offline.value("new-checkout", {"country": "US"}) is False
        assert offline.all({"country": "US"})["new-checkout"].value is False
    assert offline.value("new-checkout", {"country": "US"}) is True


def test_override_works_before_any_document():
    with FlagClient(offline=True) as client, client.override("beta", "yes"):
        assert client.value("beta", {}, default="no") == "yes"


def test_close_stops_the_background_thread_promptly():
    client = FlagClient(dead_url(), "ffs_x", poll_interval=60)
    wait_for(lambda: client.stale)
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 2
    assert not [t for t in threading.enumerate() if t.name == "flagclient" and t.is_alive()]
    assert client.value("new-checkout", {}, default=True) is True  # still answers


def test_offline_client_starts_no_thread(bootstrap):
    before = {t.ident for t in threading.enumerate()}
    with FlagClient("http://unused", "ffs_x", offline=True, bootstrap_path=bootstrap):
        assert {t.ident for t in threading.enumerate()} == before


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("poll_interval", 0),
        ("poll_interval", -1.0),
        ("poll_interval", float("nan")),
        ("timeout", "5"),
        ("timeout", True),
        ("stream_read_timeout", None),
        ("exposure_interval", float("inf")),
        ("reconnect_delay", (30.0, 1.0)),
        ("reconnect_delay", (0.5,)),
        ("reconnect_delay", "fast"),
        ("max_document_bytes", 0),
        ("max_document_bytes", 1.5),
    ],
)
def test_a_bad_option_is_refused_naming_it(option, value):
    with pytest.raises(ValueError, match=option):
        FlagClient(dead_url(), "ffs_x", start=False, **{option: value})


def test_a_bootstrap_file_over_the_size_cap_is_ignored(bootstrap):
    with FlagClient(offline=True, bootstrap_path=bootstrap, max_document_bytes=100) as client:
        assert not client.ready
    with FlagClient(offline=True, bootstrap_path=bootstrap) as client:
        assert client.ready
