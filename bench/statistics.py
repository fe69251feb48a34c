"""How often flags.statistics is right, over many more simulated runs than the tests use.

The tests (tests/flags/test_statistics_simulation.py) check 100 to 2,000 seeded runs each;
this prints the same figures over thousands, so the docs can quote rates with small error.
`make bench-statistics`, about a minute on 2 cores.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from flags.statistics import Better  # noqa: E402
from tests.flags.simulations import (  # noqa: E402
    conversion_coverage,
    conversion_monitoring,
    exponential,
    lognormal,
    numeric_coverage,
    numeric_monitoring,
    sample_ratio_warnings,
    stepped_allocation,
)

CONVERSION_ROLLOUT = stepped_allocation(2000, [0.05, 0.25, 0.5], 30)
NUMERIC_ROLLOUT = stepped_allocation(1000, [0.05, 0.25, 0.5], 30)


def percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.1f}%"


def intervals() -> None:
    print("| metric | units per variant | runs | 95% interval covers the true lift | p < 0.05 |")
    print("|---|---|---|---|---|")
    conversions = [(300, 4000), (5000, 4000)]
    for units, runs in conversions:
        for treatment in (0.12, 0.10):
            coverage = conversion_coverage(
                runs=runs,
                units=units,
                control_rate=0.10,
                treatment_rate=treatment,
                seed=units + round(treatment * 100),
            )
            print(
                f"| conversion 10% vs {treatment:.0%} | {units:,} | {runs:,} "
                f"| {percent(coverage.covered, runs)} | {percent(coverage.significant, runs)} |"
            )
    for draw, units in [(exponential, 2000), (lognormal, 200), (lognormal, 2000)]:
        for treatment in (11.0, 10.0):
            runs = 10_000
            coverage = numeric_coverage(
                runs=runs,
                units=units,
                draw=draw,
                control_mean=10.0,
                treatment_mean=treatment,
                seed=units + round(treatment),
            )
            print(
                f"| {draw.__name__} mean 10 vs {treatment:g} | {units:,} | {runs:,} "
                f"| {percent(coverage.covered, runs)} | {percent(coverage.significant, runs)} |"
            )


def sample_ratios() -> None:
    print("| true split | weights | units | runs | warned |")
    print("|---|---|---|---|---|")
    cases = [
        ([0.52, 0.48], [50, 50], 100_000),
        ([0.505, 0.495], [50, 50], 100_000),
        ([0.5, 0.5], [50, 50], 100_000),
        ([0.2, 0.3, 0.5], [20, 30, 50], 30_000),
    ]
    for shares, weights, units in cases:
        runs = 10_000
        warned = sample_ratio_warnings(
            runs=runs, units=units, shares=shares, weights=weights, seed=units
        )
        split = "/".join(f"{share * 100:g}" for share in shares)
        print(
            f"| {split} | {'/'.join(map(str, weights))} | {units:,} | {runs:,} "
            f"| {percent(warned, runs)} |"
        )


def guarded_rollouts() -> None:
    print(
        "| metric | control → treatment | tolerance | runs | rolled back "
        "| median units at rollback | a fixed test at every check |"
    )
    print("|---|---|---|---|---|---|---|")
    conversions = [(0.10, 0.10, 0.0), (0.01, 0.01, 0.0), (0.10, 0.09, 0.0), (0.10, 0.095, 0.0)]
    conversions += [(0.10, 0.095, 0.05), (0.10, 0.09, 0.05), (0.10, 0.11, 0.0)]
    for control, treatment, tolerance in conversions:
        runs = 1000
        monitoring = conversion_monitoring(
            runs=runs,
            allocation=CONVERSION_ROLLOUT,
            control_rate=control,
            treatment_rate=treatment,
            seed=int(treatment * 1000),
            tolerance=tolerance,
        )
        median = f"{monitoring.median_units:,.0f}" if monitoring.median_units else "-"
        print(
            f"| conversion | {control:.1%} → {treatment:.1%} | {tolerance:.0%} | {runs:,} "
            f"| {percent(monitoring.rolled_back, runs)} | {median} "
            f"| {percent(monitoring.naive_rolled_back, runs)} |"
        )
    numerics = [
        ("lognormal, higher is better", lognormal, Better.HIGHER, 10.0, 10.0),
        ("lognormal, higher is better", lognormal, Better.HIGHER, 10.0, 9.0),
        ("exponential, lower is better", exponential, Better.LOWER, 100.0, 100.0),
        ("exponential, lower is better", exponential, Better.LOWER, 100.0, 110.0),
    ]
    for name, draw, better, control, treatment in numerics:
        runs = 500
        monitoring = numeric_monitoring(
            runs=runs,
            allocation=NUMERIC_ROLLOUT,
            draw=draw,
            control_mean=control,
            treatment_mean=treatment,
            seed=int(treatment),
            better=better,
        )
        median = f"{monitoring.median_units:,.0f}" if monitoring.median_units else "-"
        print(
            f"| {name} | {control:g} → {treatment:g} | 0% | {runs:,} "
            f"| {percent(monitoring.rolled_back, runs)} | {median} "
            f"| {percent(monitoring.naive_rolled_back, runs)} |"
        )


def main() -> None:
    started = time.perf_counter()
    for title, table in [
        ("Intervals and p-values", intervals),
        ("Sample ratio mismatch (warns at p < 0.001)", sample_ratios),
        (
            "Guarded rollouts (alpha 0.05; 5% → 25% → 50% of traffic, 30 checks each;"
            " 2,000 units a check for conversions, 1,000 for numeric metrics)",
            guarded_rollouts,
        ),
    ]:
        print(f"\n{title}\n")
        table()
    print(f"\n({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
