"""An experiment's results are read once per new data: repeated views use the cached totals,
and whatever is ingested after a view shows on the next one, as a fresh computation has it."""

import json
from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test import override_settings
from django.test.utils import CaptureQueriesContext

from evaluation import events
from flags import services
from flags.experiment_results import results_context
from flags.experiments import experiment_analysis
from flagsite import failures
from tests import factories
from tests.evaluation.document_loader import api_key
from tests.servers import free_port

pytestmark = pytest.mark.django_db

NOW = datetime.now(UTC).replace(microsecond=0)
HOUR = timedelta(hours=1)
NO_CACHE = {"default": {"BACKEND": "django.core.cache.backends.dummy.DummyCache"}}


@pytest.fixture(autouse=True)
def _no_leftovers():
    events.drain()
    events._seen.clear()
    yield
    events._units.take()
    events._events.take()
    events._seen.clear()


@pytest.fixture
def experiment(project):
    flag = factories.flag(project, "checkout")
    factories.split(flag, on=50, off=50)
    metrics = [
        factories.metric(project, "purchases", event="purchase"),
        factories.metric(project, "revenue", event="purchase", kind="numeric", aggregation="sum"),
    ]
    return factories.started(factories.experiment(flag, metrics=metrics), NOW - 4 * 24 * HOUR)


@pytest.fixture
def ingest(client, project):
    """Post first exposures and events through the SDK events endpoint, then drain them into
    the database as the scheduler does (through Redis when it is configured)."""
    key = api_key(factories.environment(project), "server")

    def ingest(exposures=(), purchases=(), *, flag="checkout", event="purchase", at=NOW - HOUR):
        body = {
            "firstExposures": [
                {
                    "flag": flag,
                    "variant": variant,
                    "targetingKey": unit,
                    "timestamp": at.timestamp(),
                }
                for unit, variant in exposures
            ],
            "events": [
                {"event": event, "targetingKey": unit, "value": value, "timestamp": at.isoformat()}
                for unit, value in purchases
            ],
        }
        response = client.post(
            "/api/v1/sdk/events",
            json.dumps(body),
            content_type="application/json",
            HTTP_X_API_KEY=key,
        )
        assert response.status_code == 202, response.content
        events.drain()

    return ingest


def shown(experiment, now=None) -> dict:
    """What the page and the command line show of the experiment (from `results_context`)."""
    analysis = experiment_analysis(experiment, now=now)
    context = results_context(experiment) if now is None else {}
    return {
        "units": analysis.units,
        "mixed": analysis.mixed_units,
        "sample_ratio": analysis.sample_ratio,
        "metrics": analysis.metrics,
        "tables": context.get("metrics"),
    }


def fresh(experiment, now=None) -> dict:
    """The same, computed from the rows with no cache at all."""
    with override_settings(CACHES=NO_CACHE):
        return shown(experiment, now)


def analysis_queries(call) -> list[str]:
    with CaptureQueriesContext(connection) as queries:
        call()
    return [q["sql"] for q in queries.captured_queries if "flags_unitexposure" in q["sql"]]


def test_a_repeated_view_with_no_new_data_runs_no_analysis_query(client, experiment, ingest):
    ingest([("u1", "off"), ("u2", "on")], [("u2", 10.0)])
    client.force_login(factories.user(superuser=True))
    page = f"/admin/flags/experiment/{experiment.pk}/change/"

    first = analysis_queries(lambda: client.get(page))
    again = analysis_queries(lambda: client.get(page))

    assert len(first) == 1  # both metrics count the same event in the same window: one query
    assert again == []
    assert shown(experiment) == fresh(experiment)


def test_new_exposures_and_events_show_on_the_next_view(client, experiment, ingest):
    ingest([("u1", "off"), ("u2", "on")], [("u2", 10.0)])
    client.force_login(factories.user(superuser=True))
    page = f"/admin/flags/experiment/{experiment.pk}/change/"
    before = shown(experiment)
    assert client.get(page).status_code == 200

    ingest([("u3", "off"), ("u4", "on")])
    after_exposures, computed_then = shown(experiment), fresh(experiment)
    ingest(purchases=[("u1", 5.0), ("u2", 7.0)])
    after_events = shown(experiment)
    html = client.get(page).content.decode()

    assert before["units"] == {"off": 1, "on": 1}
    assert after_exposures["units"] == {"off": 2, "on": 2}
    assert after_exposures == computed_then != before
    purchases, revenue = after_events["metrics"]
    assert (purchases.control.value, purchases.treatments[0].value) == (0.5, 0.5)
    assert (revenue.control.value, revenue.treatments[0].value) == (2.5, 8.5)
    assert after_events == fresh(experiment) != after_exposures
    assert "<td>50.0%</td>" in html and "<td>8.5</td>" in html


def test_data_of_other_flags_and_events_leave_the_cached_totals_in_use(experiment, ingest):
    ingest([("u1", "off"), ("u2", "on")], [("u2", 10.0)])
    cached = shown(experiment)

    ingest([("u9", "on")], flag="banner-test")  # an unknown flag: dropped, nothing written
    factories.split(factories.flag(experiment.project, "other"), on=50, off=50)
    ingest([("u1", "on")], [("u1", 3.0)], flag="other", event="signup")

    assert analysis_queries(lambda: experiment_analysis(experiment)) == []
    assert shown(experiment) == cached == fresh(experiment)


def test_a_changed_metric_window_is_computed_anew(experiment, ingest):
    ingest([("u1", "off"), ("u2", "on")], at=NOW - 70 * HOUR)
    ingest(purchases=[("u1", 5.0)], at=NOW - HOUR)
    [purchases, _] = shown(experiment)["metrics"]
    assert purchases.control.value == 1.0

    metric = experiment.metrics.get(key="purchases")
    services.metric_update(metric=metric, data={"window_days": 1}, **factories.SYSTEM)

    # The purchase came two or three days after the exposure: outside a window of one day.
    [purchases, _] = shown(experiment)["metrics"]
    assert purchases.control.value == 0.0
    assert shown(experiment) == fresh(experiment)


def test_a_unit_exposed_at_a_time_ahead_counts_once_that_time_has_come(experiment, ingest):
    # SDK clocks run ahead: a first exposure may be stamped up to an hour after its receipt.
    ingest([("u1", "off")], at=NOW - HOUR)
    ingest([("u2", "on")], at=NOW + HOUR / 2)

    early = shown(experiment, now=NOW)
    late = shown(experiment, now=NOW + HOUR)

    assert early["units"] == {"off": 1, "on": 0} and late["units"] == {"off": 1, "on": 1}
    assert early == fresh(experiment, now=NOW) and late == fresh(experiment, now=NOW + HOUR)


def test_with_the_shared_cache_away_results_are_computed_from_the_rows(experiment, ingest):
    ingest([("u1", "off"), ("u2", "on")], [("u2", 10.0)])
    expected = fresh(experiment)
    dead = {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        },
        "limits": {"BACKEND": "flagsite.limits_cache.FallbackCache", "LOCATION": "default"},
    }
    try:
        with override_settings(CACHES=dead):
            first, again = shown(experiment), shown(experiment)
    finally:
        failures.forget()  # the next test's cache is up

    assert first == again == expected
    assert first["units"] == {"off": 1, "on": 1}


def test_an_ended_experiment_keeps_its_totals_while_later_days_events_arrive(project, ingest):
    flag = factories.flag(project, "checkout")
    factories.split(flag, on=50, off=50)
    metric = factories.metric(project, "purchases", event="purchase", window_days=1)
    exposed_at = NOW - 132 * HOUR
    ended = factories.started(
        factories.experiment(flag, metrics=[metric]), NOW - 144 * HOUR, NOW - 120 * HOUR
    )
    ingest([("u1", "off"), ("u2", "on")], at=exposed_at)
    ingest(purchases=[("u1", 5.0)], at=exposed_at + HOUR)
    cached = shown(ended)

    ingest(purchases=[("u2", 5.0)], at=NOW - HOUR)  # days after every unit's window
    assert analysis_queries(lambda: experiment_analysis(ended)) == []
    assert shown(ended) == cached == fresh(ended)

    ingest(purchases=[("u2", 5.0)], at=exposed_at + 2 * HOUR)  # within u2's window
    [purchases] = shown(ended)["metrics"]
    assert purchases.treatments[0].value == 1.0
    assert shown(ended) == fresh(ended) != cached
