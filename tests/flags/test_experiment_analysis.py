"""An experiment's analysis against small data computed by hand (flags.experiments)."""

from datetime import UTC, datetime, timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from scipy import stats

from flags.experiments import experiment_analysis, metric_totals
from flags.models import Experiment
from flags.statistics import NO_UNITS
from tests import factories

pytestmark = pytest.mark.django_db

T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
HOUR, DAY = timedelta(hours=1), timedelta(days=1)


@pytest.fixture
def checkout(project):
    flag = factories.flag(project, "checkout")
    factories.split(flag, on=50, off=50)
    return flag


def _started(flag, *metrics, start=T0, stop=T0 + 10 * DAY) -> Experiment:
    return factories.started(factories.experiment(flag, metrics=list(metrics)), start, stop)


@pytest.fixture
def data(project):
    """Eight units split 4/4, one that saw both variants, two outside the period.

    purchase events within each unit's 7-day window (day of exposure + 7 days, UTC):
    off: u1 10; u2 5 and 25 a day later; u3 only before its exposure; u4 only on day 9.
    on:  u5 30; u6 10 on day 0 and 20 on day 7; u7 one event without a value; u8 nothing.
    """
    production = factories.environment(project)
    seen = T0 + HOUR
    for unit in ("u1", "u2", "u3", "u4"):
        factories.exposure(production, "checkout", "off", unit, seen)
    for unit in ("u5", "u6", "u7", "u8"):
        factories.exposure(production, "checkout", "on", unit, seen)
    factories.exposure(production, "checkout", "on", "u9", seen)
    factories.exposure(production, "checkout", "off", "u9", seen + DAY)
    factories.exposure(production, "checkout", "on", "early", T0 - HOUR)
    factories.exposure(production, "checkout", "off", "late", T0 + 11 * DAY)
    factories.exposure(production, "other-flag", "off", "u1", seen)

    def event(unit, at, *values, name="purchase"):
        factories.event_day(production, name, unit, at, values)

    event("u1", T0 + 2 * HOUR, 10)
    event("u2", T0 + DAY, 5, 25)
    event("u3", T0 + HOUR / 2, 99)
    event("u4", T0 + 8 * DAY + HOUR, 99)
    event("u5", T0 + 2 * DAY, 30)
    event("u6", T0 + 3 * HOUR, 10)
    event("u6", T0 + 7 * DAY + 23 * HOUR, 20)
    event("u7", T0 + 5 * HOUR)
    event("u8", T0 + 5 * HOUR, 1000, name="signup")
    event("u9", T0 + 5 * HOUR, 1000)
    event("early", T0 + 5 * HOUR, 1000)
    event("late", T0 + 11 * DAY + HOUR, 1000)
    # Another environment's events of the same unit and name count for nothing here.
    factories.event_day(
        factories.environment(project, "staging"), "purchase", "u8", T0 + 5 * HOUR, (1000,)
    )
    return production


def _metric(project, key, **data):
    return factories.metric(project, key, event="purchase", **data)


def test_conversion_counts_each_units_events_in_its_window_only(project, checkout, data):
    purchases = _metric(project, "purchases")
    experiment = _started(checkout, purchases)

    analysis = experiment_analysis(experiment)

    assert analysis.units == {"off": 4, "on": 4} and analysis.mixed_units == 1
    [result] = analysis.metrics
    assert result.mixed_units == 1
    assert (result.control.variant, result.control.units, result.control.value) == ("off", 4, 0.5)
    [on] = result.treatments
    assert (on.variant, on.units, on.value) == ("on", 4, 0.75)
    assert on.comparison.relative_lift == pytest.approx(0.5)
    # Two-proportion z-test: pooled 5/8, z = 0.25 / sqrt(5/8 · 3/8 · (1/4 + 1/4)) = 0.7303.
    assert on.comparison.p_value == pytest.approx(0.4652, abs=1e-4)
    assert 0.5 < on.comparison.chance_to_beat_control < 1
    assert not analysis.sample_ratio.mismatch and analysis.sample_ratio.p_value == 1.0


def test_numeric_sum_counts_units_without_events_as_zero(project, checkout, data):
    revenue = _metric(project, "revenue", kind="numeric", aggregation="sum")
    experiment = _started(checkout, revenue)

    [result] = experiment_analysis(experiment).metrics

    # Per-unit sums: off [10, 30, 0, 0], on [30, 30, 0, 0].
    assert (result.control.units, result.control.value) == (4, 10.0)
    [on] = result.treatments
    assert (on.units, on.value) == (4, 15.0)
    assert on.comparison.relative_lift == pytest.approx(0.5)
    welch = stats.ttest_ind([30, 30, 0, 0], [10, 30, 0, 0], equal_var=False)
    assert on.comparison.p_value == pytest.approx(welch.pvalue)


def test_numeric_mean_leaves_out_units_without_a_value(project, checkout, data):
    basket = _metric(project, "basket", kind="numeric", aggregation="mean", better="lower")
    experiment = _started(checkout, basket)

    totals, mixed = metric_totals(experiment, basket, start=T0, stop=T0 + 10 * DAY)
    [result] = experiment_analysis(experiment).metrics

    # Per-unit means: off u1 10, u2 (5 + 25) / 2 = 15; on u5 30, u6 (10 + 20) / 2 = 15.
    assert (totals["off"].valued_units, totals["off"].mean_total) == (2, 25.0)
    assert (totals["on"].valued_units, totals["on"].mean_total, totals["on"].mean_squares) == (
        2,
        45.0,
        1125.0,
    )
    assert mixed == 1
    assert (result.control.units, result.control.value) == (2, 12.5)
    [on] = result.treatments
    assert (on.units, on.value) == (2, 22.5)
    # Lower is better: the treatment's higher mean is unlikely to beat the control.
    welch = stats.ttest_ind([30, 15], [10, 15], equal_var=False)
    assert on.comparison.p_value == pytest.approx(welch.pvalue)
    assert on.comparison.chance_to_beat_control < 0.5


def test_the_analysis_is_one_query_per_metric(project, checkout, data):
    metrics = [_metric(project, f"m{index}", window_days=index + 1) for index in range(3)]
    experiment = _started(checkout, *metrics)

    with CaptureQueriesContext(connection) as queries:
        experiment_analysis(experiment)

    exposures = [q["sql"] for q in queries.captured_queries if "flags_unitexposure" in q["sql"]]
    assert len(exposures) == 3 and all("flags_uniteventday" in sql for sql in exposures)
    # Besides: the metrics, the flag, the data's watermark, the environment, the
    # configuration, its versions.
    assert len(queries.captured_queries) <= 3 + 6


def test_a_split_far_from_the_weights_is_a_sample_ratio_mismatch(project, checkout):
    factories.exposures(factories.environment(project), "checkout", {"off": 100, "on": 30}, T0)
    experiment = _started(checkout)

    ratio = experiment_analysis(experiment).sample_ratio

    # 100 against 30 where 65 each were expected: chi-square 37.7 on 1 degree of freedom.
    assert ratio.mismatch is True
    assert ratio.p_value == pytest.approx(stats.chi2.sf(2 * 35**2 / 65, 1))
    assert ratio.observed == (100, 30)


def test_a_started_experiment_without_units_says_not_enough_data(project, checkout):
    experiment = _started(checkout, _metric(project, "purchases"))

    analysis = experiment_analysis(experiment)

    assert analysis.units == {"off": 0, "on": 0}
    assert analysis.sample_ratio.reason.startswith("not enough data")
    [on] = analysis.metrics[0].treatments
    assert on.value is None and on.comparison.reasons == (NO_UNITS,)


def test_a_draft_has_no_analysis(checkout):
    assert experiment_analysis(factories.experiment(checkout)) is None


def test_changes_to_the_split_while_running_are_reported_with_their_times(project, checkout):
    experiment = _started(checkout, start=datetime.now(UTC) - DAY, stop=None)
    factories.configure(checkout, "production", enabled=False)  # not a change of the split
    changed = factories.split(checkout, on=80, off=20)

    changes = experiment_analysis(experiment).changes

    [change] = changes
    assert change.version == changed.version
    assert change.changes == [
        "defaultServe: rollout on 50% / off 50% by targetingKey → "
        "rollout on 80% / off 20% by targetingKey"
    ]
    assert abs(change.at - datetime.now(UTC)) < timedelta(minutes=1)


def test_changes_before_the_start_are_not_reported(project, checkout):
    factories.split(checkout, on=40, off=60)
    experiment = _started(checkout, start=datetime.now(UTC) - DAY, stop=None)
    assert experiment_analysis(experiment).changes == []
    factories.configure(
        checkout,
        "production",
        rules=[{"name": "staff", "conditions": [], "serve": {"variant": "on"}}],
    )
    [change] = experiment_analysis(experiment).changes
    assert "rule 1 'staff' added" in change.changes[0]


def test_units_whose_window_is_still_open_are_counted(project, checkout, data):
    purchases = _metric(project, "purchases", window_days=3)
    experiment = _started(checkout, purchases)

    # Exposed on T0's day: the 3-day window ends with the day T0 + 3 days.
    [early] = experiment_analysis(experiment, now=T0 + 3 * DAY + 23 * HOUR).metrics
    [closed] = experiment_analysis(experiment, now=T0 + 4 * DAY).metrics

    assert early.open_units == 8 and closed.open_units == 0
    assert (early.control.value, closed.control.value) == (0.5, 0.5)
