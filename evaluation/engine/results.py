"""The outcome of one evaluation and the vocabularies (reasons, error codes) it uses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class Reason:
    """Why a value was served; the names are OpenFeature's resolution reasons."""

    __slots__ = ()

    TARGETING_MATCH = "TARGETING_MATCH"
    SPLIT = "SPLIT"
    DEFAULT = "DEFAULT"
    DISABLED = "DISABLED"
    PREREQUISITE_FAILED = "PREREQUISITE_FAILED"
    ERROR = "ERROR"


class ErrorCode:
    """Why no value was served; the names are OpenFeature's error codes."""

    __slots__ = ()

    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    PARSE_ERROR = "PARSE_ERROR"
    INVALID_CONTEXT = "INVALID_CONTEXT"
    GENERAL = "GENERAL"


@dataclass(frozen=True, slots=True)
class EvaluationResult:
    """One flag's value for one context.

    Results are shared between calls (the engine builds them once, at compile time), so
    treat `value` as read-only even when it is a JSON object.
    """

    flag_key: str
    value: Any
    variant: str | None
    reason: str
    rule_id: str | None = None
    error_code: str | None = None
    error_details: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "flag_key": self.flag_key,
            "value": self.value,
            "variant": self.variant,
            "reason": self.reason,
            "rule_id": self.rule_id,
            "error_code": self.error_code,
            "error_details": self.error_details,
        }


class _Draft:
    """A result being made: the slots of `EvaluationResult`, in the same order, but not
    frozen. `result` sets them as plain attributes, then makes the object the frozen
    class it has the layout of (Python checks the layouts match): a frozen dataclass's
    __init__ sets each field through object.__setattr__, at more than twice the cost, and a
    compile makes thousands of results."""

    __slots__ = (
        "flag_key",
        "value",
        "variant",
        "reason",
        "rule_id",
        "error_code",
        "error_details",
    )
    flag_key: str
    value: Any
    variant: str | None
    reason: str
    rule_id: str | None
    error_code: str | None
    error_details: str | None


def result(
    flag_key: str,
    value: Any,
    variant: str | None,
    reason: str,
    rule_id: str | None = None,
    error_code: str | None = None,
    error_details: str | None = None,
) -> EvaluationResult:
    """`EvaluationResult(...)` with the same fields, made faster (still frozen)."""
    made = _Draft()
    made.flag_key = flag_key
    made.value = value
    made.variant = variant
    made.reason = reason
    made.rule_id = rule_id
    made.error_code = error_code
    made.error_details = error_details
    made.__class__ = EvaluationResult  # type: ignore[assignment]
    return made  # type: ignore[return-value]


def error_result(flag_key: str, error_code: str, details: str) -> EvaluationResult:
    return result(flag_key, None, None, Reason.ERROR, None, error_code, details)
