"""flags.statistics against simulated experiments with a known truth (seeded, so repeatable).

Each check has a bound on both sides where one makes sense: an interval that is too wide
covers ~100% and fails as surely as one that is too narrow.
"""

from __future__ import annotations

import pytest

from flags.statistics import Better

from .simulations import (
    conversion_chances,
    conversion_coverage,
    conversion_monitoring,
    exponential,
    lognormal,
    numeric_coverage,
    numeric_monitoring,
    sample_ratio_warnings,
    stepped_allocation,
)

# A stepped rollout: 5%, then 25%, then 50% of the traffic to the treatment, 30 checks each.
CONVERSION_ROLLOUT = stepped_allocation(2000, [0.05, 0.25, 0.5], 30)
NUMERIC_ROLLOUT = stepped_allocation(1000, [0.05, 0.25, 0.5], 30)


# Intervals and p-values


def test_the_conversion_interval_covers_the_true_lift_in_200_experiments() -> None:
    coverage = conversion_coverage(
        runs=200, units=5000, control_rate=0.10, treatment_rate=0.12, seed=1
    )
    assert coverage.bounded == 200
    assert 0.93 <= coverage.rate <= 0.985, coverage
    # 10% against 12% at 5,000 units a variant is found in most experiments (power ≈ 0.9).
    assert coverage.significant >= 160, coverage


def test_a_narrower_confidence_covers_less_on_the_same_experiments() -> None:
    coverage = conversion_coverage(
        runs=200, units=5000, control_rate=0.10, treatment_rate=0.12, seed=1, confidence=0.80
    )
    assert 0.72 <= coverage.rate <= 0.88, coverage


def test_the_conversion_interval_still_covers_with_few_units() -> None:
    coverage = conversion_coverage(
        runs=200, units=300, control_rate=0.10, treatment_rate=0.12, seed=2
    )
    assert coverage.bounded == 200
    assert 0.93 <= coverage.rate <= 0.985, coverage


@pytest.mark.parametrize(
    ("draw", "units", "seed"),
    [(exponential, 2000, 3), (lognormal, 2000, 4), (lognormal, 200, 5)],
)
def test_the_numeric_interval_covers_the_true_lift_in_200_experiments(
    draw, units: int, seed: int
) -> None:
    coverage = numeric_coverage(
        runs=200, units=units, draw=draw, control_mean=10.0, treatment_mean=11.0, seed=seed
    )
    assert coverage.bounded == 200
    assert 0.93 <= coverage.rate <= 0.985, coverage


def test_conversion_p_values_are_below_5_percent_in_5_percent_of_a_a_tests() -> None:
    coverage = conversion_coverage(
        runs=600, units=4000, control_rate=0.10, treatment_rate=0.10, seed=6
    )
    assert 0.03 <= coverage.significant / coverage.runs <= 0.07, coverage


def test_numeric_p_values_are_below_5_percent_in_5_percent_of_a_a_tests() -> None:
    coverage = numeric_coverage(
        runs=600, units=500, draw=lognormal, control_mean=10.0, treatment_mean=10.0, seed=7
    )
    assert 0.03 <= coverage.significant / coverage.runs <= 0.07, coverage


def test_chance_to_beat_control_is_calibrated_in_a_a_tests() -> None:
    chances = conversion_chances(
        runs=600, units=4000, control_rate=0.10, treatment_rate=0.10, seed=8
    )
    # Without a difference the chance is spread evenly: above 95% about 5% of the time.
    assert 0.025 <= (chances > 0.95).mean() <= 0.075
    assert 0.4 <= chances.mean() <= 0.6
    better = conversion_chances(
        runs=100, units=4000, control_rate=0.10, treatment_rate=0.12, seed=9
    )
    assert (better > 0.95).mean() >= 0.8


# Sample ratio mismatch


def test_a_52_48_split_of_a_50_50_rollout_warns() -> None:
    warnings = sample_ratio_warnings(
        runs=1000, units=100_000, shares=[0.52, 0.48], weights=[50, 50], seed=10
    )
    assert warnings >= 950


def test_a_true_50_50_split_does_not_warn() -> None:
    warnings = sample_ratio_warnings(
        runs=2000, units=100_000, shares=[0.5, 0.5], weights=[50, 50], seed=11
    )
    # The threshold is p < 0.001: about 2 false warnings in 2,000.
    assert warnings <= 10


def test_an_honest_three_way_split_does_not_warn() -> None:
    warnings = sample_ratio_warnings(
        runs=2000, units=30_000, shares=[0.2, 0.3, 0.5], weights=[20, 30, 50], seed=12
    )
    assert warnings <= 10


def test_a_half_point_skew_at_100000_units_warns_only_sometimes() -> None:
    # The check is a test, not a rule: at this size a 50.5/49.5 skew is a coin toss.
    warnings = sample_ratio_warnings(
        runs=500, units=100_000, shares=[0.505, 0.495], weights=[1, 1], seed=13
    )
    assert 100 <= warnings <= 400


# Guarded rollouts under continuous monitoring


def test_a_guarded_rollout_rarely_rolls_back_an_a_a_test_checked_90_times() -> None:
    monitoring = conversion_monitoring(
        runs=100, allocation=CONVERSION_ROLLOUT, control_rate=0.10, treatment_rate=0.10, seed=14
    )
    assert monitoring.rolled_back <= 5, monitoring
    # Repeating a fixed-horizon test at every check would have rolled back far more often:
    # the simulation can tell a sequential test from one that is not.
    assert monitoring.naive_rolled_back >= 20, monitoring


def test_a_guarded_rollout_of_a_rare_conversion_rarely_rolls_back_an_a_a_test() -> None:
    # 1% conversion: the treatment's first 100 units usually have no conversion at all.
    monitoring = conversion_monitoring(
        runs=100, allocation=CONVERSION_ROLLOUT, control_rate=0.01, treatment_rate=0.01, seed=15
    )
    assert monitoring.rolled_back <= 5, monitoring


@pytest.mark.parametrize(
    ("draw", "better", "mean", "seed"),
    [(lognormal, Better.HIGHER, 10.0, 16), (exponential, Better.LOWER, 100.0, 17)],
)
def test_a_guarded_rollout_rarely_rolls_back_an_a_a_test_of_a_numeric_metric(
    draw, better: Better, mean: float, seed: int
) -> None:
    monitoring = numeric_monitoring(
        runs=100,
        allocation=NUMERIC_ROLLOUT,
        draw=draw,
        control_mean=mean,
        treatment_mean=mean,
        seed=seed,
        better=better,
    )
    assert monitoring.rolled_back <= 5, monitoring
    assert monitoring.naive_rolled_back >= 20, monitoring


def test_a_guarded_rollout_rolls_back_a_worse_treatment() -> None:
    monitoring = conversion_monitoring(
        runs=100, allocation=CONVERSION_ROLLOUT, control_rate=0.10, treatment_rate=0.09, seed=18
    )
    assert monitoring.rolled_back >= 95, monitoring
    # Of the 180,000 units the rollout would see, a 10% drop is caught well before the end.
    assert monitoring.median_units is not None and monitoring.median_units <= 120_000


@pytest.mark.parametrize(
    ("draw", "better", "control_mean", "treatment_mean", "seed"),
    [
        (lognormal, Better.HIGHER, 10.0, 9.0, 19),
        (exponential, Better.LOWER, 100.0, 110.0, 20),
    ],
)
def test_a_guarded_rollout_rolls_back_a_worse_treatment_of_a_numeric_metric(
    draw, better: Better, control_mean: float, treatment_mean: float, seed: int
) -> None:
    monitoring = numeric_monitoring(
        runs=100,
        allocation=NUMERIC_ROLLOUT,
        draw=draw,
        control_mean=control_mean,
        treatment_mean=treatment_mean,
        seed=seed,
        better=better,
    )
    assert monitoring.rolled_back >= 95, monitoring


def test_a_drop_at_the_tolerated_limit_is_rarely_rolled_back() -> None:
    # 5% tolerated, 5% lost: the hardest case for the guard, still at most alpha.
    monitoring = conversion_monitoring(
        runs=200,
        allocation=CONVERSION_ROLLOUT,
        control_rate=0.10,
        treatment_rate=0.095,
        seed=21,
        tolerance=0.05,
    )
    assert monitoring.rolled_back <= 10, monitoring


def test_a_treatment_better_than_control_is_never_rolled_back() -> None:
    monitoring = conversion_monitoring(
        runs=100, allocation=CONVERSION_ROLLOUT, control_rate=0.10, treatment_rate=0.11, seed=22
    )
    assert monitoring.rolled_back == 0, monitoring
