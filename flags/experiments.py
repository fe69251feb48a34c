"""An experiment's results: per-variant totals read in one query per metric, then compared.

Reads only (a selector): UnitExposure says which units the experiment counts and in which
variant, UnitEventDay what each did in its window; flags.statistics turns the per-variant
sufficient statistics into lifts, intervals, p-values and the sample-ratio check. The totals
are cached, keyed by what they were computed from and by the watermark of the ingested data
(flags.ingested), so reading an experiment again without new data costs one query.
docs/experiments.md explains the query and its choices.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import partial
from typing import TypeVar

from django.core.cache import cache
from django.db import connection
from django.utils import timezone

from evaluation import keys
from flags.history import state_diff
from flags.ingested import Watermark, watermark
from flags.models import Experiment, FlagConfig, FlagConfigVersion, Metric
from flags.statistics import (
    DEFAULT_CONFIDENCE,
    Better,
    Comparison,
    ConversionTotals,
    NumericTotals,
    SampleRatio,
    Totals,
    compare_conversions,
    compare_numeric,
    sample_ratio_mismatch,
)
from flagsite.failures import CACHE, StoreUnavailable, reaching

__all__ = [
    "Analysis",
    "ConfigChange",
    "MetricResult",
    "VariantResult",
    "VariantTotals",
    "experiment_analysis",
    "flag_metric_totals",
    "metric_result",
    "metric_totals",
    "sample_ratio",
    "statistics_totals",
    "unit_counts",
    "window_open_since",
]

# The parts of a configuration's state that decide which split units are served.
SPLIT_KEYS = ("defaultServe", "rules")
# Cached totals are keyed by all they were computed from, so they are never wrong, only
# unused once new data arrives: they expire to free the space.
TOTALS_SECONDS = 7 * 86400
TOTALS_FORMAT = 1  # part of each key: a change to VariantTotals starts afresh

T = TypeVar("T")


@dataclass(frozen=True)
class VariantTotals:
    """One variant's sufficient statistics for one metric, as the query sums them."""

    units: int  # units exposed to this variant only
    converted: int  # of those, units with at least one event in their window
    total: float  # the sum over units of each unit's sum of values
    total_of_squares: float  # ... of its square
    valued_units: int  # units with at least one value in their window
    mean_total: float  # the sum over those units of each unit's mean value
    mean_squares: float  # ... of its square
    open_units: int = 0  # units whose window had not closed yet at the time of the query


@dataclass(frozen=True)
class VariantResult:
    variant: str
    units: int  # the units this metric counts (for a mean, those with a value)
    value: float | None  # the conversion rate or the mean per unit; None with no units
    comparison: Comparison | None = None  # against the control; None for the control


@dataclass(frozen=True)
class MetricResult:
    metric: Metric
    control: VariantResult
    treatments: list[VariantResult]
    mixed_units: int  # exposed to more than one variant: left out
    open_units: int = 0  # counted units whose window is still open: figures still move

    @property
    def rows(self) -> list[VariantResult]:
        return [self.control, *self.treatments]


@dataclass(frozen=True)
class ConfigChange:
    """A version of the configuration that changed the split while the experiment ran."""

    version: int
    at: datetime
    actor: str
    changes: list[str]


@dataclass(frozen=True)
class Analysis:
    experiment: Experiment
    start: datetime
    stop: datetime
    units: dict[str, int]  # per variant, units exposed to that variant only
    mixed_units: int
    sample_ratio: SampleRatio
    metrics: list[MetricResult] = field(default_factory=list)
    changes: list[ConfigChange] = field(default_factory=list)


# --- The query --------------------------------------------------------------------------


def _day_sql(column: str, days: int) -> tuple[str, str, list]:
    """The UTC day of a timestamp column, and that day plus `days`, in this database's SQL."""
    if connection.vendor == "sqlite":
        return f"date({column})", f"date({column}, %s)", [f"+{days} days"]
    return f"CAST({column} AS date)", f"CAST({column} AS date) + CAST(%s AS integer)", [days]


# Units first exposed to the flag in [start, stop]; a unit with first exposures to more than
# one variant by the stop is grouped apart (variant NULL) and only counted.
_EXPOSED = """
exposed AS (
  SELECT x.unit AS unit, MIN(x.variant) AS variant, COUNT(*) AS variants,
         MIN(x.first_seen) AS first_seen
  FROM flags_unitexposure x
  WHERE x.environment_id = %s AND x.flag_key = %s AND x.first_seen <= %s
  GROUP BY x.unit
  HAVING MIN(x.first_seen) >= %s
)"""

# Each unit's events of the metric in its window, summed for the units that have any (a
# minority, usually), then joined back to every unit: one grouping by unit, of those only.
_METRIC_QUERY = """
WITH {exposed},
per_unit AS (
  SELECT e.unit AS unit,
         SUM(d.count) AS events, SUM(d.valued) AS valued, SUM(d.value_sum) AS total
  FROM exposed e
  JOIN flags_uniteventday d
    ON d.environment_id = %s AND d.event = %s AND d.unit = e.unit
   AND d.day >= {first_day} AND d.day <= {last_day} AND d.last_at >= e.first_seen
  GROUP BY e.unit
)
SELECT CASE WHEN e.variants > 1 THEN NULL ELSE e.variant END,
       COUNT(*),
       SUM(CASE WHEN u.events > 0 THEN 1 ELSE 0 END),
       SUM(COALESCE(u.total, 0.0)), SUM(COALESCE(u.total * u.total, 0.0)),
       SUM(CASE WHEN u.valued > 0 THEN 1 ELSE 0 END),
       SUM(CASE WHEN u.valued > 0 THEN u.total / u.valued ELSE 0.0 END),
       SUM(CASE WHEN u.valued > 0 THEN (u.total / u.valued) * (u.total / u.valued) ELSE 0.0 END),
       SUM(CASE WHEN e.first_seen >= %s THEN 1 ELSE 0 END)
FROM exposed e
LEFT JOIN per_unit u ON u.unit = e.unit
GROUP BY CASE WHEN e.variants > 1 THEN NULL ELSE e.variant END
"""

_UNITS_QUERY = """
WITH {exposed}
SELECT CASE WHEN variants > 1 THEN NULL ELSE variant END, COUNT(*)
FROM exposed
GROUP BY CASE WHEN variants > 1 THEN NULL ELSE variant END
"""


def _exposed_params(environment_id: int, flag_key: str, start: datetime, stop: datetime) -> list:
    adapt = connection.ops.adapt_datetimefield_value
    return [environment_id, flag_key, adapt(stop), adapt(start)]


def window_open_since(metric: Metric, now: datetime) -> datetime:
    """Units first exposed from this time on have not had their whole window by `now`: it
    ends with the day (UTC) `window_days` after the exposure's."""
    day = now.astimezone(UTC).date() - timedelta(days=metric.window_days)
    return datetime.combine(day, time.min, tzinfo=UTC)


def metric_totals(
    experiment: Experiment,
    metric: Metric,
    *,
    start: datetime,
    stop: datetime,
    now: datetime | None = None,
) -> tuple[dict[str, VariantTotals], int]:
    """Per variant, the metric's sufficient statistics over the experiment's units; and the
    number of units left out for having been exposed to more than one variant. One query."""
    return flag_metric_totals(
        experiment.environment_id,
        experiment.flag.key,
        metric,
        start=start,
        stop=stop,
        now=now,
    )


def flag_metric_totals(
    environment_id: int,
    flag_key: str,
    metric: Metric,
    *,
    start: datetime,
    stop: datetime,
    now: datetime | None = None,
) -> tuple[dict[str, VariantTotals], int]:
    """`metric_totals` of the units first exposed to a flag in an environment in [start,
    stop], experiment or not (a guarded rollout's check). One query."""
    open_since = window_open_since(metric, now or timezone.now())
    first_day, last_day, day_params = _day_sql("e.first_seen", metric.window_days)
    sql = _METRIC_QUERY.format(exposed=_EXPOSED, first_day=first_day, last_day=last_day)
    params = [
        *_exposed_params(environment_id, flag_key, start, stop),
        environment_id,
        metric.event,
        *day_params,
        connection.ops.adapt_datetimefield_value(open_since),
    ]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        rows = cursor.fetchall()
    totals, mixed = {}, 0
    for variant, units, converted, total, squares, valued, mean_total, mean_squares, opened in rows:
        if variant is None:
            mixed = int(units)
            continue
        totals[variant] = VariantTotals(
            units=int(units),
            converted=int(converted or 0),
            total=float(total or 0.0),
            total_of_squares=float(squares or 0.0),
            valued_units=int(valued or 0),
            mean_total=float(mean_total or 0.0),
            mean_squares=float(mean_squares or 0.0),
            open_units=int(opened or 0),
        )
    return totals, mixed


def unit_counts(
    experiment: Experiment, *, start: datetime, stop: datetime
) -> tuple[dict[str, int], int]:
    """Units per variant, and units exposed to more than one (left out). One query."""
    with connection.cursor() as cursor:
        cursor.execute(
            _UNITS_QUERY.format(exposed=_EXPOSED),
            _exposed_params(experiment.environment_id, experiment.flag.key, start, stop),
        )
        rows = cursor.fetchall()
    counts = {variant: int(units) for variant, units in rows if variant is not None}
    mixed = sum(int(units) for variant, units in rows if variant is None)
    return counts, mixed


# --- From totals to answers -------------------------------------------------------------


def statistics_totals(metric: Metric, totals: VariantTotals | None) -> Totals:
    if totals is None:
        return (
            ConversionTotals(0, 0)
            if metric.kind == Metric.Kind.CONVERSION
            else NumericTotals(0, 0, 0)
        )
    if metric.kind == Metric.Kind.CONVERSION:
        return ConversionTotals(totals.units, totals.converted)
    if metric.aggregation == Metric.Aggregation.MEAN:
        return NumericTotals(totals.valued_units, totals.mean_total, totals.mean_squares)
    return NumericTotals(totals.units, totals.total, totals.total_of_squares)


def _compare(metric: Metric, control: Totals, treatment: Totals, confidence: float) -> Comparison:
    better = Better(metric.better)
    if isinstance(control, ConversionTotals) and isinstance(treatment, ConversionTotals):
        return compare_conversions(control, treatment, better=better, confidence=confidence)
    assert isinstance(control, NumericTotals) and isinstance(treatment, NumericTotals)
    return compare_numeric(control, treatment, better=better, confidence=confidence)


def _variants(experiment: Experiment, seen: dict) -> list[str]:
    """The control first, then the rollout's other variants, then any other seen."""
    order = [experiment.control_variant]
    order += [item["variant"] for item in experiment.start_weights]
    order += sorted(seen)
    return list(dict.fromkeys(order))


def metric_result(
    experiment: Experiment,
    metric: Metric,
    totals: dict[str, VariantTotals],
    mixed: int,
    *,
    confidence: float = DEFAULT_CONFIDENCE,
) -> MetricResult:
    """Each treatment against the control, from the metric's totals (`metric_totals`)."""
    by_variant = {
        v: statistics_totals(metric, totals.get(v)) for v in _variants(experiment, totals)
    }
    control_key = experiment.control_variant
    control = by_variant[control_key]

    def row(variant: str, comparison: Comparison | None = None) -> VariantResult:
        figures = by_variant[variant]
        value = figures.value if figures.units else None
        return VariantResult(variant, figures.units, value, comparison)

    treatments = [
        row(variant, _compare(metric, control, figures, confidence))
        for variant, figures in by_variant.items()
        if variant != control_key
    ]
    open_units = sum(figures.open_units for figures in totals.values())
    return MetricResult(metric, row(control_key), treatments, mixed, open_units)


def split_changes(experiment: Experiment, stop: datetime) -> list[ConfigChange]:
    """Versions of the configuration after the one at the start, up to the stop, that
    changed its rollout or rules: results from before and after are not the same split."""
    if experiment.start_version is None:
        return []
    config = FlagConfig.objects.get(flag=experiment.flag, environment=experiment.environment)
    versions = list(
        FlagConfigVersion.objects.filter(
            config=config, version__gte=experiment.start_version, created_at__lte=stop
        ).order_by("version")
    )
    changes = []
    for previous, version in zip(versions, versions[1:], strict=False):
        before = {key: previous.state.get(key) for key in SPLIT_KEYS}
        after = {key: version.state.get(key) for key in SPLIT_KEYS}
        if before == after:
            continue
        lines = [line for line in state_diff(before, after) if line != "created"]
        changes.append(ConfigChange(version.version, version.created_at, version.actor_name, lines))
    return changes


# --- The cache ------------------------------------------------------------------------------


def _cached(inputs: dict, compute: Callable[[], T]) -> T:
    """`compute()`, or what it returned before for the same inputs (the shared cache; without
    it, computed each time)."""
    text = json.dumps([TOTALS_FORMAT, inputs], sort_keys=True, default=str)
    key = keys.totals(hashlib.sha256(text.encode()).hexdigest())
    with contextlib.suppress(StoreUnavailable), reaching(CACHE):
        found = cache.get(key)
        if found is not None:
            return found
    value = compute()
    with contextlib.suppress(StoreUnavailable), reaching(CACHE):
        cache.set(key, value, TOTALS_SECONDS)
    return value


def _counted_until(mark: Watermark, stop: datetime) -> datetime:
    """The stop, or the latest first exposure ever ingested for the flag when that is
    earlier: every stop from it on counts the same units. (A running experiment's stop is
    now, which moves at each read.)"""
    latest = mark.exposures_latest
    return latest if latest is not None and latest <= stop else stop


def _utc_day(at: datetime) -> date:
    return at.astimezone(UTC).date()


def _units_inputs(
    experiment: Experiment, mark: Watermark, start: datetime, until: datetime
) -> dict:
    """What the units counted depend on: the flag's first exposures of every day up to the
    stop (a unit's earlier one, before the start, leaves it out)."""
    return {
        "environment": experiment.environment_id,
        "flag": experiment.flag.key,
        "start": start.isoformat(),
        "stop": until.isoformat(),
        "exposures": mark.exposures(_utc_day(until)),
    }


def _metric_inputs(
    inputs: dict, metric: Metric, mark: Watermark, start: datetime, until: datetime, now: datetime
) -> dict:
    """What a metric's totals depend on besides the units: its event's rows of the days its
    windows cover, its window, and which windows are still open (a day's end moves that)."""
    last_day = _utc_day(until) + timedelta(days=metric.window_days)
    return {
        **inputs,
        "event": metric.event,
        "window_days": metric.window_days,
        "events": mark.events(metric.event, _utc_day(start), last_day),
        "open_since": window_open_since(metric, now).isoformat(),
    }


def sample_ratio(experiment: Experiment, units: dict[str, int]) -> SampleRatio:
    """The check of the units per variant against the rollout's weights at the start (a
    variant seen but not in the weights has weight 0)."""
    weights = {item["variant"]: item["weight"] for item in experiment.start_weights}
    variants = _variants(experiment, units)
    return sample_ratio_mismatch(
        [units.get(variant, 0) for variant in variants],
        [weights.get(variant, 0) for variant in variants],
    )


def experiment_analysis(
    experiment: Experiment,
    *,
    now: datetime | None = None,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Analysis | None:
    """The experiment's results per metric, its sample-ratio check against the weights at
    the start, and the changes to its split since; None for a draft (nothing counted yet).

    `now` (the current time unless given) ends a running experiment, and is when the units'
    windows are judged still open (`MetricResult.open_units`).

    Queries: one for the watermark of the data, one per metric (or, with no metric, one for
    the units per variant) unless its totals are cached for that watermark, and one for the
    versions.
    """
    if experiment.starts_at is None:
        return None
    start = experiment.starts_at
    now = now or timezone.now()
    stop = experiment.ends_at or now
    chosen = list(experiment.metrics.order_by("key"))
    # Read before the totals: rows ingested meanwhile bump it, so the totals computed next
    # are never kept under a watermark older than what they miss.
    mark = watermark(experiment.environment_id, experiment.flag.key, [m.event for m in chosen])
    until = _counted_until(mark, stop)
    inputs = _units_inputs(experiment, mark, start, until)
    metrics, counted = [], None
    for metric in chosen:
        totals, mixed = _cached(
            _metric_inputs(inputs, metric, mark, start, until, now),
            partial(metric_totals, experiment, metric, start=start, stop=stop, now=now),
        )
        metrics.append(metric_result(experiment, metric, totals, mixed, confidence=confidence))
        # Every metric's query counts the exposed units: the first one's serve the check.
        counted = counted or ({v: t.units for v, t in totals.items()}, mixed)
    units, mixed = counted or _cached(
        inputs, partial(unit_counts, experiment, start=start, stop=stop)
    )
    variants = _variants(experiment, units)
    return Analysis(
        experiment=experiment,
        start=start,
        stop=stop,
        units={variant: units.get(variant, 0) for variant in variants},
        mixed_units=mixed,
        sample_ratio=sample_ratio(experiment, units),
        metrics=metrics,
        changes=split_changes(experiment, stop),
    )
