"""Exposure counts match the evaluations made, through Redis or straight to the database."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.test import override_settings
from rest_framework.test import APIClient

from evaluation import exposures, keys
from flags import services
from flags.models import ExposureCount
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_leftovers():
    exposures._batch.take()
    yield
    exposures._batch.take()


@pytest.fixture
def setup():
    project = factories.project("shop")
    flag = factories.flag(project, "checkout")
    rollout = {"variants": [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}]}
    factories.configure(flag, "production", enabled=True, defaultServe={"rollout": rollout})
    factories.flag(project, "banner")
    environment = factories.environment(project, "production")
    _, secret = services.api_key_create(
        environment=environment, kind="server", name="sdk", actor=None, source="system"
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    return project, environment, client


def totals(environment) -> dict[tuple[str, str, str], int]:
    rows = (
        ExposureCount.objects.filter(environment=environment)
        .values("flag_key", "variant", "reason")
        .annotate(total=Sum("count"))
    )
    return {(r["flag_key"], r["variant"], r["reason"]): r["total"] for r in rows}


def evaluate(client, count: int) -> dict[str, int]:
    served = {}
    for number in range(count):
        body = {"context": {"targetingKey": f"user-{number}"}}
        response = client.post("/ofrep/v1/evaluate/flags/checkout", body, format="json")
        assert response.status_code == 200
        served[response.json()["variant"]] = served.get(response.json()["variant"], 0) + 1
    native = client.post("/api/v1/evaluate", {"context": {"targetingKey": "x"}}, format="json")
    variant = native.json()["flags"]["checkout"]["variant"]
    served[variant] = served.get(variant, 0) + 1
    return served


def test_counts_match_the_evaluations_made(setup):
    project, environment, client = setup
    served = evaluate(client, 40)
    assert not ExposureCount.objects.exists()  # nothing is written per evaluation

    call_command("flush_exposures")

    counts = totals(environment)
    assert {variant: counts[("checkout", variant, "SPLIT")] for variant in served} == served
    assert sum(served.values()) == 41
    assert counts[("banner", "off", "DISABLED")] == 1
    assert exposures.last_evaluated(environment.pk, "checkout") is not None


def test_counts_accumulate_over_flushes_in_hour_rows(setup):
    _, environment, client = setup
    evaluate(client, 5)
    exposures.drain()
    evaluate(client, 7)
    exposures.drain()
    assert sum(v for (flag, _, _), v in totals(environment).items() if flag == "checkout") == 14
    hours = ExposureCount.objects.filter(flag_key="checkout").values_list("hour", flat=True)
    assert {hour.minute for hour in hours} == {0}


@pytest.mark.skipif(not exposures.settings.REDIS_URL, reason="needs REDIS_URL")
def test_with_redis_counts_wait_in_redis_until_drained(setup):
    _, environment, client = setup
    evaluate(client, 10)

    assert exposures.flush() > 0
    assert not ExposureCount.objects.exists()
    assert exposures._redis().scard(exposures.cache.make_key(keys.EXPOSURES_PENDING)) == 1

    exposures.drain()
    assert sum(v for (flag, _, _), v in totals(environment).items() if flag == "checkout") == 11
    assert exposures._redis().scard(exposures.cache.make_key(keys.EXPOSURES_PENDING)) == 0
    exposures.drain()  # draining twice counts nothing twice
    assert sum(v for (flag, _, _), v in totals(environment).items() if flag == "checkout") == 11


@override_settings(REDIS_URL="")
def test_without_redis_a_flush_writes_the_database(setup):
    _, environment, client = setup
    evaluate(client, 3)
    exposures.flush()
    assert sum(v for (flag, _, _), v in totals(environment).items() if flag == "checkout") == 4


def test_sdks_post_their_own_counts(setup):
    _, environment, client = setup
    hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    body = {
        "exposures": [
            {"flag": "checkout", "variant": "on", "reason": "SPLIT", "count": 500},
            {
                "flag": "checkout",
                "variant": "off",
                "reason": "SPLIT",
                "count": 20,
                "hour": (hour - timedelta(hours=2)).isoformat(),
            },
        ]
    }
    response = client.post("/api/v1/sdk/exposures", body, format="json")
    assert response.status_code == 202, response.content
    exposures.drain()
    assert totals(environment) == {
        ("checkout", "on", "SPLIT"): 500,
        ("checkout", "off", "SPLIT"): 20,
    }
    series = exposures.exposure_series(environment.pk, "checkout", hour - timedelta(days=1))
    assert [(row["hour"], row["variant"], row["total"]) for row in series] == [
        (hour - timedelta(hours=2), "off", 20),
        (hour, "on", 500),
    ]


@pytest.mark.parametrize(
    "body",
    [
        {"exposures": [{"flag": "checkout", "variant": "on", "reason": "SPLIT", "count": -1}]},
        {"exposures": [{"flag": "checkout", "reason": "SPLIT", "count": 1, "extra": 1}]},
        {"exposures": "many"},
        {"counts": []},
    ],
)
def test_bad_sdk_counts_are_refused_with_the_field_named(setup, body):
    _, _, client = setup
    response = client.post("/api/v1/sdk/exposures", body, format="json")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_client_keys_cannot_post_counts(setup):
    project, environment, _ = setup
    _, secret = services.api_key_create(
        environment=environment, kind="client", name="web", actor=None, source="system"
    )
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {secret}")
    body = {"exposures": [{"flag": "checkout", "variant": "on", "reason": "SPLIT", "count": 1}]}
    assert client.post("/api/v1/sdk/exposures", body, format="json").status_code == 403


def test_stale_flags_are_never_evaluated_or_serve_one_variant(setup):
    project, environment, _ = setup
    now = datetime.now(UTC)
    old = int((now - timedelta(days=40)).timestamp())
    recent = int((now - timedelta(days=2)).timestamp())
    exposures.add(environment.pk, "checkout", "on", "SPLIT", 5, old)
    exposures.add(environment.pk, "checkout", "off", "SPLIT", 5, recent)
    exposures.add(environment.pk, "checkout", "on", "SPLIT", 5, recent)
    exposures.add(environment.pk, "banner", "off", "DISABLED", 9, old)
    exposures.add(environment.pk, "banner", "off", "DISABLED", 9, recent)
    factories.flag(project, "forgotten")
    project.flags.update(created_at=now - timedelta(days=60))
    factories.flag(project, "fresh")  # made today: not stale, though never evaluated
    exposures.drain()

    stale = {item["flag"].key: item["why"] for item in exposures.stale_flags(project, days=30)}

    assert stale == {
        "banner": "one variant to everyone for 30 days",
        "forgotten": "never evaluated",
    }


# --- Counts that name nothing of the environment, and counts the store cannot hold -------


def dropped(why: str) -> float:
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("flags_exposures_dropped_total", {"why": why}) or 0.0


def test_sdk_counts_naming_no_flag_variant_or_reason_of_the_environment_are_dropped(setup):
    _, environment, client = setup
    before = {why: dropped(why) for why in ("unknown_flag", "unknown_variant", "unknown_reason")}
    good = {"flag": "checkout", "variant": "on", "reason": "SPLIT", "count": 7}
    body = {
        "exposures": [
            good,
            {**good, "flag": "check\u0000out"},
            {**good, "flag": "check\tout"},
            {**good, "flag": "nope"},
            {**good, "variant": "maybe"},
            {**good, "variant": None},  # only an error has no variant
            {**good, "reason": "BECAUSE"},
            {"flag": "checkout", "variant": None, "reason": "ERROR", "count": 2},
        ]
    }

    response = client.post("/api/v1/sdk/exposures", body, format="json")

    assert response.status_code == 202, response.content
    assert response.json() == {
        "accepted": 2,
        "dropped": 6,
        "droppedBy": {"unknown_flag": 3, "unknown_variant": 2, "unknown_reason": 1},
    }
    assert dropped("unknown_flag") - before["unknown_flag"] == 3
    assert dropped("unknown_variant") - before["unknown_variant"] == 2
    assert dropped("unknown_reason") - before["unknown_reason"] == 1
    call_command("run_scheduler", "--once")
    assert totals(environment) == {("checkout", "on", "SPLIT"): 7, ("checkout", "", "ERROR"): 2}


@pytest.mark.parametrize(
    "body",
    [
        "[" * 10_000 + "]" * 10_000,
        '{"exposures": ' + "[" * 10_000 + "]" * 10_000 + "}",
        '{"exposures": [{"flag": "checkout", "reason": "SPLIT", "count": 1, "hour": NaN}]}',
    ],
)
def test_deeply_nested_or_nan_exposure_bodies_are_a_400(setup, body):
    _, _, client = setup
    response = client.post("/api/v1/sdk/exposures", body, content_type="application/json")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_evaluating_a_flag_that_does_not_exist_counts_nothing(setup):
    _, environment, client = setup
    for key in ("a%00b", "a%09b", "nope"):
        response = client.post(f"/ofrep/v1/evaluate/flags/{key}", {}, format="json")
        assert response.status_code == 404
    client.post("/ofrep/v1/evaluate/flags/banner", {}, format="json")

    exposures.drain()

    assert totals(environment) == {("banner", "off", "DISABLED"): 1}


def test_one_counter_the_store_cannot_hold_never_fails_a_drain(setup):
    _, environment, _ = setup
    before = dropped("unstorable")
    hour = int(datetime.now(UTC).timestamp())
    exposures.add(environment.pk, "checkout", "on", "SPLIT", 3, hour)
    exposures.add(environment.pk, "check\x00out", "on", "SPLIT", 5, hour)
    exposures.add(environment.pk, "checkout", "o\tn", "SPLIT", 5, hour)
    exposures.add(environment.pk, "checkout", "off", "\ud800", 5, hour)
    exposures.add(environment.pk, "x" * 101, "on", "SPLIT", 5, hour)

    call_command("run_scheduler", "--once")  # exits 0: no exception

    assert totals(environment) == {("checkout", "on", "SPLIT"): 3}
    assert dropped("unstorable") - before == 4
    exposures.drain()  # nothing was put back to fail again
    assert totals(environment) == {("checkout", "on", "SPLIT"): 3}


@pytest.mark.skipif(not exposures.settings.REDIS_URL, reason="needs REDIS_URL")
def test_a_malformed_field_in_redis_loses_only_itself(setup):
    _, environment, _ = setup
    before = dropped("malformed") + dropped("unstorable")
    hour = int(datetime.now(UTC).timestamp()) // 3600 * 3600
    key = exposures._hash_key(environment.pk, hour)
    redis = exposures._redis()
    redis.hset(key, "checkout\ton\tSPLIT", 4)
    redis.hset(key, "check\tout\ton\tSPLIT", 9)  # a tab in a name: four parts
    redis.hset(key, "checkout\toff\tSPLIT", "many")
    redis.hset(key, "check\x00out\ton\tSPLIT", 9)
    redis.hset(key, "checkout\toff\tSPLIT\t", 9)
    redis.sadd(exposures.cache.make_key(keys.EXPOSURES_PENDING), key)

    call_command("run_scheduler", "--once")

    assert totals(environment) == {("checkout", "on", "SPLIT"): 4}
    assert dropped("malformed") + dropped("unstorable") - before == 4
    assert redis.scard(exposures.cache.make_key(keys.EXPOSURES_PENDING)) == 0
