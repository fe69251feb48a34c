"""Simulated experiments and guarded rollouts, for flags.statistics' tests and bench table.

Each function draws seeded data with a known truth, runs it through the public functions of
flags.statistics and returns how often they were right. Per-variant aggregates come from
binomial draws where that is the same thing (conversions); numeric metrics draw per-unit
values, since the sum of squares needs them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from flags.statistics import (
    Better,
    ConversionTotals,
    Decision,
    NumericTotals,
    Totals,
    compare_conversions,
    compare_numeric,
    guard_check,
    sample_ratio_mismatch,
)

Draw = Callable[[np.random.Generator, float, int], np.ndarray]


def exponential(rng: np.random.Generator, mean: float, units: int) -> np.ndarray:
    return rng.exponential(mean, units)


def lognormal(rng: np.random.Generator, mean: float, units: int) -> np.ndarray:
    """Skewed like revenue per user: σ = 1 on the log scale, so the mean is exp(μ + ½)."""
    return rng.lognormal(np.log(mean) - 0.5, 1.0, units)


def numeric_totals(values: np.ndarray) -> NumericTotals:
    return NumericTotals(len(values), float(values.sum()), float((values * values).sum()))


@dataclass(frozen=True)
class Coverage:
    runs: int
    covered: int
    significant: int  # runs with p < 1 - confidence
    bounded: int  # runs with an interval at all

    @property
    def rate(self) -> float:
        return self.covered / self.runs


def conversion_coverage(
    *,
    runs: int,
    units: int,
    control_rate: float,
    treatment_rate: float,
    seed: int,
    confidence: float = 0.95,
) -> Coverage:
    """How often the interval on the relative lift covers the true one."""
    rng = np.random.default_rng(seed)
    true_lift = treatment_rate / control_rate - 1
    controls = rng.binomial(units, control_rate, runs)
    treatments = rng.binomial(units, treatment_rate, runs)
    results = [
        compare_conversions(
            ConversionTotals(units, int(control)),
            ConversionTotals(units, int(treatment)),
            confidence=confidence,
        )
        for control, treatment in zip(controls, treatments, strict=True)
    ]
    return _coverage(results, true_lift, confidence)


def numeric_coverage(
    *,
    runs: int,
    units: int,
    draw: Draw,
    control_mean: float,
    treatment_mean: float,
    seed: int,
    confidence: float = 0.95,
) -> Coverage:
    rng = np.random.default_rng(seed)
    true_lift = treatment_mean / control_mean - 1
    results = [
        compare_numeric(
            numeric_totals(draw(rng, control_mean, units)),
            numeric_totals(draw(rng, treatment_mean, units)),
            confidence=confidence,
        )
        for _ in range(runs)
    ]
    return _coverage(results, true_lift, confidence)


def _coverage(results: list, true_lift: float, confidence: float) -> Coverage:
    return Coverage(
        runs=len(results),
        covered=sum(bool(r.interval and true_lift in r.interval) for r in results),
        significant=sum(r.p_value is not None and r.p_value < 1 - confidence for r in results),
        bounded=sum(r.interval is not None for r in results),
    )


def conversion_chances(
    *, runs: int, units: int, control_rate: float, treatment_rate: float, seed: int
) -> np.ndarray:
    """The chance to beat control of each run."""
    rng = np.random.default_rng(seed)
    controls = rng.binomial(units, control_rate, runs)
    treatments = rng.binomial(units, treatment_rate, runs)
    return np.array(
        [
            compare_conversions(
                ConversionTotals(units, int(c)), ConversionTotals(units, int(t))
            ).chance_to_beat_control
            for c, t in zip(controls, treatments, strict=True)
        ]
    )


def sample_ratio_warnings(
    *, runs: int, units: int, shares: Sequence[float], weights: Sequence[float], seed: int
) -> int:
    """In how many runs the check warns, when units really split by ``shares``."""
    rng = np.random.default_rng(seed)
    splits = rng.multinomial(units, shares, runs)
    return sum(
        sample_ratio_mismatch([int(count) for count in split], weights).mismatch for split in splits
    )


@dataclass(frozen=True)
class Monitoring:
    runs: int
    rolled_back: int
    # Units in both variants when the guard first said regression, per rolled-back run.
    units_at_rollback: tuple[int, ...]
    # Runs where a fixed-horizon one-sided test at the same level, repeated at every check,
    # would have rolled back: what monitoring without a sequential test does.
    naive_rolled_back: int

    @property
    def rate(self) -> float:
        return self.rolled_back / self.runs

    @property
    def median_units(self) -> float | None:
        return float(np.median(self.units_at_rollback)) if self.units_at_rollback else None


def stepped_allocation(units_per_check: int, shares: Sequence[float], checks_per_step: int):
    """Units per check of control and treatment for a stepped rollout (5% → 25% → 50% …)."""
    return [
        (round(units_per_check * (1 - share)), round(units_per_check * share))
        for share in shares
        for _ in range(checks_per_step)
    ]


# One-sided z at level 0.05, for the naive repeated test.
_NAIVE_Z = 1.6448536269514722


def _naive_regression(control: Totals, treatment: Totals, better: Better, tolerance: float) -> bool:
    weight = 1 - tolerance if better is Better.HIGHER else 1 + tolerance
    margin = treatment.value - weight * control.value
    margin = margin if better is Better.HIGHER else -margin
    error = np.sqrt(
        treatment.variance / treatment.units + weight**2 * control.variance / control.units
    )
    return bool(error and margin / error < -_NAIVE_Z)


def _monitor(
    totals: Sequence[tuple[Totals, Totals]], better: Better, tolerance: float
) -> tuple[int | None, bool]:
    rolled_back_at: int | None = None
    naive = False
    for control, treatment in totals:
        if control.units < 100 or treatment.units < 100:
            continue
        naive = naive or _naive_regression(control, treatment, better, tolerance)
        if rolled_back_at is None:
            check = guard_check(control, treatment, better=better, relative_tolerance=tolerance)
            if check.decision is Decision.REGRESSION:
                rolled_back_at = control.units + treatment.units
    return rolled_back_at, naive


def _monitoring(outcomes: list[tuple[int | None, bool]]) -> Monitoring:
    at = tuple(units for units, _ in outcomes if units is not None)
    return Monitoring(len(outcomes), len(at), at, sum(naive for _, naive in outcomes))


def conversion_monitoring(
    *,
    runs: int,
    allocation: Sequence[tuple[int, int]],
    control_rate: float,
    treatment_rate: float,
    seed: int,
    tolerance: float = 0.0,
) -> Monitoring:
    """Guarded rollouts of a conversion metric, checked after each batch of ``allocation``."""
    rng = np.random.default_rng(seed)
    units = np.array(allocation)
    cumulative_units = units.cumsum(axis=0)
    outcomes = []
    for _ in range(runs):
        conversions_c = rng.binomial(units[:, 0], control_rate).cumsum()
        conversions_t = rng.binomial(units[:, 1], treatment_rate).cumsum()
        totals = [
            (ConversionTotals(int(n_c), int(c)), ConversionTotals(int(n_t), int(t)))
            for (n_c, n_t), c, t in zip(cumulative_units, conversions_c, conversions_t, strict=True)
        ]
        outcomes.append(_monitor(totals, Better.HIGHER, tolerance))
    return _monitoring(outcomes)


def numeric_monitoring(
    *,
    runs: int,
    allocation: Sequence[tuple[int, int]],
    draw: Draw,
    control_mean: float,
    treatment_mean: float,
    seed: int,
    better: Better = Better.HIGHER,
    tolerance: float = 0.0,
) -> Monitoring:
    rng = np.random.default_rng(seed)
    units = np.array(allocation)
    ends = units.cumsum(axis=0)
    outcomes = []
    for _ in range(runs):
        variants = []
        for column, mean in ((0, control_mean), (1, treatment_mean)):
            values = draw(rng, mean, int(ends[-1, column]))
            sums = np.concatenate(([0.0], values.cumsum()))
            squares = np.concatenate(([0.0], (values * values).cumsum()))
            variants.append(
                [NumericTotals(int(n), float(sums[n]), float(squares[n])) for n in ends[:, column]]
            )
        outcomes.append(_monitor(list(zip(*variants, strict=True)), better, tolerance))
    return _monitoring(outcomes)
