"""OFREP bulk answers joined from items encoded once per snapshot: the same bytes as ever."""

from __future__ import annotations

import json
from typing import Any

import pytest

from evaluation import cache as snapshots
from evaluation.engine import Snapshot
from flags import services
from flags.models import FlagConfig
from tests import factories
from tests.evaluation.document_loader import api_key, load_document

pytestmark = pytest.mark.django_db

BULK = "/ofrep/v1/evaluate/flags"


def _boolean(enabled: bool = True, **extra: Any) -> dict[str, Any]:
    return {
        "type": "boolean",
        "enabled": enabled,
        "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}],
        "offVariant": "off",
        "defaultServe": {"variant": "on"},
        **extra,
    }


def _in(attribute: str, *values: str) -> dict[str, Any]:
    return {"attribute": attribute, "operator": "in", "values": list(values)}


HALVES = {
    "rollout": {"variants": [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}]}
}

# Fixed and context-dependent flags interleaved, runs of each, one dependent first and two
# fixed last,
# text beyond ASCII in values and metadata, every kind of answer (errors included).
MIXED = {
    "segments": {"staff": {"conditions": [_in("email", "a@x.io", "b@x.io")], "included": ["u-7"]}},
    "flags": {
        "a-rule": _boolean(
            rules=[{"id": "1", "conditions": [_in("country", "US")], "serve": {"variant": "off"}}]
        ),
        "b-off": _boolean(False, metadata={"name": "Ünïcode name", "tags": ["x", "y"]}),
        "c-static": _boolean(metadata={"description": "always on 😀"}),
        "d-theme": {
            "type": "json",
            "enabled": True,
            "variants": [{"key": "dark", "value": {"bg": "noir é", "n": [1, 2.5]}}],
            "offVariant": "dark",
            "defaultServe": {"variant": "dark"},
        },
        "e-split": _boolean(defaultServe=HALVES),
        "f-staff": _boolean(
            defaultServe={"variant": "off"},
            rules=[
                {
                    "id": "2",
                    "conditions": [{"operator": "in_segment", "values": ["staff"]}],
                    "serve": {"variant": "on"},
                }
            ],
        ),
        "g-off": _boolean(False, defaultServe=HALVES),
        "h-target": {
            "type": "string",
            "enabled": True,
            "variants": [{"key": "hi", "value": "Hi"}, {"key": "ciao", "value": "Ciào"}],
            "offVariant": "ciao",
            "targets": [{"variant": "ciao", "values": ["u-1"]}],
            "defaultServe": {"variant": "hi"},
        },
        "i-number": {
            "type": "number",
            "enabled": True,
            "variants": [{"key": "one", "value": 1}, {"key": "pi", "value": 3.14}],
            "offVariant": "one",
            "defaultServe": {"variant": "pi"},
        },
        "j-staff-split": _boolean(
            rules=[
                {
                    "id": "3",
                    "conditions": [{"operator": "in_segment", "values": ["staff"]}],
                    "serve": HALVES,
                }
            ],
            defaultServe={"variant": "off"},
        ),
        "k-off": _boolean(False),
        "l-static": _boolean(defaultServe={"variant": "off"}),
    },
}

CONTEXTS = [
    {},
    {"targetingKey": "u-1"},
    {"targetingKey": "u-7", "country": "US"},
    {"targetingKey": "u-2", "email": "a@x.io", "country": "FR"},
    {"targetingKey": "u-3", "email": "b@x.io", "country": "US", "plan": "pro"},
    {"country": "US", "email": "nobody@x.io"},
    {"targetingKey": "ü-ñ", "email": ["a@x.io"], "country": 3},
]


@pytest.fixture
def environment():
    loaded = load_document(MIXED)
    assert not loaded.refused
    return loaded.environment


@pytest.fixture
def server_key(environment):
    return api_key(environment, "server")


def _post(client, path: str, context: dict, key: str):
    body = json.dumps({"context": context})
    return client.post(path, body, content_type="application/json", HTTP_X_API_KEY=key)


def _flag_by_flag(client, keys: list[str], context: dict, key: str) -> bytes:
    """The items of a bulk answer as the single-flag endpoint answers each flag."""
    return b",".join(_post(client, f"{BULK}/{flag}", context, key).content for flag in keys)


def _snapshot(environment) -> Snapshot:
    snapshot = snapshots.snapshot(environment.pk)
    assert snapshot is not None
    return snapshot


def test_a_snapshot_of_mixed_flags_answers_some_for_every_context(environment):
    # What the other tests rely on: both kinds of flag are there, interleaved.
    snapshot = _snapshot(environment)
    fixed = list(snapshot.fixed_answers)
    assert fixed == ["b-off", "c-static", "d-theme", "g-off", "i-number", "k-off", "l-static"]
    assert snapshot.flag_keys[0] not in fixed and snapshot.flag_keys[-2:] == ("k-off", "l-static")


def test_bulk_answer_is_the_single_flag_answers_joined_in_document_order(
    client, environment, server_key
):
    keys = list(_snapshot(environment).flag_keys)
    for context in CONTEXTS:
        response = _post(client, BULK, context, server_key)
        assert response.status_code == 200
        body = response.content
        assert [item["key"] for item in json.loads(body)["flags"]] == keys
        items = _flag_by_flag(client, keys, context, server_key)
        assert body.startswith(b'{"flags":[' + items + b'],"metadata":{"version":'), context
        # The compact encoding of the whole answer, byte for byte (no escapes, no spaces).
        assert (
            body == json.dumps(json.loads(body), separators=(",", ":"), ensure_ascii=False).encode()
        )


def test_bulk_answer_is_byte_identical_to_the_answer_encoded_flag_by_flag(
    client, environment, server_key, monkeypatch
):
    fast = [_post(client, BULK, context, server_key) for context in CONTEXTS]
    # Without the fixed answers apart, every flag's item is looked up for the request.
    monkeypatch.setattr(Snapshot, "evaluate_dependent", lambda self, context: None)
    slow = [_post(client, BULK, context, server_key) for context in CONTEXTS]
    for fast_answer, slow_answer in zip(fast, slow, strict=True):
        assert fast_answer.content == slow_answer.content
        assert fast_answer["ETag"] == slow_answer["ETag"]


def test_a_toggle_changes_the_answers_encoded_for_every_context(
    client, environment, server_key, django_capture_on_commit_callbacks
):
    context = {"targetingKey": "u-3", "email": "b@x.io", "country": "US"}
    before = _post(client, BULK, context, server_key)
    items = {item["key"]: item for item in before.json()["flags"]}
    assert items["b-off"]["reason"] == "DISABLED"
    # Still fixed, with another answer; fixed from now on; no longer fixed.
    for flag, enabled in (("b-off", True), ("a-rule", False), ("g-off", True)):
        config = FlagConfig.objects.get(flag__key=flag, environment=environment)
        with django_capture_on_commit_callbacks(execute=True):
            services.flag_toggle(config=config, enabled=enabled, **factories.SYSTEM)
    assert list(_snapshot(environment).fixed_answers) == [
        "a-rule",
        "b-off",
        "c-static",
        "d-theme",
        "i-number",
        "k-off",
        "l-static",
    ]
    after = _post(client, BULK, context, server_key)
    items = {item["key"]: item for item in after.json()["flags"]}
    assert (items["b-off"]["value"], items["b-off"]["reason"]) == (True, "STATIC")
    assert (items["a-rule"]["value"], items["a-rule"]["reason"]) == (False, "DISABLED")
    assert items["g-off"]["reason"] == "SPLIT"
    assert after["ETag"] != before["ETag"]
    version = after.json()["metadata"]["version"]
    assert version > before.json()["metadata"]["version"]
    assert items["c-static"]["metadata"]["version"] == version  # fixed items encoded anew
    keys = list(_snapshot(environment).flag_keys)
    assert after.content.startswith(
        b'{"flags":[' + _flag_by_flag(client, keys, context, server_key)
    )


def test_a_bulk_answer_is_revalidated_with_its_etag(client, environment, server_key):
    body = json.dumps({"context": {"targetingKey": "u-1"}})
    first = client.post(BULK, body, content_type="application/json", HTTP_X_API_KEY=server_key)
    again = client.post(
        BULK,
        body,
        content_type="application/json",
        HTTP_X_API_KEY=server_key,
        HTTP_IF_NONE_MATCH=first["ETag"],
    )
    assert again.status_code == 304 and again.content == b""


def _counted(environment) -> tuple[dict, dict, set]:
    """What the bulk answers to CONTEXTS (three times over) counted: exposure counters,
    evaluations by flag and reason, and first exposures."""
    from django.test import Client

    from evaluation import events, exposures
    from flags.models import ExposureCount, UnitExposure
    from flagsite import metrics

    exposures.drain()  # what earlier requests counted, out of the way
    events.drain()
    ExposureCount.objects.all().delete()
    UnitExposure.objects.all().delete()
    events._seen.clear()
    metrics.take_evaluations()
    client, key = Client(), api_key(environment, "server")
    for _ in range(3):
        for context in CONTEXTS:
            assert _post(client, BULK, context, key).status_code == 200
    evaluated = metrics.take_evaluations()
    exposures.drain()  # through Redis when there is one, as the scheduler does
    events.drain()
    counts = {
        (row.flag_key, row.variant, row.reason): row.count for row in ExposureCount.objects.all()
    }
    firsts = set(UnitExposure.objects.values_list("flag_key", "variant", "unit"))
    return counts, evaluated, firsts


def _no_flushes(monkeypatch) -> None:
    """The process's metrics flusher must not take the evaluations the test counts."""
    from flagsite import metrics

    monkeypatch.setattr(metrics, "flush_pending", lambda: None)


def test_a_bulk_answer_counts_every_flag_as_answering_flag_by_flag_did(environment, monkeypatch):
    _no_flushes(monkeypatch)
    fast = _counted(environment)
    monkeypatch.setattr(Snapshot, "evaluate_dependent", lambda self, context: None)
    slow = _counted(environment)
    counts, evaluated, firsts = fast
    assert (counts, evaluated, firsts) == slow
    # Every flag counted once a request, fixed or not: 3 rounds of the contexts.
    assert sum(counts.values()) == 3 * len(CONTEXTS) * len(_snapshot(environment).flag_keys)
    assert counts[("c-static", "on", "DEFAULT")] == counts[("b-off", "off", "DISABLED")] == 21
    assert sum(evaluated.values()) == sum(counts.values())
    assert {flag for flag, _, _ in firsts} == {"e-split", "j-staff-split"}


# --- client keys: the flags made available to client-side keys, planned the same way --------

CLIENT_SIDE = ("a-rule", "c-static", "d-theme", "e-split", "h-target", "k-off", "l-static")
# Three of the five flags that depend on the context are evaluated together, the others
# left out; one of five, on its own.
CLIENT_SIDES = {"most": CLIENT_SIDE, "few": ("a-rule", "c-static", "k-off")}


@pytest.fixture(params=sorted(CLIENT_SIDES))
def client_side(request):
    return CLIENT_SIDES[request.param]


@pytest.fixture
def client_environment(client_side):
    document = json.loads(json.dumps(MIXED))
    for key in client_side:
        document["flags"][key]["clientSide"] = True
    loaded = load_document(document)
    assert not loaded.refused
    return loaded.environment


def _without_plans(monkeypatch) -> None:
    """Every flag's item looked up for the request, as before answers were planned."""
    from evaluation import answers

    monkeypatch.setattr(answers, "_bulk_plan", lambda credential, snapshot: None)


def test_a_client_key_bulk_answer_is_byte_identical_to_the_unplanned_answer(
    client, client_environment, client_side, monkeypatch
):
    key = api_key(client_environment, "client")
    fast = [_post(client, BULK, context, key) for context in CONTEXTS]
    _without_plans(monkeypatch)
    slow = [_post(client, BULK, context, key) for context in CONTEXTS]
    for context, fast_answer, slow_answer in zip(CONTEXTS, fast, slow, strict=True):
        assert fast_answer.status_code == 200
        assert fast_answer.content == slow_answer.content, context
        assert fast_answer["ETag"] == slow_answer["ETag"]
        shown = [item["key"] for item in fast_answer.json()["flags"]]
        assert shown == list(client_side)  # only what client keys may see, in document order
        assert all("ruleId" not in item["metadata"] for item in fast_answer.json()["flags"])


@pytest.mark.parametrize("client_side", [CLIENT_SIDE])
def test_a_client_key_bulk_answer_is_planned_apart_from_a_server_key_one(
    client, client_environment
):
    from evaluation import answers

    client_key = api_key(client_environment, "client")
    server_key = api_key(client_environment, "server")
    context = {"targetingKey": "u-7", "country": "US"}
    as_client = _post(client, BULK, context, client_key).json()["flags"]
    as_server = _post(client, BULK, context, server_key).json()["flags"]
    assert len(as_server) == len(MIXED["flags"]) and len(as_client) == len(CLIENT_SIDE)
    plans = {server: plan for (_, server), (_, plan) in answers._bulk_plans.items()}
    assert plans[False].dependent == ("a-rule", "e-split", "h-target")
    assert plans[True].dependent == ("a-rule", "e-split", "f-staff", "h-target", "j-staff-split")
    # A server key's rule ids stay out of a client key's answer, fixed items included.
    assert "ruleId" in as_server[0]["metadata"]
    assert "ruleId" not in as_client[0]["metadata"]


def test_a_client_key_bulk_answer_counts_as_the_unplanned_answer(
    client_environment, client_side, monkeypatch
):
    from django.test import Client

    from evaluation import events, exposures
    from flags.models import ExposureCount, UnitExposure
    from flagsite import metrics

    key = api_key(client_environment, "client")
    _no_flushes(monkeypatch)

    def counted() -> tuple[dict, dict, set]:
        exposures.drain()
        events.drain()
        ExposureCount.objects.all().delete()
        UnitExposure.objects.all().delete()
        events._seen.clear()
        metrics.take_evaluations()
        browser = Client()
        for _ in range(3):
            for context in CONTEXTS:
                assert _post(browser, BULK, context, key).status_code == 200
        evaluated = metrics.take_evaluations()
        exposures.drain()
        events.drain()
        counts = {
            (row.flag_key, row.variant, row.reason): row.count
            for row in ExposureCount.objects.all()
        }
        return counts, evaluated, set(UnitExposure.objects.values_list("flag_key", "unit"))

    fast = counted()
    _without_plans(monkeypatch)
    assert fast == counted()
    counts, evaluated, firsts = fast
    assert sum(counts.values()) == 3 * len(CONTEXTS) * len(client_side)
    assert sum(evaluated.values()) == sum(counts.values())
    assert {flag for flag, _ in firsts} == ({"e-split"} & set(client_side))
