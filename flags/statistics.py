"""The statistics of experiments and guarded rollouts, computed from per-variant aggregates.

Pure: imports only the standard library, numpy and scipy, nothing from Django or the rest of
the project, so that the experiment pages, the scheduler's guard checks and the simulation
tests all call the same functions with plain numbers. docs/experiment-statistics.md explains
the statistics in plain words and gives the formulas.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

import numpy as np
from scipy import stats

__all__ = [
    "DEFAULT_ALPHA",
    "DEFAULT_CONFIDENCE",
    "DEFAULT_MIXING_EFFECT",
    "DEFAULT_MINIMUM_UNITS",
    "SAMPLE_RATIO_THRESHOLD",
    "Better",
    "Comparison",
    "ConversionTotals",
    "Decision",
    "GuardCheck",
    "Interval",
    "NumericTotals",
    "SampleRatio",
    "Totals",
    "compare_conversions",
    "compare_numeric",
    "guard_check",
    "sample_ratio_mismatch",
]

DEFAULT_CONFIDENCE = 0.95
# A split this unlikely under the rollout's weights is a broken assignment or a broken count,
# not bad luck: the threshold most experimentation teams use (Kohavi et al., "Trustworthy
# Online Controlled Experiments", ch. 21), strict because the check runs on every page view.
SAMPLE_RATIO_THRESHOLD = 0.001
DEFAULT_ALPHA = 0.05
# The guard's mixture is tuned to changes of about 10% of the control's value: smaller ones
# take longer to flag, much larger ones are flagged almost as soon as they show.
DEFAULT_MIXING_EFFECT = 0.10
# Below this many units per variant the plug-in variances are too noisy to monitor on.
DEFAULT_MINIMUM_UNITS = 100
# Counts are stored as 64-bit integers; beyond that a count is a bug, not a sample.
_MAX_COUNT = 2**63 - 1


class Better(StrEnum):
    """Which way a metric should move for the treatment to count as an improvement."""

    HIGHER = "higher"
    LOWER = "lower"


class Decision(StrEnum):
    """What a guard check tells the rollout to do."""

    CONTINUE = "continue"
    REGRESSION = "regression"


def _count(value: object, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{field} must be a whole number, not {value!r}")
    count = int(value)
    if count < 0:
        raise ValueError(f"{field} must not be negative, got {count}")
    if count > _MAX_COUNT:
        raise ValueError(f"{field} is too large ({count} > {_MAX_COUNT})")
    return count


def _number(value: object, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{field} must be a number, not {value!r}")
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(f"{field} is too large for a float") from None
    if not math.isfinite(number):
        raise ValueError(f"{field} must be finite, got {number}")
    return number


def _fraction(value: object, field: str) -> float:
    number = _number(value, field)
    if not 0.0 < number < 1.0:
        raise ValueError(f"{field} must be between 0 and 1 (exclusive), got {number}")
    return number


@dataclass(frozen=True)
class ConversionTotals:
    """One variant of a conversion metric: units exposed, and how many of them converted."""

    units: int
    conversions: int

    def __post_init__(self) -> None:
        units = _count(self.units, "units")
        conversions = _count(self.conversions, "conversions")
        if conversions > units:
            raise ValueError(f"conversions ({conversions}) must not exceed units ({units})")
        object.__setattr__(self, "units", units)
        object.__setattr__(self, "conversions", conversions)

    @property
    def value(self) -> float:
        """The conversion rate (0 with no units)."""
        return self.conversions / self.units if self.units else 0.0

    @property
    def variance(self) -> float:
        """The per-unit variance of converting, p(1 - p)."""
        return self.value * (1.0 - self.value)


@dataclass(frozen=True)
class NumericTotals:
    """One variant of a numeric metric: units, and the sum and sum of squares of their values.

    A unit's value is the metric's sum or mean over that unit's events (0 for a unit with
    none, if that is what the metric means): these are sums over units, not over events.
    """

    units: int
    total: float
    total_of_squares: float

    def __post_init__(self) -> None:
        units = _count(self.units, "units")
        total = _number(self.total, "total")
        squares = _number(self.total_of_squares, "total_of_squares")
        if squares < 0:
            raise ValueError(f"total_of_squares must not be negative, got {squares}")
        if units == 0 and (total or squares):
            raise ValueError("total and total_of_squares must be 0 with no units")
        # Cauchy-Schwarz: the mean of the squares is at least the square of the mean. Summing
        # in floating point loses a little, hence the slack.
        mean = total / units if units else 0.0
        if squares / max(units, 1) < mean * mean * (1 - 1e-9) - 1e-300:
            raise ValueError(
                "total_of_squares is smaller than total²/units: not the sums of one set of values"
            )
        object.__setattr__(self, "units", units)
        object.__setattr__(self, "total", total)
        object.__setattr__(self, "total_of_squares", squares)

    @property
    def value(self) -> float:
        """The mean per unit (0 with no units)."""
        return self.total / self.units if self.units else 0.0

    @property
    def variance(self) -> float:
        """The sample variance of the per-unit values (0 with fewer than two units)."""
        if self.units < 2:
            return 0.0
        mean = self.value
        # Clamped: with identical values, rounding can leave a tiny negative difference.
        return max(0.0, (self.total_of_squares - self.total * mean) / (self.units - 1))

    def scaled(self, scale: float) -> NumericTotals:
        """The same values divided by ``scale``: keeps squares of huge values finite."""
        return NumericTotals(self.units, self.total / scale, self.total_of_squares / scale**2)


Totals = ConversionTotals | NumericTotals


@dataclass(frozen=True)
class Interval:
    low: float
    high: float

    def __contains__(self, value: object) -> bool:
        return isinstance(value, int | float) and self.low <= value <= self.high


@dataclass(frozen=True)
class Comparison:
    """A treatment against the control on one metric.

    ``value`` is the conversion rate or the mean per unit. Any figure that the data cannot
    support yet is None, and ``reasons`` says why in words a page can show.
    """

    control_units: int
    treatment_units: int
    control_value: float | None
    treatment_value: float | None
    absolute_lift: float | None
    relative_lift: float | None
    interval: Interval | None
    p_value: float | None
    chance_to_beat_control: float | None
    confidence: float
    reasons: tuple[str, ...] = ()

    @property
    def enough_data(self) -> bool:
        return not self.reasons


@dataclass(frozen=True)
class SampleRatio:
    """Whether the units split the way the rollout's weights say they should."""

    observed: tuple[int, ...]
    expected: tuple[float, ...]
    p_value: float | None
    mismatch: bool
    threshold: float
    reason: str = ""


@dataclass(frozen=True)
class GuardCheck:
    """One check of a guard metric during a rollout, on the cumulative aggregates so far.

    ``p_value`` is always valid: however often the rollout checks, the chance that any check
    of a treatment within tolerance ever shows ``p_value <= alpha`` is at most alpha.
    ``estimate`` is the treatment's margin over the tolerated limit in the metric's own units
    (negative when the treatment looks worse than tolerated), with ``interval`` its
    always-valid confidence interval at level 1 - alpha.
    """

    decision: Decision
    p_value: float | None
    estimate: float | None
    interval: Interval | None
    alpha: float
    control_units: int
    treatment_units: int
    reason: str = ""


def _checked_confidence(confidence: float) -> float:
    return _fraction(confidence, "confidence")


def _relative(difference: float, control: float) -> float | None:
    """(t - c)/|c|; None for a control at 0, or so near it that the ratio overflows."""
    lift = difference / abs(control) if control else math.inf
    return lift if math.isfinite(lift) else None


def _fieller(
    control: float,
    control_variance: float,
    treatment: float,
    treatment_variance: float,
    quantile: float,
) -> Interval | None:
    """Fieller's interval for the relative lift (t - c)/|c| of two independent means.

    The set of ratios r with (t - r·c)² ≤ q²·(var t + r²·var c): a quadratic in r, bounded
    only when the control's mean is itself clearly away from zero (None otherwise).
    """
    q2 = quantile * quantile
    a = control * control - q2 * control_variance
    if a <= 0:
        return None
    spread = treatment**2 * control_variance + control**2 * treatment_variance
    spread -= q2 * control_variance * treatment_variance
    root = quantile * math.sqrt(max(0.0, spread))
    low_ratio = (treatment * control - root) / a
    high_ratio = (treatment * control + root) / a
    if not (math.isfinite(low_ratio) and math.isfinite(high_ratio)):
        return None
    if control > 0:
        return Interval(low_ratio - 1.0, high_ratio - 1.0)
    return Interval(1.0 - high_ratio, 1.0 - low_ratio)


def _toward_better(chance_higher: float, better: Better) -> float:
    return chance_higher if better is Better.HIGHER else 1.0 - chance_higher


# Gauss-Legendre nodes and weights, moved from [-1, 1] to [0, 1].
_NODES, _WEIGHTS = np.polynomial.legendre.leggauss(256)
_QUANTILES, _QUANTILE_WEIGHTS = (_NODES + 1) / 2, _WEIGHTS / 2


def _posterior(totals: ConversionTotals) -> tuple[int, int]:
    """The Beta posterior's parameters from a uniform prior: 1 + conversions, 1 + misses."""
    return 1 + totals.conversions, 1 + totals.units - totals.conversions


def _chance_conversion_higher(control: ConversionTotals, treatment: ConversionTotals) -> float:
    """P(treatment's rate > control's) under independent Beta(1 + conversions, 1 + misses).

    P(T > C) = E[P(T > c) at c = C], integrated over the quantiles of whichever posterior is
    narrower: the other's distribution function then changes slowly across them, so the
    integrand is smooth and a fixed Gauss-Legendre rule is accurate to about 7 digits.
    """
    posterior_c = stats.beta(*_posterior(control))
    posterior_t = stats.beta(*_posterior(treatment))
    if posterior_c.std() <= posterior_t.std():
        chance = np.dot(_QUANTILE_WEIGHTS, posterior_t.sf(posterior_c.ppf(_QUANTILES)))
    else:
        chance = 1.0 - np.dot(_QUANTILE_WEIGHTS, posterior_c.sf(posterior_t.ppf(_QUANTILES)))
    return min(1.0, max(0.0, float(chance)))


def _without_data(control: Totals, treatment: Totals, confidence: float, reason: str) -> Comparison:
    return Comparison(
        control_units=control.units,
        treatment_units=treatment.units,
        control_value=None,
        treatment_value=None,
        absolute_lift=None,
        relative_lift=None,
        interval=None,
        p_value=None,
        chance_to_beat_control=None,
        confidence=confidence,
        reasons=(reason,),
    )


NO_UNITS = "not enough data: a variant has no units yet"
NO_CONVERSIONS = "not enough data: no unit has converted in either variant yet"
ALL_CONVERTED = "not enough data: every unit has converted in both variants"
CONTROL_ZERO = "not enough data: the control's value is 0, so a relative lift is undefined"
CONTROL_UNCERTAIN = (
    "not enough data: the control's value is too uncertain to bound the relative lift"
)
TOO_FEW_UNITS = "not enough data: a numeric metric needs at least 2 units in each variant"
NO_VARIATION = "not enough data: the values do not vary within either variant"


def compare_conversions(
    control: ConversionTotals,
    treatment: ConversionTotals,
    *,
    better: Better = Better.HIGHER,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Comparison:
    """A treatment's conversion rate against the control's.

    p-value: the two-proportion z-test (pooled rate). Interval: Fieller's, on the relative
    lift. Chance to beat control: Beta(1, 1) priors, in the direction ``better`` says.
    """
    if not isinstance(control, ConversionTotals) or not isinstance(treatment, ConversionTotals):
        raise ValueError("compare_conversions takes ConversionTotals for both variants")
    confidence = _checked_confidence(confidence)
    better = Better(better)
    if not control.units or not treatment.units:
        return _without_data(control, treatment, confidence, NO_UNITS)
    reasons: list[str] = []
    rate_c, rate_t = control.value, treatment.value
    difference = rate_t - rate_c

    pooled = (control.conversions + treatment.conversions) / (control.units + treatment.units)
    p_value: float | None = None
    if pooled == 0:
        reasons.append(NO_CONVERSIONS)
    elif pooled == 1:
        reasons.append(ALL_CONVERTED)
    else:
        error = math.sqrt(pooled * (1 - pooled) * (1 / control.units + 1 / treatment.units))
        p_value = float(2 * stats.norm.sf(abs(difference) / error))

    relative = _relative(difference, rate_c)
    interval: Interval | None = None
    if relative is None:
        reasons.append(CONTROL_ZERO)
    else:
        quantile = float(stats.norm.ppf(0.5 + confidence / 2))
        interval = _fieller(
            rate_c,
            control.variance / control.units,
            rate_t,
            treatment.variance / treatment.units,
            quantile,
        )
        if interval is None:
            reasons.append(CONTROL_UNCERTAIN)

    chance = _toward_better(_chance_conversion_higher(control, treatment), better)
    return Comparison(
        control_units=control.units,
        treatment_units=treatment.units,
        control_value=rate_c,
        treatment_value=rate_t,
        absolute_lift=difference,
        relative_lift=relative,
        interval=interval,
        p_value=p_value,
        chance_to_beat_control=chance,
        confidence=confidence,
        reasons=tuple(dict.fromkeys(reasons)),
    )


def _common_scale(control: NumericTotals, treatment: NumericTotals) -> float:
    """The larger root mean square of the two variants' values (1 if all are 0).

    Every figure but those in the metric's own units is unchanged by scaling both variants
    alike; scaled to a root mean square of 1, squares of values near the float limit stay
    finite through the arithmetic.
    """
    squares = max(
        control.total_of_squares / max(control.units, 1),
        treatment.total_of_squares / max(treatment.units, 1),
    )
    return math.sqrt(squares) if squares > 0 else 1.0


def compare_numeric(
    control: NumericTotals,
    treatment: NumericTotals,
    *,
    better: Better = Better.HIGHER,
    confidence: float = DEFAULT_CONFIDENCE,
) -> Comparison:
    """A treatment's mean per unit against the control's.

    p-value: Welch's t-test. Interval: Fieller's on the relative lift, with the t quantile at
    Welch's degrees of freedom. Chance to beat control: the normal approximation of the
    difference of means (flat prior), in the direction ``better`` says.
    """
    if not isinstance(control, NumericTotals) or not isinstance(treatment, NumericTotals):
        raise ValueError("compare_numeric takes NumericTotals for both variants")
    confidence = _checked_confidence(confidence)
    better = Better(better)
    if not control.units or not treatment.units:
        return _without_data(control, treatment, confidence, NO_UNITS)
    if control.units < 2 or treatment.units < 2:
        return _without_data(control, treatment, confidence, TOO_FEW_UNITS)
    scale = _common_scale(control, treatment)
    scaled_c, scaled_t = control.scaled(scale), treatment.scaled(scale)
    mean_c, mean_t = scaled_c.value, scaled_t.value
    error_c = scaled_c.variance / control.units
    error_t = scaled_t.variance / treatment.units
    difference = mean_t - mean_c
    comparison = Comparison(
        control_units=control.units,
        treatment_units=treatment.units,
        control_value=control.value,
        treatment_value=treatment.value,
        absolute_lift=difference * scale,
        relative_lift=_relative(difference, mean_c),
        interval=None,
        p_value=None,
        chance_to_beat_control=None,
        confidence=confidence,
        reasons=(),
    )
    if error_c + error_t == 0:
        reasons = (
            (NO_VARIATION,)
            if comparison.relative_lift is not None
            else (NO_VARIATION, CONTROL_ZERO)
        )
        return replace(comparison, reasons=reasons)

    welch = stats.ttest_ind_from_stats(
        mean_t,
        math.sqrt(scaled_t.variance),
        treatment.units,
        mean_c,
        math.sqrt(scaled_c.variance),
        control.units,
        equal_var=False,
    )
    freedom = (error_c + error_t) ** 2 / (
        error_c**2 / (control.units - 1) + error_t**2 / (treatment.units - 1)
    )
    chance_higher = float(stats.norm.cdf(difference / math.sqrt(error_c + error_t)))
    reasons_list: list[str] = []
    interval: Interval | None = None
    if comparison.relative_lift is None:
        reasons_list.append(CONTROL_ZERO)
    else:
        quantile = float(stats.t.ppf(0.5 + confidence / 2, freedom))
        interval = _fieller(mean_c, error_c, mean_t, error_t, quantile)
        if interval is None:
            reasons_list.append(CONTROL_UNCERTAIN)
    return replace(
        comparison,
        p_value=float(welch.pvalue),
        interval=interval,
        chance_to_beat_control=_toward_better(chance_higher, better),
        reasons=tuple(reasons_list),
    )


def sample_ratio_mismatch(
    units: Sequence[int],
    weights: Sequence[float],
    *,
    threshold: float = SAMPLE_RATIO_THRESHOLD,
) -> SampleRatio:
    """Chi-square goodness of fit of the units per variant against the rollout's weights.

    ``mismatch`` is True when the split is less likely than ``threshold`` under the weights:
    the assignment or the counting is broken and the experiment's results cannot be trusted.
    A variant with weight 0 that has units is a mismatch outright.
    """
    threshold = _fraction(threshold, "threshold")
    if isinstance(units, str | bytes) or isinstance(weights, str | bytes):
        raise ValueError("units and weights must be sequences of numbers")
    counts = tuple(_count(value, f"units[{index}]") for index, value in enumerate(units))
    shares = tuple(_number(value, f"weights[{index}]") for index, value in enumerate(weights))
    if len(counts) != len(shares):
        raise ValueError(f"{len(counts)} unit counts for {len(shares)} weights")
    if len(counts) < 2:
        raise ValueError("a sample ratio check needs at least 2 variants")
    if any(share < 0 for share in shares):
        raise ValueError("weights must not be negative")
    largest = max(shares)
    if largest <= 0:
        raise ValueError("weights must add up to more than 0")
    # Relative to the largest first, so that weights near the float limit cannot sum to inf.
    weight_sum = sum(share / largest for share in shares)
    total = sum(counts)
    expected = tuple(total * (share / largest) / weight_sum for share in shares)
    result = SampleRatio(counts, expected, None, False, threshold)
    if any(count and not share for count, share in zip(counts, shares, strict=True)):
        return replace(result, p_value=0.0, mismatch=True)
    served = [(count, share) for count, share in zip(counts, expected, strict=True) if share]
    if not total:
        return replace(result, reason="not enough data: no units yet")
    if len(served) < 2:
        return replace(result, p_value=1.0)
    fit = stats.chisquare([count for count, _ in served], [share for _, share in served])
    p_value = float(fit.pvalue)
    return replace(result, p_value=p_value, mismatch=p_value < threshold)


def _combined(control: Totals, treatment: Totals) -> Totals:
    if isinstance(control, ConversionTotals) and isinstance(treatment, ConversionTotals):
        return ConversionTotals(
            control.units + treatment.units, control.conversions + treatment.conversions
        )
    assert isinstance(control, NumericTotals) and isinstance(treatment, NumericTotals)
    return NumericTotals(
        control.units + treatment.units,
        control.total + treatment.total,
        control.total_of_squares + treatment.total_of_squares,
    )


def _contrast(
    control: Totals,
    treatment: Totals,
    better: Better,
    relative_tolerance: float,
    absolute_tolerance: float,
) -> tuple[float, float]:
    """The treatment's margin over the tolerated limit, and its estimated variance.

    Higher is better: treatment - (1 - relative)·control + absolute, so a negative margin
    means worse than tolerated; lower is better: (1 + relative)·control + absolute -
    treatment. A linear combination of the two means, so its variance needs no plug-in of
    the control's mean.

    No variant's variance is taken below that of both variants' units together: early in a
    rollout the treatment has few units, and a few values that happen to agree (or no
    conversion yet) would otherwise make a chance dip look certain.
    """
    pooled = _combined(control, treatment).variance
    var_c = max(control.variance, pooled) / control.units
    var_t = max(treatment.variance, pooled) / treatment.units
    if better is Better.HIGHER:
        weight = 1.0 - relative_tolerance
        margin = treatment.value - weight * control.value + absolute_tolerance
    else:
        weight = 1.0 + relative_tolerance
        margin = weight * control.value + absolute_tolerance - treatment.value
    return margin, var_t + weight * weight * var_c


def guard_check(
    control: Totals,
    treatment: Totals,
    *,
    better: Better = Better.HIGHER,
    relative_tolerance: float = 0.0,
    absolute_tolerance: float = 0.0,
    alpha: float = DEFAULT_ALPHA,
    mixing_effect: float = DEFAULT_MIXING_EFFECT,
    minimum_units: int = DEFAULT_MINIMUM_UNITS,
) -> GuardCheck:
    """Has the treatment regressed beyond tolerance? Safe to call at every check of a rollout.

    A mixture sequential probability ratio test (mSPRT, Johari et al., "Always Valid
    Inference", 2017) of "the treatment is no worse than the tolerated limit", on the
    cumulative aggregates of both variants. The tolerance is relative (0.05: up to 5% worse
    than the control is acceptable) and/or absolute, in the metric's units. The normal
    mixing distribution has a standard deviation of ``mixing_effect`` times the control's
    value. The decision is REGRESSION once the always-valid p-value is at most ``alpha``
    with the treatment on the worse side; the rollout should then pause or roll back.
    """
    if type(control) is not type(treatment) or not isinstance(
        control, ConversionTotals | NumericTotals
    ):
        raise ValueError("guard_check takes the same kind of totals for both variants")
    better = Better(better)
    alpha = _fraction(alpha, "alpha")
    relative_tolerance = _number(relative_tolerance, "relative_tolerance")
    absolute_tolerance = _number(absolute_tolerance, "absolute_tolerance")
    if not 0.0 <= relative_tolerance < 1.0:
        raise ValueError(
            f"relative_tolerance must be at least 0 and below 1, got {relative_tolerance}"
        )
    if absolute_tolerance < 0:
        raise ValueError(f"absolute_tolerance must not be negative, got {absolute_tolerance}")
    mixing_effect = _number(mixing_effect, "mixing_effect")
    if mixing_effect <= 0:
        raise ValueError(f"mixing_effect must be above 0, got {mixing_effect}")
    minimum_units = _count(minimum_units, "minimum_units")

    waiting = GuardCheck(Decision.CONTINUE, None, None, None, alpha, control.units, treatment.units)
    if min(control.units, treatment.units) < max(2, minimum_units):
        return replace(
            waiting,
            reason=f"not enough data: fewer than {max(2, minimum_units)} units in a variant",
        )
    scale = 1.0
    if isinstance(control, NumericTotals) and isinstance(treatment, NumericTotals):
        scale = _common_scale(control, treatment)
        control, treatment = control.scaled(scale), treatment.scaled(scale)
    margin, variance = _contrast(
        control, treatment, better, relative_tolerance, absolute_tolerance / scale
    )
    if variance <= 0:
        return replace(waiting, reason="not enough data: the values do not vary yet")
    mixing = (mixing_effect * abs(control.value)) ** 2
    if mixing <= 0:
        # A control at 0: tune the mixture to the same share of a unit's standard deviation.
        mixing = (mixing_effect * math.sqrt(control.variance)) ** 2
    if mixing <= 0:
        return replace(waiting, reason="not enough data: the control does not vary yet")
    # log Λ = ½·log(V/(V+τ²)) + τ²·margin²/(2·V·(V+τ²)), in logs so it never overflows.
    log_ratio = 0.5 * math.log(variance / (variance + mixing)) + mixing * margin**2 / (
        2 * variance * (variance + mixing)
    )
    p_value = float(min(1.0, np.exp(-log_ratio)))
    # The confidence sequence: the margins whose own test would not reject at alpha.
    half_width = math.sqrt(
        variance
        * (variance + mixing)
        / mixing
        * (2 * math.log(1 / alpha) + math.log((variance + mixing) / variance))
    )
    regressed = p_value <= alpha and margin < 0
    return replace(
        waiting,
        decision=Decision.REGRESSION if regressed else Decision.CONTINUE,
        p_value=p_value,
        estimate=margin * scale,
        interval=Interval((margin - half_width) * scale, (margin + half_width) * scale),
    )
