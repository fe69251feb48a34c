"""flags.statistics on fixed inputs: textbook values, edge cases, hostile input, purity."""

from __future__ import annotations

import ast
import math
import sys
from dataclasses import astuple

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from scipy import stats

from flags.statistics import (
    Better,
    Comparison,
    ConversionTotals,
    Decision,
    NumericTotals,
    compare_conversions,
    compare_numeric,
    guard_check,
    sample_ratio_mismatch,
)
from tests.without_django import ROOT, run_without_django


def numeric(values: list[float] | np.ndarray) -> NumericTotals:
    array = np.asarray(values, dtype=float)
    return NumericTotals(len(array), float(array.sum()), float((array * array).sum()))


def figures(comparison: Comparison) -> list[float]:
    interval = comparison.interval
    values = [
        comparison.control_value,
        comparison.treatment_value,
        comparison.absolute_lift,
        comparison.relative_lift,
        comparison.p_value,
        comparison.chance_to_beat_control,
        *((interval.low, interval.high) if interval else ()),
    ]
    return [value for value in values if value is not None]


# Purity


ALLOWED_IMPORTS = {"numpy", "scipy"}


def test_the_statistics_module_imports_nothing_from_django_or_the_project() -> None:
    tree = ast.parse((ROOT / "flags" / "statistics.py").read_text())
    imported = {
        (node.module or "").split(".")[0] if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    outside = {
        name.split(".")[0]
        for name in imported
        if name.split(".")[0] not in sys.stdlib_module_names and name != "__future__"
    }
    assert outside <= ALLOWED_IMPORTS, outside
    # Importing flags.statistics runs flags/__init__.py first: it must stay empty.
    assert (ROOT / "flags" / "__init__.py").read_text().strip() == ""


COMPARE = """
import sys

from flags.statistics import ConversionTotals, compare_conversions

result = compare_conversions(ConversionTotals(1000, 100), ConversionTotals(1000, 130))
assert 0 < result.p_value < 0.05, result
project = {"flagsite", "evaluation", "integrations", "flagclient"}
loaded = {name for name in sys.modules if name.split(".")[0] in project}
loaded |= {name for name in sys.modules if name.startswith("flags.") and name != "flags.statistics"}
assert not loaded, loaded
print("statistics ok without django")
"""


def test_the_statistics_module_runs_where_django_cannot_be_imported() -> None:
    run = run_without_django(COMPARE)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "statistics ok without django"


# Textbook values


def test_conversion_p_value_is_the_two_proportion_z_test() -> None:
    result = compare_conversions(ConversionTotals(2000, 200), ConversionTotals(2100, 250))
    # The two-proportion z-test is the chi-square test of the 2×2 table (z² = χ²).
    table = [[200, 1800], [250, 1850]]
    expected = stats.chi2_contingency(table, correction=False).pvalue
    assert result.p_value == pytest.approx(expected, rel=1e-9)
    assert result.control_value == 0.1
    assert result.absolute_lift == pytest.approx(250 / 2100 - 0.1)
    assert result.relative_lift == pytest.approx((250 / 2100) / 0.1 - 1)
    assert result.enough_data


def test_numeric_p_value_is_welchs_t_test_on_the_unit_values() -> None:
    rng = np.random.default_rng(11)
    control, treatment = rng.exponential(10, 300), rng.exponential(12, 500)
    result = compare_numeric(numeric(control), numeric(treatment))
    expected = stats.ttest_ind(treatment, control, equal_var=False).pvalue
    assert result.p_value == pytest.approx(expected, rel=1e-9)
    assert result.control_value == pytest.approx(control.mean())
    assert result.relative_lift == pytest.approx(treatment.mean() / control.mean() - 1)


def test_the_interval_solves_fiellers_equation_at_its_ends() -> None:
    control, treatment = ConversionTotals(5000, 500), ConversionTotals(5000, 600)
    result = compare_conversions(control, treatment)
    assert result.interval is not None
    z = stats.norm.ppf(0.975)
    var_c, var_t = 0.1 * 0.9 / 5000, 0.12 * 0.88 / 5000
    for lift in (result.interval.low, result.interval.high):
        ratio = 1 + lift
        assert (0.12 - ratio * 0.1) ** 2 == pytest.approx(z * z * (var_t + ratio**2 * var_c))
    assert result.relative_lift is not None
    assert result.interval.low < result.relative_lift < result.interval.high
    # Fieller's interval leans the way a ratio does: longer above the estimate than below.
    above = result.interval.high - result.relative_lift
    below = result.relative_lift - result.interval.low
    assert above > below


def test_chance_to_beat_control_matches_the_exact_value_for_the_smallest_posteriors() -> None:
    # Beta(2, 1) against Beta(1, 2): P(T > C) = 5/6.
    result = compare_conversions(ConversionTotals(1, 0), ConversionTotals(1, 1))
    assert result.chance_to_beat_control == pytest.approx(5 / 6, abs=1e-7)


def test_chance_to_beat_control_agrees_with_sampling_the_posteriors() -> None:
    rng = np.random.default_rng(5)
    # Unequal sizes, as in a stepped rollout, both ways round.
    for control, treatment in [((100_000, 10_000), (900, 99)), ((800, 80), (50_000, 5_150))]:
        result = compare_conversions(ConversionTotals(*control), ConversionTotals(*treatment))
        draws_c = rng.beta(1 + control[1], 1 + control[0] - control[1], 1_000_000)
        draws_t = rng.beta(1 + treatment[1], 1 + treatment[0] - treatment[1], 1_000_000)
        assert result.chance_to_beat_control == pytest.approx((draws_t > draws_c).mean(), abs=3e-3)


def test_lower_is_better_turns_the_chance_to_beat_control_around() -> None:
    control, treatment = ConversionTotals(1000, 100), ConversionTotals(1000, 120)
    higher = compare_conversions(control, treatment, better=Better.HIGHER)
    # The stored form of the direction, a plain string, works too.
    lower = compare_conversions(control, treatment, better="lower")  # type: ignore[arg-type]
    assert higher.chance_to_beat_control is not None and lower.chance_to_beat_control is not None
    assert higher.chance_to_beat_control > 0.9
    assert higher.chance_to_beat_control + lower.chance_to_beat_control == pytest.approx(1)
    # The lift and the p-value do not depend on the direction.
    assert (higher.relative_lift, higher.p_value) == (lower.relative_lift, lower.p_value)
    slower = compare_numeric(
        numeric([1.0, 2.0, 3.0]), numeric([2.0, 3.0, 4.0]), better=Better.LOWER
    )
    assert slower.chance_to_beat_control is not None and slower.chance_to_beat_control < 0.5


def test_numeric_results_do_not_depend_on_the_unit_of_the_values() -> None:
    rng = np.random.default_rng(3)
    control, treatment = rng.lognormal(0, 1, 400), rng.lognormal(0.1, 1, 400)
    plain = compare_numeric(numeric(control), numeric(treatment))
    # Values near the float limit's square root: their squares would overflow if summed naively.
    huge = compare_numeric(numeric(control * 1e150), numeric(treatment * 1e150))
    tiny = compare_numeric(numeric(control * 1e-150), numeric(treatment * 1e-150))
    for scaled in (huge, tiny):
        assert scaled.p_value == pytest.approx(plain.p_value, rel=1e-9)
        assert scaled.relative_lift == pytest.approx(plain.relative_lift, rel=1e-9)
        assert scaled.interval is not None and plain.interval is not None
        assert astuple(scaled.interval) == pytest.approx(astuple(plain.interval), rel=1e-9)
    assert huge.absolute_lift is not None and plain.absolute_lift is not None
    assert huge.absolute_lift == pytest.approx(plain.absolute_lift * 1e150, rel=1e-9)


def test_a_narrower_confidence_gives_a_narrower_interval() -> None:
    control, treatment = ConversionTotals(5000, 500), ConversionTotals(5000, 560)
    wide = compare_conversions(control, treatment, confidence=0.99).interval
    narrow = compare_conversions(control, treatment, confidence=0.80).interval
    assert wide is not None and narrow is not None
    assert wide.low < narrow.low < narrow.high < wide.high


# Edge cases: not enough data, never NaN


def test_a_variant_without_units_has_not_enough_data() -> None:
    result = compare_conversions(ConversionTotals(0, 0), ConversionTotals(100, 10))
    assert not result.enough_data
    assert result.reasons == ("not enough data: a variant has no units yet",)
    assert figures(result) == []
    assert result.treatment_units == 100
    numeric_result = compare_numeric(NumericTotals(0, 0, 0), numeric([1.0, 2.0]))
    assert numeric_result.reasons == ("not enough data: a variant has no units yet",)


def test_no_conversions_yet_gives_rates_but_no_test() -> None:
    result = compare_conversions(ConversionTotals(50, 0), ConversionTotals(60, 0))
    assert (result.control_value, result.treatment_value, result.absolute_lift) == (0, 0, 0)
    assert result.p_value is None and result.relative_lift is None and result.interval is None
    assert "not enough data: no unit has converted in either variant yet" in result.reasons
    assert result.chance_to_beat_control == pytest.approx(51 / 112)  # E[rate]s: 1/52 vs 1/62


def test_every_unit_converted_gives_no_test() -> None:
    result = compare_conversions(ConversionTotals(20, 20), ConversionTotals(30, 30))
    assert result.p_value is None
    assert result.reasons == ("not enough data: every unit has converted in both variants",)
    assert result.relative_lift == 0 and result.interval is not None
    assert result.interval.low == result.interval.high == 0


def test_a_control_without_conversions_has_a_p_value_but_no_relative_lift() -> None:
    result = compare_conversions(ConversionTotals(400, 0), ConversionTotals(400, 12))
    assert result.p_value is not None and result.p_value < 0.01
    assert result.relative_lift is None and result.interval is None
    assert result.reasons == (
        "not enough data: the control's value is 0, so a relative lift is undefined",
    )


def test_a_control_too_uncertain_for_a_bounded_interval_says_so() -> None:
    result = compare_conversions(ConversionTotals(10, 1), ConversionTotals(10, 5))
    assert result.relative_lift == pytest.approx(4.0)
    assert result.interval is None and result.p_value is not None
    assert result.reasons == (
        "not enough data: the control's value is too uncertain to bound the relative lift",
    )


def test_numeric_needs_two_units_per_variant() -> None:
    result = compare_numeric(numeric([5.0]), numeric([1.0, 2.0, 3.0]))
    assert result.reasons == (
        "not enough data: a numeric metric needs at least 2 units in each variant",
    )
    assert figures(result) == []


def test_numeric_values_that_do_not_vary_give_no_test() -> None:
    result = compare_numeric(numeric([2.0] * 10), numeric([3.0] * 10))
    assert result.reasons == ("not enough data: the values do not vary within either variant",)
    assert result.relative_lift == pytest.approx(0.5)
    assert result.p_value is None and result.interval is None
    assert result.chance_to_beat_control is None


def test_numeric_values_that_vary_in_one_variant_only_are_tested() -> None:
    result = compare_numeric(numeric([2.0] * 50), numeric([2.0, 3.0] * 25))
    assert result.enough_data
    assert result.p_value is not None and result.p_value < 1e-6


def test_a_numeric_control_at_zero_has_a_p_value_but_no_relative_lift() -> None:
    result = compare_numeric(numeric([-1.0, 1.0] * 20), numeric([0.0, 2.0] * 20))
    assert result.p_value is not None and result.relative_lift is None
    assert result.absolute_lift == pytest.approx(1.0)
    nearly = compare_numeric(numeric([0.0, 2.225073858507203e-309]), numeric([0.0, 1.0]))
    assert nearly.relative_lift is None and nearly.interval is None
    assert nearly.reasons == (
        "not enough data: the control's value is 0, so a relative lift is undefined",
    )


@settings(max_examples=300, deadline=None)
@given(
    st.integers(0, 60),
    st.integers(0, 60),
    st.integers(0, 60),
    st.integers(0, 60),
    st.sampled_from(list(Better)),
)
def test_conversion_figures_are_finite_and_in_range(
    units_c: int, conversions_c: int, units_t: int, conversions_t: int, better: Better
) -> None:
    control = ConversionTotals(units_c, min(conversions_c, units_c))
    treatment = ConversionTotals(units_t, min(conversions_t, units_t))
    result = compare_conversions(control, treatment, better=better)
    assert all(math.isfinite(value) for value in figures(result))
    assert result.enough_data == (not result.reasons)
    for probability in (result.p_value, result.chance_to_beat_control):
        assert probability is None or 0 <= probability <= 1
    if result.interval is not None:
        assert result.relative_lift in result.interval


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.floats(-1e6, 1e6), max_size=12),
    st.lists(st.floats(-1e6, 1e6), max_size=12),
)
# A control mean so near 0 (a subnormal float) that the relative lift would overflow.
@example([0.0, 2.225073858507203e-309], [0.0, 1.0])
def test_numeric_figures_are_finite_and_in_range(
    control: list[float], treatment: list[float]
) -> None:
    result = compare_numeric(numeric(control), numeric(treatment))
    assert all(math.isfinite(value) for value in figures(result))
    assert result.p_value is None or 0 <= result.p_value <= 1
    if result.interval is not None and result.relative_lift is not None:
        # Rounding in sums of values that differ by 12 orders of magnitude.
        assert result.interval.low - 1e-9 <= result.relative_lift <= result.interval.high + 1e-9


# Hostile input: a clear ValueError


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((-1, 0), "units must not be negative, got -1"),
        ((10, -2), "conversions must not be negative, got -2"),
        ((10, 11), r"conversions \(11\) must not exceed units \(10\)"),
        ((10.0, 1), "units must be a whole number, not 10.0"),
        ((float("nan"), 1), "units must be a whole number, not nan"),
        ((10, float("inf")), "conversions must be a whole number, not inf"),
        ((True, 0), "units must be a whole number, not True"),
        (("10", 1), "units must be a whole number, not '10'"),
        ((None, 1), "units must be a whole number, not None"),
        ((2**63, 1), "units is too large"),
    ],
)
def test_conversion_totals_refuse_impossible_counts(arguments: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ConversionTotals(*arguments)


def test_conversion_totals_accept_numpy_integers() -> None:
    totals = ConversionTotals(np.int64(10), np.int32(3))  # type: ignore[arg-type]
    assert (totals.units, totals.conversions) == (10, 3)
    assert type(totals.units) is int


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((10, float("nan"), 1.0), "total must be finite, got nan"),
        ((10, 1.0, float("inf")), "total_of_squares must be finite, got inf"),
        ((10, float("-inf"), 1.0), "total must be finite, got -inf"),
        ((10, 1.0, -1.0), "total_of_squares must not be negative"),
        ((0, 1.0, 1.0), "total and total_of_squares must be 0 with no units"),
        ((4, 8.0, 1.0), "total_of_squares is smaller than total²/units"),
        ((-3, 0.0, 0.0), "units must not be negative"),
        ((3, "1", 1.0), "total must be a number, not '1'"),
        ((3, 1.0, False), "total_of_squares must be a number, not False"),
        ((3, 1.0, 1e400), "total_of_squares must be finite, got inf"),
        ((3, 10**400, 1.0), "total is too large for a float"),
    ],
)
def test_numeric_totals_refuse_impossible_sums(arguments: tuple, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        NumericTotals(*arguments)


@pytest.mark.parametrize("confidence", [0, 1, 1.5, -0.1, float("nan"), "0.95", None])
def test_a_confidence_outside_zero_to_one_is_refused(confidence: object) -> None:
    with pytest.raises(ValueError, match="confidence must"):
        compare_conversions(
            ConversionTotals(10, 1),
            ConversionTotals(10, 2),
            confidence=confidence,  # type: ignore[arg-type]
        )


def test_an_unknown_direction_or_mixed_totals_are_refused() -> None:
    with pytest.raises(ValueError, match="'sideways' is not a valid Better"):
        compare_conversions(
            ConversionTotals(10, 1),
            ConversionTotals(10, 2),
            better="sideways",  # type: ignore[arg-type]
        )
    with pytest.raises(ValueError, match="compare_numeric takes NumericTotals"):
        compare_numeric(ConversionTotals(10, 1), numeric([1.0]))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="compare_conversions takes ConversionTotals"):
        compare_conversions(numeric([1.0]), ConversionTotals(10, 1))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="the same kind of totals"):
        guard_check(ConversionTotals(10, 1), numeric([1.0]))


# Sample ratio mismatch


def test_sample_ratio_p_value_is_the_chi_square_goodness_of_fit() -> None:
    result = sample_ratio_mismatch([2100, 2900, 5000], [20, 30, 50])
    assert result.expected == (2000, 3000, 5000)
    chi_square = 100**2 / 2000 + 100**2 / 3000
    assert result.p_value == pytest.approx(stats.chi2.sf(chi_square, 2))
    assert not result.mismatch and result.threshold == 0.001


def test_weights_near_the_float_limit_split_like_any_others() -> None:
    huge = sample_ratio_mismatch([5200, 4800], [1e308, 1e308])
    assert huge.expected == (5000, 5000) and huge.mismatch
    assert huge.p_value == sample_ratio_mismatch([5200, 4800], [1, 1]).p_value


def test_a_lopsided_split_is_a_mismatch() -> None:
    result = sample_ratio_mismatch([5200, 4800], [0.5, 0.5])
    assert result.mismatch and result.p_value is not None and result.p_value < 0.001


def test_units_in_a_variant_weighted_zero_are_a_mismatch_outright() -> None:
    result = sample_ratio_mismatch([500, 500, 1], [50, 50, 0])
    assert result.mismatch and result.p_value == 0


def test_a_variant_weighted_zero_without_units_is_left_out_of_the_test() -> None:
    assert sample_ratio_mismatch([500, 500, 0], [1, 1, 0]).p_value == 1.0
    assert sample_ratio_mismatch([1000, 0], [1, 0]).p_value == 1.0


def test_no_units_yet_is_no_mismatch() -> None:
    result = sample_ratio_mismatch([0, 0], [1, 1])
    assert not result.mismatch and result.p_value is None
    assert result.reason == "not enough data: no units yet"


@pytest.mark.parametrize(
    ("units", "weights", "message"),
    [
        ([10, 10], [1, 1, 1], "2 unit counts for 3 weights"),
        ([10], [1], "at least 2 variants"),
        ([10, -1], [1, 1], r"units\[1\] must not be negative"),
        ([10, 10], [1, -1], "weights must not be negative"),
        ([10, 10], [0, 0], "weights must add up to more than 0"),
        ([10, 10], [1, float("nan")], r"weights\[1\] must be finite"),
        ([10, 10], [1, 10**400], r"weights\[1\] is too large for a float"),
        ([10, 1.5], [1, 1], r"units\[1\] must be a whole number"),
        ("10", [1], "sequences of numbers"),
    ],
)
def test_sample_ratio_refuses_impossible_input(units: list, weights: list, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        sample_ratio_mismatch(units, weights)


def test_sample_ratio_threshold_is_checked() -> None:
    with pytest.raises(ValueError, match="threshold must be between 0 and 1"):
        sample_ratio_mismatch([1, 1], [1, 1], threshold=0)


# Guard checks


def test_a_guard_check_waits_for_enough_units() -> None:
    check = guard_check(ConversionTotals(99, 10), ConversionTotals(5000, 0))
    assert check.decision is Decision.CONTINUE
    assert check.p_value is None and check.interval is None
    assert check.reason == "not enough data: fewer than 100 units in a variant"
    assert guard_check(numeric([1.0, 2.0]), numeric([1.0, 3.0]), minimum_units=0).p_value


def test_a_guard_check_on_values_that_do_not_vary_waits() -> None:
    check = guard_check(ConversionTotals(500, 0), ConversionTotals(500, 0))
    assert check.decision is Decision.CONTINUE
    assert check.reason == "not enough data: the values do not vary yet"


def test_a_clear_regression_is_flagged_and_a_clear_improvement_is_not() -> None:
    worse = guard_check(ConversionTotals(20_000, 2000), ConversionTotals(20_000, 1700))
    assert worse.decision is Decision.REGRESSION
    assert worse.estimate == pytest.approx(-0.015)
    assert worse.interval is not None and worse.interval.high < 0
    better = guard_check(ConversionTotals(20_000, 1700), ConversionTotals(20_000, 2000))
    assert better.decision is Decision.CONTINUE
    assert better.p_value is not None and better.p_value < 0.05  # different, but not worse


def test_for_a_lower_is_better_metric_a_rise_is_the_regression() -> None:
    rng = np.random.default_rng(8)
    latency_c, latency_t = rng.exponential(100, 3000), rng.exponential(130, 3000)
    slower = guard_check(numeric(latency_c), numeric(latency_t), better=Better.LOWER)
    assert slower.decision is Decision.REGRESSION
    faster = guard_check(numeric(latency_t), numeric(latency_c), better=Better.LOWER)
    assert faster.decision is Decision.CONTINUE


def test_a_drop_within_the_tolerance_is_not_a_regression() -> None:
    control, treatment = ConversionTotals(10**6, 100_000), ConversionTotals(10**6, 97_000)
    assert guard_check(control, treatment).decision is Decision.REGRESSION
    tolerant = guard_check(control, treatment, relative_tolerance=0.05)
    assert tolerant.decision is Decision.CONTINUE
    assert tolerant.estimate == pytest.approx(0.097 - 0.95 * 0.1)
    absolute = guard_check(control, treatment, absolute_tolerance=0.005)
    assert absolute.decision is Decision.CONTINUE
    assert absolute.estimate == pytest.approx(0.097 - 0.1 + 0.005)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(100, 10**6),
    st.floats(0.01, 0.99),
    st.integers(100, 10**6),
    st.floats(0.01, 0.99),
    st.floats(0, 0.5),
)
def test_a_regression_is_exactly_an_always_valid_interval_below_zero(
    units_c: int, rate_c: float, units_t: int, rate_t: float, tolerance: float
) -> None:
    check = guard_check(
        ConversionTotals(units_c, round(units_c * rate_c)),
        ConversionTotals(units_t, round(units_t * rate_t)),
        relative_tolerance=tolerance,
    )
    assert check.interval is not None and check.estimate is not None
    assert check.p_value is not None and 0 <= check.p_value <= 1
    assert check.estimate in check.interval
    assert (check.decision is Decision.REGRESSION) == (check.interval.high <= 0)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"alpha": 0}, "alpha must be between 0 and 1"),
        ({"alpha": float("nan")}, "alpha must be finite"),
        ({"relative_tolerance": -0.1}, "relative_tolerance must be at least 0 and below 1"),
        ({"relative_tolerance": 1.0}, "relative_tolerance must be at least 0 and below 1"),
        ({"absolute_tolerance": -1}, "absolute_tolerance must not be negative"),
        ({"absolute_tolerance": float("inf")}, "absolute_tolerance must be finite"),
        ({"mixing_effect": 0}, "mixing_effect must be above 0"),
        ({"minimum_units": -5}, "minimum_units must not be negative"),
        ({"better": "up"}, "'up' is not a valid Better"),
    ],
)
def test_guard_check_refuses_impossible_settings(options: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        guard_check(ConversionTotals(1000, 100), ConversionTotals(1000, 90), **options)


def test_guard_checks_do_not_depend_on_the_unit_of_the_values() -> None:
    rng = np.random.default_rng(9)
    control, treatment = rng.exponential(100, 3000), rng.exponential(130, 3000)
    plain = guard_check(numeric(control), numeric(treatment), better=Better.LOWER)
    huge = guard_check(numeric(control * 1e150), numeric(treatment * 1e150), better=Better.LOWER)
    assert plain.decision is huge.decision is Decision.REGRESSION
    assert huge.p_value == pytest.approx(plain.p_value, rel=1e-9)
    assert plain.estimate is not None and plain.interval is not None and huge.interval is not None
    assert huge.estimate == pytest.approx(plain.estimate * 1e150, rel=1e-9)
    assert astuple(huge.interval) == pytest.approx(
        tuple(end * 1e150 for end in astuple(plain.interval)), rel=1e-9
    )
    absolute = guard_check(
        numeric(control * 1e150),
        numeric(treatment * 1e150),
        better=Better.LOWER,
        absolute_tolerance=50 * 1e150,
    )
    assert absolute.decision is Decision.CONTINUE
