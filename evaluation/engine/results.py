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


# The slots of a result, set directly: a frozen dataclass's __init__ sets each field
# through object.__setattr__, at twice the cost, and a compile makes thousands of results.
_new = object.__new__
_SETTERS = tuple(
    EvaluationResult.__dict__[name].__set__
    for name in ("flag_key", "value", "variant", "reason", "rule_id", "error_code", "error_details")
)


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
    made = _new(EvaluationResult)
    set_flag_key, set_value, set_variant, set_reason, set_rule, set_code, set_details = _SETTERS
    set_flag_key(made, flag_key)
    set_value(made, value)
    set_variant(made, variant)
    set_reason(made, reason)
    set_rule(made, rule_id)
    set_code(made, error_code)
    set_details(made, error_details)
    return made


def error_result(flag_key: str, error_code: str, details: str) -> EvaluationResult:
    return result(flag_key, None, None, Reason.ERROR, None, error_code, details)
