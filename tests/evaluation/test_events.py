"""Events and first unit exposures: recorded from the evaluation doors and `POST
/api/v1/sdk/events`, batched, and upserted per unit (through Redis when configured)."""

import json
import socket
import time
from datetime import UTC, datetime, timedelta

import pytest
import redis as redis_client
from django.core.management import call_command
from django.db import connection
from django.test import override_settings

from evaluation import events, keys, secure_mode
from flags import services
from flags.models import UnitEventDay, UnitExposure
from tests import factories
from tests.evaluation.document_loader import api_key

pytestmark = pytest.mark.django_db

SYSTEM = factories.SYSTEM
EVENTS = "/api/v1/sdk/events"
ROLLOUT = {"variants": [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}]}


@pytest.fixture(autouse=True)
def _no_leftovers():
    events.drain()
    events._seen.clear()
    secure_mode.clear_local()
    yield
    events._units.take()
    events._events.take()
    events._seen.clear()
    events._full = frozenset()


@pytest.fixture
def environment():
    project = factories.project()
    checkout = factories.flag(project, "checkout")
    factories.configure(checkout, "production", enabled=True, defaultServe={"rollout": ROLLOUT})
    fixed = factories.flag(project, "banner")
    factories.configure(fixed, "production", enabled=True, defaultServe={"variant": "on"})
    return factories.environment(project, "production")


@pytest.fixture
def server_key(environment):
    return api_key(environment, "server")


@pytest.fixture
def client_key(environment):
    return api_key(environment, "client")


def post(client, path, key, body):
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, data, content_type="application/json", HTTP_X_API_KEY=key)


def evaluate(client, key, context, flag="checkout"):
    response = post(client, f"/ofrep/v1/evaluate/flags/{flag}", key, {"context": context})
    assert response.status_code == 200, response.content
    return response.json()


def units(environment) -> dict[tuple[str, str], str]:
    rows = UnitExposure.objects.filter(environment=environment)
    return {(row.flag_key, row.unit): row.variant for row in rows}


def dropped(why: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("flags_events_dropped_total", {"why": why}) or 0.0


# --- First unit exposures from the evaluation doors ---------------------------------------


def test_each_units_first_exposure_to_a_split_is_recorded_with_the_variant_it_saw(
    client, environment, server_key
):
    served = {}
    for number in range(20):
        for _ in range(3):  # evaluated again and again: still one row per unit
            served[f"user-{number}"] = evaluate(
                client, server_key, {"targetingKey": f"user-{number}"}
            )["variant"]
    native = post(client, "/api/v1/evaluate", server_key, {"context": {"targetingKey": "native"}})
    served["native"] = native.json()["flags"]["checkout"]["variant"]
    assert not UnitExposure.objects.exists()  # nothing is written per evaluation

    call_command("flush_exposures")

    assert units(environment) == {("checkout", unit): variant for unit, variant in served.items()}
    assert set(served.values()) == {"on", "off"}
    first = UnitExposure.objects.get(unit="user-0").first_seen
    assert datetime.now(UTC) - timedelta(minutes=5) < first <= datetime.now(UTC)
    events._seen.clear()  # another process: the row keeps its first time
    evaluate(client, server_key, {"targetingKey": "user-0"})
    events.drain()
    assert UnitExposure.objects.get(unit="user-0").first_seen == first
    assert UnitExposure.objects.count() == len(served)


def test_no_unit_is_recorded_without_a_targeting_key_or_a_split(client, environment, server_key):
    evaluate(client, server_key, {"targetingKey": "u1"}, flag="banner")  # a fixed variant
    evaluate(client, server_key, {"country": "FR"}, flag="banner")
    response = post(client, "/ofrep/v1/evaluate/flags/checkout", server_key, {"context": {}})
    assert response.json()["errorCode"] == "TARGETING_KEY_MISSING"

    events.drain()

    assert units(environment) == {}


@pytest.mark.parametrize("unit", ["x" * 257, "a\x00b", "a\tb", "line\nbreak"])
def test_a_targeting_key_the_store_cannot_hold_is_dropped_and_counted(
    client, environment, server_key, unit
):
    rollout = {"rollout": {**ROLLOUT, "bucketBy": "country"}}  # splits whatever the key
    factories.configure(
        environment.project.flags.get(key="checkout"), "production", defaultServe=rollout
    )
    before = dropped("bad_targeting_key")

    result = evaluate(client, server_key, {"targetingKey": unit, "country": "FR"})

    assert result["reason"] == "SPLIT"
    events.drain()
    assert units(environment) == {}
    assert dropped("bad_targeting_key") - before == 1


def test_client_key_evaluations_record_units_of_client_side_flags_only(
    client, environment, django_capture_on_commit_callbacks
):
    checkout = environment.project.flags.get(key="checkout")
    key = api_key(environment, "client")
    response = post(
        client, "/ofrep/v1/evaluate/flags/checkout", key, {"context": {"targetingKey": "u1"}}
    )
    assert response.status_code == 404  # hidden from client keys: not exposed either
    with django_capture_on_commit_callbacks(execute=True):
        services.flag_update(flag=checkout, data={"client_side": True}, **SYSTEM)

    evaluate(client, key, {"targetingKey": "u2"})
    events.drain()

    assert list(units(environment)) == [("checkout", "u2")]


# --- Events ---------------------------------------------------------------------------------


def test_events_are_summed_per_unit_event_and_day(client, environment, server_key):
    now = time.time()
    yesterday = datetime.fromtimestamp(now - 86400, UTC).isoformat()
    body = {
        "events": [
            {"event": "purchase", "targetingKey": "u1", "value": 30, "timestamp": now - 60},
            {"event": "purchase", "targetingKey": "u1", "value": 12.5},
            {"event": "purchase", "targetingKey": "u1"},  # counted, no value
            {"event": "purchase", "targetingKey": "u2", "value": -4, "timestamp": yesterday},
            {"event": "signup", "targetingKey": "u1"},
        ]
    }

    response = post(client, EVENTS, server_key, body)

    assert response.status_code == 202, response.content
    assert response.json() == {"accepted": 5, "dropped": 0}
    assert not UnitEventDay.objects.exists()
    call_command("run_scheduler", "--once")
    rows = {(r.event, r.unit): r for r in UnitEventDay.objects.filter(environment=environment)}
    assert set(rows) == {("purchase", "u1"), ("purchase", "u2"), ("signup", "u1")}
    purchase = rows[("purchase", "u1")]
    assert (purchase.count, purchase.valued) == (3, 2)
    assert (purchase.value_sum, purchase.value_squares) == (42.5, 30**2 + 12.5**2)
    assert purchase.first_at.timestamp() == pytest.approx(now - 60, abs=0.01)
    assert purchase.last_at >= purchase.first_at
    assert purchase.day == datetime.fromtimestamp(now, UTC).date()
    assert rows[("purchase", "u2")].day == datetime.fromtimestamp(now - 86400, UTC).date()
    assert (rows[("signup", "u1")].count, rows[("signup", "u1")].value_sum) == (1, 0.0)

    post(
        client,
        EVENTS,
        server_key,
        {"events": [{"event": "purchase", "targetingKey": "u1", "value": 1}]},
    )
    events.drain()
    purchase.refresh_from_db()
    assert (purchase.count, purchase.valued, purchase.value_sum) == (4, 3, 43.5)


def test_outcomes_after_exposure_join_to_the_variant_in_one_query(client, environment, server_key):
    """What the data model is for: conversion per variant, within a day of exposure."""
    served = {}
    for number in range(40):
        unit = f"user-{number}"
        served[unit] = evaluate(client, server_key, {"targetingKey": unit})["variant"]
    buyers = [unit for unit in served if int(unit.split("-")[1]) % 4 == 0]
    batch = [{"event": "purchase", "targetingKey": unit, "value": 10} for unit in buyers]
    batch.append({"event": "purchase", "targetingKey": "never-exposed", "value": 99})
    assert post(client, EVENTS, server_key, {"events": batch}).status_code == 202
    events.drain()

    exposure = UnitExposure._meta.db_table
    day = UnitEventDay._meta.db_table
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT x.variant, COUNT(DISTINCT x.unit), COUNT(DISTINCT d.unit), "
            f"COALESCE(SUM(d.value_sum), 0) FROM {exposure} x LEFT JOIN {day} d "
            "ON d.environment_id = x.environment_id AND d.event = %s AND d.unit = x.unit "
            "AND d.last_at >= x.first_seen "
            "WHERE x.environment_id = %s AND x.flag_key = %s GROUP BY x.variant ORDER BY 1",
            ["purchase", environment.pk, "checkout"],
        )
        rows = cursor.fetchall()

    expected = {}
    for variant in ("off", "on"):
        exposed = [unit for unit, seen in served.items() if seen == variant]
        bought = [unit for unit in exposed if unit in buyers]
        expected[variant] = (len(exposed), len(bought), 10.0 * len(bought))
    assert {row[0]: (row[1], row[2], float(row[3])) for row in rows} == expected


# --- Who may send what ----------------------------------------------------------------------


def test_client_keys_may_send_events_but_not_first_exposures(client, environment, client_key):
    one = {"event": "click", "targetingKey": "u1"}
    assert post(client, EVENTS, client_key, {"events": [one]}).status_code == 202
    exposure = {"flag": "checkout", "variant": "on", "targetingKey": "u1"}
    refused = post(client, EVENTS, client_key, {"firstExposures": [exposure]})
    assert refused.status_code == 403
    assert "firstExposures" in refused.json()["detail"]
    too_many = post(client, EVENTS, client_key, {"events": [one] * 101})
    assert too_many.status_code == 400
    assert "at most 100" in too_many.json()["detail"]
    events.drain()
    assert UnitEventDay.objects.get().count == 1
    assert not UnitExposure.objects.exists()


def test_in_secure_mode_a_client_keys_events_need_the_targeting_key_hash(
    client, environment, client_key
):
    _, secret = services.environment_secure_mode_secret_rotate(environment=environment, **SYSTEM)
    services.environment_update(environment=environment, data={"secure_mode": True}, **SYSTEM)
    digest = secure_mode.compute_hash(secret, "u1")

    missing = post(client, EVENTS, client_key, {"events": [{"event": "buy", "targetingKey": "u1"}]})
    forged = {"event": "buy", "targetingKey": "u2", "targetingKeyHash": digest}
    other = post(client, EVENTS, client_key, {"events": [forged]})
    good = {"event": "buy", "targetingKey": "u1", "targetingKeyHash": digest}
    vouched = post(client, EVENTS, client_key, {"events": [good]})

    assert missing.status_code == 403 and "events[0].targetingKeyHash" in missing.json()["detail"]
    assert other.status_code == 403
    assert vouched.status_code == 202
    events.drain()
    assert [(row.unit, row.count) for row in UnitEventDay.objects.all()] == [("u1", 1)]


def test_sdk_first_exposures_naming_no_flag_or_variant_are_dropped(client, environment, server_key):
    now = time.time()
    body = {
        "firstExposures": [
            {"flag": "checkout", "variant": "on", "targetingKey": "u1", "timestamp": now - 30},
            {"flag": "checkout", "variant": "off", "targetingKey": "u2"},
            {"flag": "nope", "variant": "on", "targetingKey": "u3"},
            {"flag": "checkout", "variant": "maybe", "targetingKey": "u4"},
        ]
    }

    response = post(client, EVENTS, server_key, body)

    assert response.status_code == 202, response.content
    assert response.json() == {
        "accepted": 2,
        "dropped": 2,
        "droppedBy": {"unknown_flag": 1, "unknown_variant": 1},
    }
    events.drain()
    assert units(environment) == {("checkout", "u1"): "on", ("checkout", "u2"): "off"}
    first = UnitExposure.objects.get(unit="u1").first_seen.timestamp()
    assert first == pytest.approx(now - 30, abs=0.01)


# --- Hostile input ------------------------------------------------------------------------

GOOD = {"event": "purchase", "targetingKey": "u1", "value": 1}
NOW = time.time()


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ([GOOD], "the body is"),
        ({}, "the body is"),
        ({"events": [GOOD], "extra": 1}, "the body is"),
        ({"events": {"event": "x"}}, "events:"),
        ({"events": [GOOD] * 1001}, "events: a list of at most 1000"),
        ({"events": [GOOD, "purchase"]}, "events[1]: must be an object"),
        ({"events": [{**GOOD, "user": "u1"}]}, "events[0].user: unknown field"),
        ({"events": [{**GOOD, "event": 7}]}, "events[0].event"),
        ({"events": [{**GOOD, "event": ""}]}, "events[0].event"),
        ({"events": [{**GOOD, "event": "a\x00b"}]}, "events[0].event"),
        ({"events": [{**GOOD, "event": "x" * 101}]}, "events[0].event"),
        ({"events": [{"event": "purchase"}]}, "events[0].targetingKey"),
        ({"events": [{**GOOD, "targetingKey": "x" * 257}]}, "events[0].targetingKey"),
        ({"events": [{**GOOD, "targetingKey": "nul\x00"}]}, "events[0].targetingKey"),
        ({"events": [{**GOOD, "targetingKey": 12}]}, "events[0].targetingKey"),
        ({"events": [{**GOOD, "value": "12"}]}, "events[0].value"),
        ({"events": [{**GOOD, "value": True}]}, "events[0].value"),
        ({"events": [{**GOOD, "value": 1e300}]}, "events[0].value"),
        ({"events": [{**GOOD, "value": 10**400}]}, "events[0].value"),
        ({"events": [{**GOOD, "timestamp": NOW - 8 * 86400}]}, "events[0].timestamp"),
        ({"events": [{**GOOD, "timestamp": NOW + 7200}]}, "events[0].timestamp"),
        ({"events": [{**GOOD, "timestamp": "2026-01-01T00:00:00"}]}, "events[0].timestamp"),
        ({"events": [{**GOOD, "timestamp": "yesterday"}]}, "events[0].timestamp"),
        ({"firstExposures": [{"flag": "checkout", "targetingKey": "u"}]}, "firstExposures[0]"),
        ({"firstExposures": [{**GOOD}]}, "firstExposures[0].event: unknown field"),
    ],
)
def test_malformed_events_are_a_400_naming_the_field_and_keep_nothing(
    client, environment, server_key, body, named
):
    response = post(client, EVENTS, server_key, {"events": [GOOD]} if body is None else body)

    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_request"
    assert named in response.json()["detail"]
    events.drain()
    assert not UnitEventDay.objects.exists()


@pytest.mark.parametrize(
    "raw",
    [
        "[" * 10_000 + "]" * 10_000,
        '{"events": ' + "[" * 10_000 + "]" * 10_000 + "}",
        '{"events": [{"event": "a", "targetingKey": "u", "value": NaN}]}',
        '{"events": [{"event": "a", "targetingKey": "u", "value": Infinity}]}',
        '{"events": [{"event": "a", "targetingKey": "\\ud800"}]}',
        '{"events": [{"event": "\\udfff", "targetingKey": "u"}]}',
        '{"events": [',
    ],
)
def test_deep_nan_surrogate_or_broken_bodies_are_a_400(client, environment, server_key, raw):
    response = post(client, EVENTS, server_key, raw)
    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_request"


def test_a_huge_body_is_a_413_and_other_methods_or_no_key_are_refused(client, server_key):
    huge = json.dumps({"events": [{**GOOD, "event": "x" * 100}] * 20_000})
    assert post(client, EVENTS, server_key, huge).status_code == 413
    assert client.get(EVENTS, HTTP_X_API_KEY=server_key).status_code == 405
    no_key = client.post(EVENTS, json.dumps({"events": [GOOD]}), content_type="application/json")
    assert no_key.status_code == 401


# --- Stores -------------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_with_redis_away_a_flush_writes_to_the_database_and_loses_nothing(
    client, environment, server_key, monkeypatch
):
    away = redis_client.Redis(port=_closed_port(), socket_connect_timeout=0.2)
    monkeypatch.setattr(events, "redis", lambda: away)
    evaluate(client, server_key, {"targetingKey": "u1"})
    batch = [{"event": "purchase", "targetingKey": "u1", "value": 2}] * 5
    post(client, EVENTS, server_key, {"events": batch})

    with override_settings(
        REDIS_URL=f"redis://127.0.0.1:{away.connection_pool.connection_kwargs['port']}/0"
    ):
        assert events.flush() == 2

    assert list(units(environment)) == [("checkout", "u1")]
    assert UnitEventDay.objects.get().count == 5


@pytest.mark.skipif(not events.settings.REDIS_URL, reason="needs REDIS_URL")
def test_through_redis_items_wait_there_until_a_drain_and_are_drained_once(
    client, environment, server_key
):
    evaluate(client, server_key, {"targetingKey": "u1"})
    post(
        client,
        EVENTS,
        server_key,
        {"events": [{"event": "buy", "targetingKey": "u1", "value": 3}] * 4},
    )

    assert events.flush() == 2
    store = events.redis()
    assert store.scard(events.cache.make_key(keys.UNITS_PENDING)) == 1
    assert store.scard(events.cache.make_key(keys.EVENTS_PENDING)) == 1
    assert not UnitExposure.objects.exists() and not UnitEventDay.objects.exists()

    events.drain()
    events.drain()  # a second drain adds nothing

    assert list(units(environment)) == [("checkout", "u1")]
    row = UnitEventDay.objects.get()
    assert (row.count, row.valued, row.value_sum, row.value_squares) == (4, 4, 12.0, 36.0)
    assert store.scard(events.cache.make_key(keys.EVENTS_PENDING)) == 0


@pytest.mark.skipif(not events.settings.REDIS_URL, reason="needs REDIS_URL")
@pytest.mark.parametrize("chunk", [1, 2, events.DRAIN_CHUNK])
def test_a_malformed_entry_in_redis_loses_only_itself(environment, monkeypatch, chunk):
    monkeypatch.setattr(events, "DRAIN_CHUNK", chunk)
    day = int(time.time()) // 86400 * 86400
    store = events.redis()
    units_key = events.cache.make_key(keys.units(environment.pk, day))
    store.zadd(units_key, {"checkout\ton\tu1": time.time(), "no-tabs-here": 1.0})
    store.sadd(events.cache.make_key(keys.UNITS_PENDING), units_key)
    events_key = events.cache.make_key(keys.events(environment.pk, day))
    for name, value in zip("cnsqfl", (2, 1, 5.0, 25.0, time.time(), time.time()), strict=True):
        store.hset(events_key, f"buy\tu1\t{name}", value)
    store.hset(events_key, "buy\tu2\tc", 3)  # incomplete: no sums or times
    store.hset(events_key, "buy\tu3\tc", "many")
    store.sadd(events.cache.make_key(keys.EVENTS_PENDING), events_key)
    before = dropped("malformed")

    call_command("run_scheduler", "--once")

    assert list(units(environment)) == [("checkout", "u1")]
    assert [(row.unit, row.count, row.value_sum) for row in UnitEventDay.objects.all()] == [
        ("u1", 2, 5.0)
    ]
    assert dropped("malformed") - before == 3


@pytest.fixture
def database_away():
    """Points this process's connection at a port nothing listens on, for as long as the
    test wants: every query then fails as against a database that is down."""
    from contextlib import contextmanager

    settings_dict = connection.settings_dict
    saved = settings_dict["HOST"], settings_dict["PORT"]

    @contextmanager
    def away():
        connection.close()
        settings_dict["HOST"], settings_dict["PORT"] = "127.0.0.1", str(_closed_port())
        try:
            yield
        finally:
            connection.close()
            settings_dict["HOST"], settings_dict["PORT"] = saved

    return away


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "postgresql", reason="closes the test's connection")
def test_with_the_database_away_nothing_is_lost_and_nothing_counted_twice(
    environment, server_key, database_away
):
    from django.db import OperationalError
    from django.test import Client

    client = Client()
    for n in range(5):
        evaluate(client, server_key, {"targetingKey": f"user-{n}"})
    batch = [{"event": "purchase", "targetingKey": f"user-{n}", "value": n} for n in range(5)]
    post(client, EVENTS, server_key, {"events": batch * 2})

    with database_away():
        with pytest.raises(OperationalError):
            events.drain()  # with Redis: flushed there, then the drain fails and puts back
        with pytest.raises(OperationalError):
            events.drain()  # again: still nothing lost

    events.drain()
    events.drain()

    assert len(units(environment)) == 5
    rows = {row.unit: (row.count, row.value_sum) for row in UnitEventDay.objects.all()}
    assert rows == {f"user-{n}": (2, 2.0 * n) for n in range(5)}


def _backlog(environment, size: int) -> None:
    """`size` units' first exposures and events (of two names) waiting in Redis."""
    now = time.time()
    for n in range(size):
        events.expose_at(environment.pk, "checkout", "on", f"u{n}", now - n)
        events.track(environment.pk, "buy", f"u{n}", float(n), now)
        events.track(environment.pk, "view", f"u{n}", None, now)
    assert events.flush() == 3 * size


def _waiting(environment) -> tuple[int, int]:
    """First exposures and event fields left in Redis for the environment."""
    store, day = events.redis(), int(time.time()) // 86400 * 86400
    return (
        store.zcard(events.cache.make_key(keys.units(environment.pk, day))),
        store.hlen(events.cache.make_key(keys.events(environment.pk, day))),
    )


@pytest.mark.skipif(not events.settings.REDIS_URL, reason="needs REDIS_URL")
def test_a_backlog_larger_than_a_chunk_is_drained_whole_and_once(environment, monkeypatch):
    monkeypatch.setattr(events, "DRAIN_CHUNK", 7)
    _backlog(environment, 100)

    assert events.drain() == 300
    assert events.drain() == 0

    assert _waiting(environment) == (0, 0)
    assert len(units(environment)) == 100
    rows = {(r.event, r.unit): (r.count, r.valued, r.value_sum) for r in UnitEventDay.objects.all()}
    assert rows == {
        **{("buy", f"u{n}"): (1, 1, float(n)) for n in range(100)},
        **{("view", f"u{n}"): (1, 0, 0.0) for n in range(100)},
    }
    store = events.redis()
    assert store.scard(events.cache.make_key(keys.UNITS_PENDING)) == 0
    assert store.scard(events.cache.make_key(keys.EVENTS_PENDING)) == 0


@pytest.mark.skipif(not events.settings.REDIS_URL, reason="needs REDIS_URL")
def test_a_database_failure_mid_drain_keeps_the_chunks_written_and_requeues_the_rest(
    environment, monkeypatch
):
    from django.db import OperationalError

    monkeypatch.setattr(events, "DRAIN_CHUNK", 10)
    _backlog(environment, 50)
    write = events._to_database
    calls = []

    def fails_at_the_third_chunk(units, tallies):
        calls.append(len(units) + len(tallies))
        if len(calls) == 3:
            raise OperationalError("the database went away")  # as a lost connection raises
        write(units, tallies)

    monkeypatch.setattr(events, "_to_database", fails_at_the_third_chunk)
    with pytest.raises(OperationalError):
        events.drain()

    assert calls == [10, 10, 10]
    assert UnitExposure.objects.count() == 20  # two chunks stored before the failure
    assert _waiting(environment) == (30, 100 * 6)  # the third went back to Redis

    monkeypatch.setattr(events, "_to_database", write)
    assert events.drain() == 130
    assert len(units(environment)) == 50
    assert UnitEventDay.objects.count() == 100
    assert sorted(r.count for r in UnitEventDay.objects.all()) == [1] * 100  # none twice


@pytest.mark.skipif(not events.settings.REDIS_URL, reason="needs REDIS_URL")
def test_a_drain_ends_while_items_arrive_faster_than_it_writes(environment, monkeypatch):
    monkeypatch.setattr(events, "DRAIN_CHUNK", 10)
    _backlog(environment, 30)
    write = events._to_database
    arriving = iter(range(1000, 100_000))

    def while_others_flush(units, tallies):
        write(units, tallies)
        now = time.time()
        for _ in range(20):  # another process flushes more than each chunk drained
            events.track(environment.pk, "buy", f"late-{next(arriving)}", 1.0, now)
        events.flush()

    monkeypatch.setattr(events, "_to_database", while_others_flush)
    drained = events.drain()

    assert 90 <= drained < 90 + 20 * 20  # what waited, and no more than a chunk per key more
    monkeypatch.setattr(events, "_to_database", write)
    assert _waiting(environment)[1] > 0  # the late ones wait for the next drain


@pytest.mark.skipif(not events.settings.REDIS_URL, reason="needs REDIS_URL")
@override_settings(EVENTS_MAX_BACKLOG=100)
def test_past_its_bound_an_environments_backlog_refuses_events_with_503_and_keeps_all_it_took(
    client, environment, server_key
):
    other = factories.environment(factories.project(), "production")
    other_key = api_key(other, "server")
    answers: list[int] = []
    for n in range(40):  # requests of 10 new units' events; the flusher passes every 3rd
        batch = [{"event": "buy", "targetingKey": f"u{n}-{i}", "value": 1} for i in range(10)]
        response = post(client, EVENTS, server_key, {"events": batch})
        answers.append(response.status_code)
        if response.status_code == 503:
            assert response.json()["error"] == "backlog_full"
            assert int(response["Retry-After"]) >= 1
        if n % 3 == 2:
            events.flush()
    events.flush()
    store = events.redis()

    accepted = answers.count(202) * 10
    assert sorted(set(answers)) == [202, 503]
    assert accepted == 120  # the flush that reached 100 had taken 30 since the one before
    assert answers.count(503) == 28
    waiting = events.backlog(store, [environment.pk])[environment.pk]
    assert waiting == accepted <= 100 + 30  # the bound, and at most one flush's worth past it
    # Evaluations still answer; their first exposures are dropped and counted meanwhile.
    before = dropped("backlog_full")
    for n in range(5):
        evaluate(client, server_key, {"targetingKey": f"evaluated-{n}"})
    events.flush()
    assert dropped("backlog_full") - before == 5
    assert events.backlog(store, [environment.pk])[environment.pk] == accepted
    # Another environment's events are taken as ever.
    other_batch = [{"event": "buy", "targetingKey": "x"}]
    assert post(client, EVENTS, other_key, {"events": other_batch}).status_code == 202

    events.drain()
    events.flush()  # the next pass measures the backlog again: drained

    assert UnitEventDay.objects.filter(environment=environment).count() == accepted
    batch = [{"event": "buy", "targetingKey": "after"}]
    assert post(client, EVENTS, server_key, {"events": batch}).status_code == 202
    evaluate(client, server_key, {"targetingKey": "evaluated-0"})
    events.drain()
    assert ("checkout", "evaluated-0") in units(environment)


@pytest.mark.skipif(not events.settings.REDIS_URL, reason="needs REDIS_URL")
def test_a_flush_that_redis_fails_part_way_writes_the_rest_to_the_database_once(
    environment, monkeypatch
):
    monkeypatch.setattr(events, "REDIS_CHUNK", 10)
    now = time.time()
    for n in range(35):
        events.track(environment.pk, "buy", f"u{n}", 2.0, now)
    write = events._chunk_to_redis
    calls = []

    def times_out_at_the_third_chunk(store, units, tallies):
        calls.append(len(tallies))
        if len(calls) == 3:
            raise redis_client.TimeoutError("Timeout reading from socket")
        write(store, units, tallies)

    monkeypatch.setattr(events, "_chunk_to_redis", times_out_at_the_third_chunk)
    assert events.flush() == 35

    assert calls == [10, 10, 10]
    assert _waiting(environment) == (0, 20 * 6)  # the first two chunks, in Redis
    assert UnitEventDay.objects.count() == 15  # the failed chunk and the one after it
    events.drain()
    rows = {row.unit: (row.count, row.value_sum) for row in UnitEventDay.objects.all()}
    assert rows == {f"u{n}": (1, 2.0) for n in range(35)}  # each once


def test_a_process_holding_too_many_unflushed_entries_refuses_events_until_it_flushes(
    client, environment, server_key, monkeypatch
):
    monkeypatch.setattr(events, "MAX_HELD", 50)
    answers = []
    for n in range(10):  # no flush meanwhile: its store lags
        batch = [{"event": "buy", "targetingKey": f"u{n}-{i}"} for i in range(10)]
        answers.append(post(client, EVENTS, server_key, {"events": batch}).status_code)

    assert answers == [202] * 5 + [503] * 5
    assert events.flush() == 50
    batch = [{"event": "buy", "targetingKey": "after"}]
    assert post(client, EVENTS, server_key, {"events": batch}).status_code == 202
    events.drain()
    assert UnitEventDay.objects.filter(environment=environment).count() == 51
