"""Events (`FlagClient.track`, OpenFeature's `client.track`) and the first unit exposures of
in-process evaluations: batched to `POST /api/v1/sdk/events`, nothing lost to a server that
fails for a while, bounded, never blocking or raising in the caller."""

from __future__ import annotations

import json
import math
import time

import pytest
from flagclient import FlagClient
from flagclient.provider import FlagProvider
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.track import TrackingEventDetails

from tests.sdk.caller import BLOCKED, wait_for
from tests.sdk.misbehaving import EVENTS, accept_events, hang, status

ROLLOUT = {
    "type": "boolean",
    "enabled": True,
    "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}],
    "offVariant": "off",
    "defaultServe": {
        "rollout": {"variants": [{"variant": "on", "weight": 1}, {"variant": "off", "weight": 1}]}
    },
}


@pytest.fixture
def experiment(server):
    server.doc["flags"]["experiment"] = ROLLOUT
    return server


# --- Against a misbehaving server ---------------------------------------------------------


@pytest.mark.parametrize("refusal", [status(503), status(500), hang], ids=["503", "500", "hang"])
def test_events_survive_a_server_that_fails_for_a_while_and_arrive_once(
    server, make_client, refusal
):
    server.events = refusal
    client = make_client(exposure_interval=0.1, timeout=0.3)
    wait_for(lambda: client.ready, 5)
    for n in range(1500):
        assert client.track("purchase", {"targetingKey": f"user-{n % 10}"}, value=n) is True
    wait_for(lambda: server.hits[EVENTS] >= 3, 5)  # three failed posts at least
    for n in range(1500, 2500):
        client.track("purchase", {"targetingKey": f"user-{n % 10}"}, value=n)
    server.events = accept_events
    wait_for(lambda: client.stats.get("tracked_posted") == 2500, 10)
    client.close()
    assert sorted(item["value"] for item in server.tracked) == [float(n) for n in range(2500)]
    assert client.stats["tracked_posted"] == 2500
    assert all(len(json.dumps(item)) < 200 for item in server.tracked)


def test_track_never_waits_for_a_server_that_hangs(server, make_client):
    server.events = hang
    client = make_client(exposure_interval=0.05, timeout=1.0)
    wait_for(lambda: client.ready, 5)
    slowest, calls = 0.0, 0
    deadline = time.monotonic() + 1.5
    while time.monotonic() < deadline:
        started = time.perf_counter()
        assert client.track("view", {"targetingKey": f"u{calls}"}, value=1) is True
        slowest = max(slowest, time.perf_counter() - started)
        calls += 1
        time.sleep(0.0005)
    assert server.hits[EVENTS] >= 1  # a post was hanging meanwhile
    assert slowest < BLOCKED, f"track took {slowest:.3f} s"


def test_pending_events_are_bounded_while_the_server_is_away(server, make_client):
    from flagclient import exposures

    server.events = status(503)
    client = make_client(exposure_interval=60.0, timeout=0.3)
    wait_for(lambda: client.ready, 5)
    extra = 250
    for n in range(exposures.MAX_PENDING_EVENTS + extra):
        client.track("view", {"targetingKey": "u1"}, value=n)
    assert client.stats["tracked_dropped"] == extra
    server.events = accept_events
    client.close()
    values = [item["value"] for item in server.tracked]
    assert values == [float(n) for n in range(extra, exposures.MAX_PENDING_EVENTS + extra)]


@pytest.mark.parametrize(
    ("event", "context", "value"),
    [
        ("", {"targetingKey": "u1"}, None),
        ("a\x00b", {"targetingKey": "u1"}, None),
        ("x" * 101, {"targetingKey": "u1"}, None),
        ("\ud800", {"targetingKey": "u1"}, None),
        (7, {"targetingKey": "u1"}, None),
        ("buy", None, None),
        ("buy", {}, None),
        ("buy", {"targetingKey": "x" * 257}, None),
        ("buy", {"targetingKey": "a\tb"}, None),
        ("buy", {"targetingKey": "\udfff"}, None),
        ("buy", {"targetingKey": 42}, None),
        ("buy", {"targetingKey": "u1"}, math.nan),
        ("buy", {"targetingKey": "u1"}, math.inf),
        ("buy", {"targetingKey": "u1"}, 1e13),
        ("buy", {"targetingKey": "u1"}, True),
        ("buy", {"targetingKey": "u1"}, "12"),
    ],
)
def test_an_event_the_server_would_refuse_is_dropped_and_counted_not_sent(
    server, make_client, event, context, value
):
    client = make_client(exposure_interval=0.1)
    wait_for(lambda: client.ready, 5)

    assert client.track(event, context, value) is False
    assert client.track("buy", {"targetingKey": "u1"}, 2.5) is True  # the next one goes

    wait_for(lambda: server.tracked, 5)
    client.close()
    assert server.tracked == [
        {
            "event": "buy",
            "targetingKey": "u1",
            "timestamp": server.tracked[0]["timestamp"],
            "value": 2.5,
        }
    ]
    assert client.stats["tracked_dropped"] == 1


def test_a_refused_key_stops_posting_events(server, make_client):
    server.events = status(401)
    client = make_client(exposure_interval=0.1)
    wait_for(lambda: client.ready, 5)
    client.track("buy", {"targetingKey": "u1"})
    wait_for(lambda: server.hits[EVENTS] == 1, 5)
    client.track("buy", {"targetingKey": "u2"})
    client.close()
    assert server.hits[EVENTS] == 1


def test_split_evaluations_report_each_units_first_exposure_once(experiment, make_client):
    client = make_client(report_exposures=True, exposure_interval=0.1)
    wait_for(lambda: client.ready, 5)
    served = {}
    for _ in range(3):
        for n in range(200):
            result = client.details("experiment", {"targetingKey": f"user-{n}"}, False)
            assert result.reason == "SPLIT"
            served[f"user-{n}"] = result.variant
    client.all({"targetingKey": "user-0"})
    client.value("new-checkout", {"targetingKey": "user-0", "country": "US"}, False)  # no split
    wait_for(lambda: len(experiment.first_exposures) >= 200, 5)
    client.close()
    reported = {item["targetingKey"]: item["variant"] for item in experiment.first_exposures}
    assert reported == served
    assert len(experiment.first_exposures) == 200
    assert {item["flag"] for item in experiment.first_exposures} == {"experiment"}
    assert set(served.values()) == {"on", "off"}


def test_without_report_exposures_no_unit_exposure_is_posted(experiment, make_client):
    client = make_client(exposure_interval=0.1)
    wait_for(lambda: client.ready, 5)
    client.details("experiment", {"targetingKey": "u1"}, False)
    client.track("buy", {"targetingKey": "u1"})
    wait_for(lambda: experiment.tracked, 5)
    client.close()
    assert experiment.first_exposures == []


def test_an_offline_client_tracks_nothing(tmp_path):
    client = FlagClient(offline=True)
    assert client.track("buy", {"targetingKey": "u1"}) is False
    client.close()


# --- Through a real server ----------------------------------------------------------------

SETUP = """
from flags import services
from flags.models import Environment, FlagConfig
environment = Environment.objects.get(pk={environment})
flag = services.flag_create(
    project=environment.project, key="experiment", actor=None, source="system"
)
config = FlagConfig.objects.get(flag=flag, environment=environment)
services.flag_config_update(
    config=config, data={{"enabled": True, "defaultServe": {serve!r}}}, actor=None,
    source="system",
)
"""

STORED = """
import json
from evaluation import events
from flags.models import UnitEventDay, UnitExposure
events.drain()
print(json.dumps({
    "units": {row.unit: row.variant for row in UnitExposure.objects.filter(flag_key="experiment")},
    "events": {
        f"{row.event} {row.unit}": [row.count, row.valued, row.value_sum]
        for row in UnitEventDay.objects.all()
    },
}))
"""


def stored(cluster) -> dict:
    return json.loads(cluster.manage("shell", "-c", STORED).strip().splitlines()[-1])


@pytest.fixture(scope="module")
def live(cluster):
    serve = ROLLOUT["defaultServe"]
    cluster.manage(
        "shell", "-c", SETUP.format(environment=cluster.seed["environment"], serve=serve)
    )
    return cluster


def test_openfeature_track_and_split_exposures_reach_the_server(live):
    provider = FlagProvider(
        url=live.url(0),
        server_key=live.seed["server_key"],
        report_exposures=True,
        exposure_interval=60.0,
    )
    api.set_provider_and_wait(provider, "track-test")
    try:
        client = api.get_client("track-test")
        # The flag was made by another process just before: the server may answer the first
        # fetch from the snapshot it held while it compiles the new one; the stream then
        # brings the new version, within the promised second.
        first = EvaluationContext("of-user-0")
        wait_for(
            lambda: client.get_boolean_details("experiment", False, first).reason != "ERROR", 1
        )
        served = {}
        for n in range(30):
            context = EvaluationContext(f"of-user-{n}")
            details = client.get_boolean_details("experiment", False, context)
            assert details.reason == "SPLIT", details
            served[f"of-user-{n}"] = details.variant
            client.track("purchase", context, TrackingEventDetails(value=n))
            client.track("purchase", context, TrackingEventDetails(value=1.5))
            client.track("visit", context)
    finally:
        api.clear_providers()  # shuts the provider down: its FlagClient posts what is queued

    def arrived() -> dict | None:
        found = stored(live)
        return found if len(found["events"]) >= 60 and len(found["units"]) >= 30 else None

    wait_for(arrived, 20)
    found = stored(live)
    assert {unit: v for unit, v in found["units"].items() if unit.startswith("of-")} == served
    for n in range(30):
        assert found["events"][f"purchase of-user-{n}"] == [2, 2, n + 1.5]
        assert found["events"][f"visit of-user-{n}"] == [1, 0, 0.0]
