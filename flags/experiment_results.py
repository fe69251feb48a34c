"""An experiment's results in words and figures: what its admin page and the command line show.

Formats `flags.experiments.experiment_analysis` for people: percentages, lifts with their
interval, p-values, the sample-ratio check against the weights at the start.
"""

from __future__ import annotations

from typing import Any

from flags.experiments import Analysis, MetricResult, VariantResult, experiment_analysis
from flags.models import Experiment, Metric
from flags.statistics import SampleRatio


def _percent(value: float, signed: bool = False) -> str:
    return f"{value:+.1%}" if signed else f"{value:.1%}"


def _figure(metric: Metric, value: float | None) -> str:
    if value is None:
        return "–"
    return _percent(value) if metric.kind == Metric.Kind.CONVERSION else f"{value:,.4g}"


def _row(metric: Metric, result: VariantResult, control: bool) -> dict[str, Any]:
    row: dict[str, Any] = {
        "variant": result.variant,
        "control": control,
        "units": f"{result.units:,}",
        "value": _figure(metric, result.value),
        "lift": "–",
        "p_value": "–",
        "chance": "–",
        "reasons": [],
    }
    comparison = result.comparison
    if comparison is None:
        return row
    if comparison.relative_lift is not None:
        row["lift"] = _percent(comparison.relative_lift, signed=True)
        if comparison.interval is not None:
            low, high = comparison.interval.low, comparison.interval.high
            row["lift"] += f" ({_percent(low, signed=True)} to {_percent(high, signed=True)})"
    if comparison.p_value is not None:
        row["p_value"] = f"{comparison.p_value:.3g}"
    if comparison.chance_to_beat_control is not None:
        row["chance"] = _percent(comparison.chance_to_beat_control)
    row["reasons"] = list(comparison.reasons)
    return row


def _metric_table(result: MetricResult) -> dict[str, Any]:
    metric = result.metric
    kind = (
        "conversion rate"
        if metric.kind == Metric.Kind.CONVERSION
        else f"{metric.get_aggregation_display()} of the value per unit"
        + (", over the units with a value" if metric.aggregation == Metric.Aggregation.MEAN else "")
    )
    rows = [_row(metric, result.control, True)]
    rows += [_row(metric, treatment, False) for treatment in result.treatments]
    return {
        "metric": metric,
        "measure": kind,
        "rows": rows,
        "mixed_units": result.mixed_units,
        "open_units": result.open_units,
        "reasons": list(dict.fromkeys(r for row in rows for r in row["reasons"])),
    }


def _split_text(variants: list[str], numbers: tuple | list) -> str:
    return " / ".join(
        f"{variant} {number:,.6g}" for variant, number in zip(variants, numbers, strict=True)
    )


def _sample_ratio(analysis: Analysis, ratio: SampleRatio) -> dict[str, Any]:
    variants = list(analysis.units)
    weights = {item["variant"]: item["weight"] for item in analysis.experiment.start_weights}
    return {
        "mismatch": ratio.mismatch,
        "p_value": f"{ratio.p_value:.2g}" if ratio.p_value is not None else None,
        "observed": _split_text(variants, ratio.observed),
        "expected": _split_text(variants, ratio.expected),
        "weights": " / ".join(f"{v} {weights.get(v, 0)}%" for v in variants),
        "reason": ratio.reason,
        "threshold": ratio.threshold,
    }


def results_context(experiment: Experiment) -> dict[str, Any] | None:
    """The experiment's results, formatted per metric and variant; None for a draft."""
    analysis = experiment_analysis(experiment)
    if analysis is None:
        return None
    return {
        "analysis": analysis,
        "sample_ratio": _sample_ratio(analysis, analysis.sample_ratio),
        "metrics": [_metric_table(result) for result in analysis.metrics],
        "changes": analysis.changes,
    }
