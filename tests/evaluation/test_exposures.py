"""Exposure counts match the evaluations made, through Redis or straight to the database."""

from datetime import UTC, datetime, timedelta

import pytest
from django.core.management import call_command
from django.db.models import Sum
from django.test import override_settings
from rest_framework.test import APIClient

from evaluation import exposures
from flags import services
from flags.models import ExposureCount
from tests import factories

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _no_leftovers():
    exposures._take()
    yield
    exposures._take()


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
    assert exposures._redis().scard(exposures.cache.make_key(exposures.PENDING)) == 1

    exposures.drain()
    assert sum(v for (flag, _, _), v in totals(environment).items() if flag == "checkout") == 11
    assert exposures._redis().scard(exposures.cache.make_key(exposures.PENDING)) == 0
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
    factories.flag(project, "fresh")
    exposures.drain()

    stale = {item["flag"].key: item["why"] for item in exposures.stale_flags(project, days=30)}

    assert stale == {
        "banner": "one variant to everyone for 30 days",
        "fresh": "never evaluated",
    }
