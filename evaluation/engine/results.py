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


def error_result(flag_key: str, error_code: str, details: str) -> EvaluationResult:
    return EvaluationResult(flag_key, None, None, Reason.ERROR, None, error_code, details)
