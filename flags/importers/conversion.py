"""What an importer returns, and the small pieces every importer shares."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any, TypedDict

from django.core.exceptions import ValidationError

# Past this many alternative condition lists one foreign rule becomes, the flag is refused.
MAX_ALTERNATIVES = 64
MAX_FLAGS = 10_000
_KEY = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}\Z")


class Unsupported(Exception):
    """A flag that cannot be expressed; its message is the reason the report shows."""


@dataclass
class Conversion:
    """A flag document, the flags left out with their reasons, and the keys given to names."""

    document: dict[str, Any]
    skipped: dict[str, str] = field(default_factory=dict)  # foreign name -> reason
    keys: dict[str, str] = field(default_factory=dict)  # foreign name -> flag key

    @classmethod
    def empty(cls) -> Conversion:
        """A conversion of no flags yet: the importer adds them one by one."""
        return cls({"schemaVersion": 1, "flags": {}, "segments": {}})

    def to_dict(self) -> dict[str, Any]:
        return {
            "flags": len(self.document["flags"]),
            "skipped": [{"flag": name, "reason": why} for name, why in self.skipped.items()],
            "keys": self.keys,
        }


def flag_key_of(name: Any, taken: set[str]) -> str:
    """The flag key of a foreign flag name: the name, lower-cased, when it is a valid key."""
    if not isinstance(name, str) or not name:
        raise Unsupported("its name is not a non-empty string")
    key = name.lower()
    if not _KEY.match(key):
        raise Unsupported(
            "its name is no flag key (lowercase letters, digits, '-', '_', '.', up to 100)"
        )
    if key in taken:
        raise Unsupported(f"its key {key!r} is another flag's, ignoring case")
    return key


def export_object(data: Any, required: str, message: str) -> dict[str, Any]:
    """The export as a JSON object holding `required`; a ValidationError naming it otherwise.

    What every importer checks first, so that a file of another system (or no export at
    all) is a clean error naming what is missing, not a conversion of nothing.
    """
    data = require_object(data, "document")
    if required not in data:
        raise ValidationError({required: message})
    return data


def percentage(value: Any, what: str) -> int | float:
    """A percentage from 0 to 100 given as a number or its text; Unsupported otherwise."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise Unsupported(f"{what} is not a number: {value!r}") from None
    if not 0 <= number <= 100:
        raise Unsupported(f"{what} is not from 0 to 100: {value!r}")
    return int(number) if number.is_integer() else number


def require_list(value: Any, field_name: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ValidationError({field_name: "must be a list"})
    return value


def require_object(value: Any, field_name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ValidationError({field_name: "must be a JSON object"})
    return value


Alternatives = list[list[dict[str, Any]]]


class RolloutEntry(TypedDict):
    """One variant's share of a rollout, as the flag document spells it."""

    variant: str
    weight: int


def all_of(parts: list[Alternatives]) -> Alternatives:
    """Conditions in disjunctive form: each part holds when one of its alternatives does."""
    combined: Alternatives = [[]]
    for alternatives in parts:
        combined = [left + right for left, right in itertools.product(combined, alternatives)]
        if len(combined) > MAX_ALTERNATIVES:
            raise Unsupported(f"its conditions expand to more than {MAX_ALTERNATIVES} rules")
    return combined


def condition(
    attribute: str, operator: str, values: list[Any], negate: bool = False
) -> dict[str, Any]:
    return {"attribute": attribute, "operator": operator, "values": values, "negate": negate}


def absent(attribute: str) -> dict[str, Any]:
    return {"attribute": attribute, "operator": "not_exists", "values": [], "negate": False}


def present(attribute: str) -> dict[str, Any]:
    return {"attribute": attribute, "operator": "exists", "values": [], "negate": False}
