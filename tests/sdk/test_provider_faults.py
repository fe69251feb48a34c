"""The OpenFeature provider when the server is down, slow to come, or refuses the key; and
the snippet docs/sdk.md gives, run exactly as written."""

from __future__ import annotations

import json
import os
import queue
import re
import subprocess
import sys
import time

import pytest
from flagclient.provider import FlagProvider
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ErrorCode, ProviderFatalError
from openfeature.provider import ProviderStatus

from tests.sdk.conftest import SDK_SOURCE
from tests.sdk.documents import document
from tests.sdk.misbehaving import MisbehavingServer, serve_document, serve_stream, status
from tests.servers import ROOT

DOMAIN = "flagclient-faults"
USER = EvaluationContext(targeting_key="user-1", attributes={"country": "US"})
FAST = {"poll_interval": 0.3, "reconnect_delay": (0.05, 0.3), "timeout": 1.0}


class Events:
    """Every provider event the OpenFeature client hands to its handlers."""

    def __init__(self, client) -> None:
        self.queue: queue.Queue[ProviderEvent] = queue.Queue()
        for kind in ProviderEvent:
            client.add_handler(kind, lambda details, kind=kind: self.queue.put(kind))

    def wait_for(self, wanted: ProviderEvent, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.queue.get(timeout=max(0.01, deadline - time.monotonic())) != wanted:
            pass

    def drain(self, seconds: float) -> list[ProviderEvent]:
        time.sleep(seconds)
        seen = []
        while not self.queue.empty():
            seen.append(self.queue.get())
        return seen


@pytest.fixture
def openfeature(no_crashes):
    client = api.get_client(DOMAIN)
    yield client, Events(client)
    api.clear_providers()


def test_ready_is_reported_once_on_the_first_success_after_failures(server, openfeature):
    client, events = openfeature
    server.document = server.stream = status(503)
    provider = FlagProvider(url=server.url, server_key="ffs_test", ready_timeout=0.3, **FAST)
    api.set_provider(provider, DOMAIN)
    events.wait_for(ProviderEvent.PROVIDER_ERROR, 5)
    assert client.get_boolean_details("new-checkout", True, USER).value is True  # defaults
    server.document, server.stream = serve_document, serve_stream
    events.wait_for(ProviderEvent.PROVIDER_READY, 5)
    assert ProviderEvent.PROVIDER_READY not in events.drain(1.0)
    assert client.get_provider_status() == ProviderStatus.READY
    assert client.get_boolean_value("new-checkout", False, USER) is True


def test_with_a_bootstrap_file_the_provider_is_ready_at_once_then_stale(openfeature, tmp_path):
    client, events = openfeature
    bootstrap = tmp_path / "flags.json"
    bootstrap.write_text(json.dumps(document(7)))
    server = MisbehavingServer()  # down for now
    provider = FlagProvider(
        url=server.url, server_key="ffs_test", bootstrap_path=bootstrap, ready_timeout=0.5, **FAST
    )
    api.set_provider_and_wait(provider, DOMAIN)  # does not raise: it can serve the file
    events.wait_for(ProviderEvent.PROVIDER_STALE, 5)
    assert client.get_provider_status() == ProviderStatus.STALE
    assert client.get_boolean_value("new-checkout", False, USER) is True  # from the file
    with server:
        events.wait_for(ProviderEvent.PROVIDER_READY, 5)
        assert ProviderEvent.PROVIDER_READY not in events.drain(1.0)
        assert client.get_provider_status() == ProviderStatus.READY


def test_a_refused_key_is_fatal_at_once(server, openfeature):
    client, events = openfeature
    server.document = status(401)
    provider = FlagProvider(url=server.url, server_key="ffs_test", ready_timeout=10.0, **FAST)
    started = time.monotonic()
    with pytest.raises(ProviderFatalError):
        api.set_provider_and_wait(provider, DOMAIN)
    assert time.monotonic() - started < 3.0  # not the 10 s ready_timeout
    assert client.get_provider_status() == ProviderStatus.FATAL
    details = client.get_boolean_details("new-checkout", True, USER)
    assert (details.value, details.error_code) == (True, ErrorCode.PROVIDER_FATAL)


def test_a_key_refused_later_reports_a_fatal_error(server, openfeature):
    client, events = openfeature
    provider = FlagProvider(url=server.url, server_key="ffs_test", **FAST)
    api.set_provider_and_wait(provider, DOMAIN)
    server.document = server.stream = status(403)
    server.drop_streams()
    events.wait_for(ProviderEvent.PROVIDER_ERROR, 5)
    assert client.get_provider_status() == ProviderStatus.FATAL


# --- the documented snippet, as written ---------------------------------------------------


def documented_snippet() -> str:
    """The first Python block of the OpenFeature section of docs/sdk.md."""
    text = (ROOT / "docs" / "sdk.md").read_text()
    section = text[text.index("\n## OpenFeature") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def run_snippet(url: str) -> tuple[subprocess.CompletedProcess, float]:
    script = "\n".join(
        [
            "import sys",
            f"sys.path.insert(0, {str(SDK_SOURCE)!r})",
            f"URL, KEY = {url!r}, 'ffs_test'",
            documented_snippet(),
            "print('enabled', enabled)",
        ]
    )
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return done, time.monotonic() - started


def test_the_documented_snippet_starts_a_service_with_the_server_down():
    down = MisbehavingServer()  # nothing listens on its port
    done, took = run_snippet(down.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "enabled False"  # the default
    assert "serving defaults" in done.stderr
    assert took < 20  # the ready_timeout (5 s), not for ever


def test_the_documented_snippet_with_a_refused_key_starts_too(server):
    server.document = status(401)
    done, _ = run_snippet(server.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "enabled False"
    assert "refused" in done.stderr


def test_the_documented_snippet_serves_the_flag_when_the_server_answers(server):
    done, _ = run_snippet(server.url)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "enabled True"
    assert "serving defaults" not in done.stderr
