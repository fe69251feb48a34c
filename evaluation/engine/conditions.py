"""Condition operators: validation and compilation of conditions into predicates."""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import re2

from .bucketing import RANDOM_ATTRIBUTE, bucket_value_of, flagsmith_percentage, unleash_normalized
from .dates import timestamp
from .errors import DocumentError
from .semver import parse_version
from .text import require_text

Context = Mapping[str, Any]
Predicate = Callable[[Context], bool]
ValueTest = Callable[[Any], bool]
# A fresh random bucket value at each call: what the `$random` attribute reads.
Draw = Callable[[], str]


class SharedContext(dict[str, Any]):
    """A copy of a context evaluated for many flags at once (`Snapshot.evaluate_all`), with
    the answer of each segment read so far: a segment shared by many flags is matched once.

    A mapping like the context itself to every condition; only a segment looks at
    `segments` (see `snapshot._compile_segment`).
    """

    __slots__ = ("segments",)

    def __init__(self, context: Mapping[str, Any]) -> None:
        super().__init__(context)
        self.segments: dict[object, bool] = {}


@dataclass(frozen=True, slots=True)
class Operator:
    """What an operator needs; the Django side lists these as the operator choices."""

    name: str
    takes_attribute: bool
    takes_values: bool
    description: str


@dataclass(frozen=True, slots=True)
class ParsedCondition:
    """A validated condition, ready to be bound to a snapshot's segments."""

    attribute: str | None
    operator: str
    test: ValueTest | None  # None for exists / not_exists / in_segment
    flip: bool  # negate, xor the operator being a negative one (not_in, not_exists, ...)
    segment_keys: tuple[str, ...]
    strings: frozenset[str] | None = None  # equality over strings only: the values


# --- value parsing (compile time) ---------------------------------------------------------


def _is_number(value: object) -> bool:
    cls = value.__class__
    return (cls is int or cls is float) and not (cls is float and math.isnan(value))  # type: ignore[arg-type]


def _require_strings(values: list[Any], what: str) -> list[str]:
    for value in values:
        if value.__class__ is not str:
            raise DocumentError("values", f"{what} takes strings, got {value!r}")
        require_text(value, "values")
    return values


# A value test that does not match a string must still look at it: a string that is not
# valid Unicode is an invalid context, not a mismatch, so the tests encode a string that is
# not ASCII, and the UnicodeEncodeError of a lone surrogate ends the evaluation with
# INVALID_CONTEXT (Snapshot.evaluate). Inline, not a call: these are the hottest lines of
# the engine. Tests that match only document strings, which are valid, skip the look when
# they match.


# --- value tests (one per operator family); each returns a test of one present value ------


def _build_equality(values: list[Any]) -> ValueTest:
    strings: set[str] = set()
    numbers: set[float] = set()
    booleans: set[bool] = set()
    for value in values:
        cls = value.__class__
        if cls is str:
            strings.add(require_text(value, "values"))
        elif cls is bool:
            booleans.add(value)
        elif _is_number(value):
            numbers.add(value)
        else:
            raise DocumentError("values", f"takes strings, numbers or booleans, got {value!r}")
    frozen_strings = frozenset(strings)
    if not numbers and not booleans:

        def string_test(value: Any) -> bool:
            if value.__class__ is not str:
                return False
            if value in frozen_strings:
                return True
            if not value.isascii():
                value.encode()
            return False

        return string_test
    frozen_numbers, frozen_booleans = frozenset(numbers), frozenset(booleans)

    def test(value: Any) -> bool:
        cls = value.__class__
        if cls is str:
            if value in frozen_strings:
                return True
            if not value.isascii():
                value.encode()
            return False
        if cls is bool:  # checked before numbers: True == 1 in Python, not in a flag document
            return value in frozen_booleans
        if cls is int or cls is float:
            return value in frozen_numbers
        return False

    return test


def _build_contains(values: list[Any]) -> ValueTest:
    needles = tuple(_require_strings(values, "contains"))

    def test(value: Any) -> bool:
        if value.__class__ is not str:
            return False
        if not value.isascii():  # "\ud800abc" contains "abc", yet is no text
            value.encode()
        for needle in needles:  # noqa: SIM110 - a loop allocates no generator per call
            if needle in value:
                return True
        return False

    return test


def _build_starts_with(values: list[Any]) -> ValueTest:
    prefixes = tuple(_require_strings(values, "starts_with"))

    def test(value: Any) -> bool:
        if value.__class__ is not str:
            return False
        if not value.isascii():
            value.encode()
        return value.startswith(prefixes)

    return test


def _build_ends_with(values: list[Any]) -> ValueTest:
    suffixes = tuple(_require_strings(values, "ends_with"))

    def test(value: Any) -> bool:
        if value.__class__ is not str:
            return False
        if not value.isascii():
            value.encode()
        return value.endswith(suffixes)

    return test


def _build_case_insensitive(name: str) -> Callable[[list[Any]], ValueTest]:
    """icontains / istarts_with / iends_with: the string tests with both sides lowercased."""

    def build(values: list[Any]) -> ValueTest:
        needles = tuple(value.lower() for value in _require_strings(values, name))

        def test(value: Any) -> bool:
            if value.__class__ is not str:
                return False
            if not value.isascii():
                value.encode()
            lowered = value.lower()
            if name == "istarts_with":
                return lowered.startswith(needles)
            if name == "iends_with":
                return lowered.endswith(needles)
            for needle in needles:  # noqa: SIM110 - a loop allocates no generator per call
                if needle in lowered:
                    return True
            return False

        return test

    return build


def _build_percentage(
    name: str, first: str, percentage_of: Callable[[str, str], float]
) -> Callable[[list[Any]], ValueTest]:
    """A system's percentage rollout as a condition, `[first, percentage]`: in when the
    system's hashed percentage of `first` and the value is at most the percentage."""

    def build(values: list[Any]) -> ValueTest:
        if len(values) != 2 or values[0].__class__ is not str:
            raise DocumentError("values", f"{name} takes [{first}, percentage]")
        key = require_text(values[0], "values", f"the {first}")
        raw = values[1]
        if not _is_number(raw) or not 0 <= raw <= 100:
            raise DocumentError("values", f"a percentage is a number from 0 to 100, got {raw!r}")
        percentage = float(raw)

        def test(value: Any) -> bool:
            text = bucket_value_of(value)
            if text is None:
                return False
            return percentage_of(key, text) <= percentage

        return test

    return build


# Unleash's gradual rollout: MurmurHash3 seed 0 of `"{groupId}:{value}"`, `% 100 + 1`.
_build_unleash_percentage = _build_percentage("unleash_percentage", "groupId", unleash_normalized)
# Flagsmith's PERCENTAGE_SPLIT: MD5 of `"{segmentId},{value}"`, `% 9999 / 9998 * 100`.
_build_flagsmith_percentage = _build_percentage(
    "flagsmith_percentage",
    "segmentId",
    lambda segment_id, value: flagsmith_percentage((segment_id, value)),
)


def _regex_options() -> re2.Options:
    options = re2.Options()
    options.log_errors = False  # a refused pattern is an answer to its editor, not a log line
    options.never_capture = True  # only whether it matches is asked
    return options


_REGEX_OPTIONS = _regex_options()


def compile_pattern(pattern: str) -> Any:
    """An RE2 regular expression; DocumentError (on `values`) when RE2 cannot compile it.

    RE2 matches in time linear in the value whatever the pattern: no backtracking, so no
    look-around and no backreferences either. See docs/evaluation.md for the syntax.
    """
    require_text(pattern, "values", "a regular expression")
    try:
        return re2.compile(pattern, _REGEX_OPTIONS)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else "cannot be compiled"
        if isinstance(reason, bytes):
            reason = reason.decode("utf-8", "replace")
        raise DocumentError("values", f"invalid regular expression {pattern!r}: {reason}") from None


def _build_matches(values: list[Any]) -> ValueTest:
    patterns = _require_strings(values, "matches")
    searches = tuple(compile_pattern(pattern).search for pattern in patterns)

    def test(value: Any) -> bool:
        if value.__class__ is not str:
            return False
        text = value.encode()  # RE2 reads UTF-8; a lone surrogate raises (INVALID_CONTEXT)
        for search in searches:  # noqa: SIM110 - a loop allocates no generator per call
            if search(text) is not None:
                return True
        return False

    return test


def _numbers(values: list[Any], name: str) -> list[float]:
    for value in values:
        if not _is_number(value) or (value.__class__ is float and math.isinf(value)):
            raise DocumentError("values", f"{name} compares numbers, got {value!r}")
    return values


# A number written in a string, as Unleash's engine (Rust's f64 parser) reads one: a sign,
# digits with an optional point and exponent, or inf / infinity / nan, in any case; no
# spaces, no underscores, ASCII digits only. Possessive quantifiers: a long digit string
# that is no number is refused in one pass, never by backtracking.
_NUMBER_TEXT = re.compile(
    r"[+-]?+(?:(?:[0-9]++(?:\.[0-9]*+)?+|\.[0-9]++)(?:e[+-]?+[0-9]++)?+|inf(?:inity)?+|nan)",
    re.IGNORECASE | re.ASCII,
)
# The operators whose condition may say `numericStrings`: those that compare numbers.
NUMERIC_STRING_OPERATORS = ("equals", "not_equals", "in", "not_in", "lt", "lte", "gt", "gte")


def number_of_text(value: str) -> float | None:
    """The number a string is written as (see _NUMBER_TEXT), or None.

    Digits past a double's range read as infinity ("1e999"), past its precision as the
    nearest double, as in Unleash; "nan" reads as NaN, which equals and compares with
    nothing. A string that is not valid Unicode raises UnicodeEncodeError (INVALID_CONTEXT).
    """
    if not value.isascii():
        value.encode()
        return None
    if _NUMBER_TEXT.fullmatch(value) is None:
        return None
    return float(value)


def _reading_numbers(test: ValueTest) -> ValueTest:
    """`test`, given a string written as a number as that number (`numericStrings`)."""

    def reading(value: Any) -> bool:
        if value.__class__ is str:
            number = number_of_text(value)
            return False if number is None else test(number)
        return test(value)

    return reading


def _build_numeric(name: str) -> Callable[[list[Any]], ValueTest]:
    # With several values a condition holds if it holds for any of them, so only the
    # loosest bound matters: the largest for lt/lte, the smallest for gt/gte.
    def build(values: list[Any]) -> ValueTest:
        numbers = _numbers(values, name)
        bound = max(numbers) if name in ("lt", "lte") else min(numbers)
        compare = _COMPARATORS[name]

        def test(value: Any) -> bool:
            cls = value.__class__
            if cls is int or cls is float:
                return compare(value, bound)
            if cls is str and not value.isascii():
                value.encode()
            return False

        return test

    return build


_COMPARATORS: dict[str, Callable[[Any, Any], bool]] = {
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "eq": lambda a, b: a == b,
}


def _build_semver(name: str) -> Callable[[list[Any]], ValueTest]:
    def build(values: list[Any]) -> ValueTest:
        keys = []
        for value in values:
            key = parse_version(value)
            if key is None:
                raise DocumentError("values", f"invalid semantic version {value!r}")
            keys.append(key)
        if name == "semver_eq":
            accepted = frozenset(keys)

            def equal_test(value: Any) -> bool:
                key = parse_version(value)
                if key is None:
                    if value.__class__ is str and not value.isascii():
                        value.encode()
                    return False
                return key in accepted

            return equal_test
        bound = max(keys) if name in ("semver_lt", "semver_lte") else min(keys)
        compare = _COMPARATORS[name.removeprefix("semver_")]

        def test(value: Any) -> bool:
            key = parse_version(value)
            if key is None:
                if value.__class__ is str and not value.isascii():
                    value.encode()
                return False
            return compare(key, bound)

        return test

    return build


def _build_date(name: str) -> Callable[[list[Any]], ValueTest]:
    def build(values: list[Any]) -> ValueTest:
        stamps = []
        for value in values:
            stamp = None if value.__class__ is bool else timestamp(value)
            if stamp is None:
                raise DocumentError(
                    "values",
                    f"invalid date {value!r}: use YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS[.fff]"
                    "[Z|±HH:MM] or epoch seconds",
                )
            stamps.append(stamp)
        before = name == "before"
        bound = max(stamps) if before else min(stamps)

        def test(value: Any) -> bool:
            stamp = timestamp(value)
            if stamp is None:
                if value.__class__ is str and not value.isascii():
                    value.encode()
                return False
            return stamp < bound if before else stamp > bound

        return test

    return build


def _build_cidr(values: list[Any]) -> ValueTest:
    ranges: list[tuple[int, int, int]] = []
    for value in _require_strings(values, "in_cidr"):
        try:
            network = ipaddress.ip_network(value, strict=False)
        except ValueError:
            raise DocumentError("values", f"invalid CIDR {value!r}") from None
        ranges.append(
            (network.version, int(network.network_address), int(network.broadcast_address))
        )
    spans = tuple(ranges)

    def test(value: Any) -> bool:
        if value.__class__ is not str:
            return False
        try:
            address = ipaddress.ip_address(value)
        except ValueError:
            if not value.isascii():
                value.encode()
            return False
        version, number = address.version, int(address)
        for span_version, low, high in spans:
            if span_version == version and low <= number <= high:
                return True
        return False

    return test


# name -> (operator, value test builder or None, is the negation of its positive form)
_SPECS: dict[str, tuple[Operator, Callable[[list[Any]], ValueTest] | None, bool]] = {}


def _register(
    name: str,
    description: str,
    build: Callable[[list[Any]], ValueTest] | None,
    *,
    negative: bool = False,
    takes_attribute: bool = True,
    takes_values: bool = True,
) -> None:
    operator = Operator(name, takes_attribute, takes_values, description)
    _SPECS[name] = (operator, build, negative)


_register("equals", "equals one of the values", _build_equality)
_register("not_equals", "equals none of the values", _build_equality, negative=True)
_register("in", "is one of the values", _build_equality)
_register("not_in", "is none of the values", _build_equality, negative=True)
_register("contains", "contains one of the values", _build_contains)
_register("starts_with", "starts with one of the values", _build_starts_with)
_register("ends_with", "ends with one of the values", _build_ends_with)
_register("matches", "matches one of the regular expressions", _build_matches)
for _name, _words in (
    ("icontains", "contains one of the values, ignoring case"),
    ("istarts_with", "starts with one of the values, ignoring case"),
    ("iends_with", "ends with one of the values, ignoring case"),
):
    _register(_name, _words, _build_case_insensitive(_name))
for _name, _words in (
    ("lt", "is less than"),
    ("lte", "is at most"),
    ("gt", "is greater than"),
    ("gte", "is at least"),
):
    _register(_name, f"{_words} a value (numbers)", _build_numeric(_name))
for _name, _words in (
    ("semver_eq", "is the same version as"),
    ("semver_lt", "is a version before"),
    ("semver_lte", "is a version at or before"),
    ("semver_gt", "is a version after"),
    ("semver_gte", "is a version at or after"),
):
    _register(_name, f"{_words} a value (semantic versions)", _build_semver(_name))
_register("before", "is a date before a value", _build_date("before"))
_register("after", "is a date after a value", _build_date("after"))
_register("exists", "is present", None, takes_values=False)
_register("not_exists", "is absent", None, negative=True, takes_values=False)
_register("in_cidr", "is an IP address in one of the networks", _build_cidr)
_register("in_segment", "the context is in one of the segments", None, takes_attribute=False)
_register(
    "unleash_percentage",
    "is in Unleash's gradual rollout [groupId, percentage]",
    _build_unleash_percentage,
)
_register(
    "flagsmith_percentage",
    "is in Flagsmith's percentage split [segmentId, percentage]",
    _build_flagsmith_percentage,
)

OPERATORS: Mapping[str, Operator] = MappingProxyType({k: v[0] for k, v in _SPECS.items()})


# --- validation ---------------------------------------------------------------------------


def parse_condition(
    condition: object,
    segment_keys: Collection[str] | None = None,
    *,
    allow_in_segment: bool = True,
) -> ParsedCondition:
    """Validate a condition and build its value test; raises DocumentError."""
    if not isinstance(condition, Mapping):
        raise DocumentError("", "a condition must be an object")
    name = condition.get("operator")
    spec = _SPECS.get(name) if isinstance(name, str) else None
    if spec is None or not isinstance(name, str):
        known = ", ".join(_SPECS)
        raise DocumentError("operator", f"unknown operator {name!r}; use one of {known}")
    operator, build, negative = spec
    negate = condition.get("negate", False)
    if negate is None:
        negate = False
    if negate.__class__ is not bool:
        raise DocumentError("negate", f"must be true or false, got {negate!r}")
    attribute = _parse_attribute(condition.get("attribute"), operator)
    values = condition.get("values", [])
    if values is None:
        values = []
    if not isinstance(values, (list, tuple)):
        raise DocumentError("values", f"must be a list, got {values!r}")
    values = list(values)
    if operator.takes_values and not values:
        raise DocumentError("values", f"{name} needs at least one value")
    if not operator.takes_values and values:
        raise DocumentError("values", f"{name} takes no values")
    flip = negate is not negative
    numeric_strings = _numeric_strings(condition, name, values)
    if name == "in_segment":
        if not allow_in_segment:
            raise DocumentError("operator", "a segment's conditions cannot use in_segment")
        keys = tuple(_require_strings(values, "in_segment"))
        if segment_keys is not None:
            for key in keys:
                if key not in segment_keys:
                    raise DocumentError("values", f"unknown segment {key!r}")
        return ParsedCondition(None, name, None, flip, keys)
    test = build(values) if build is not None else None
    if numeric_strings and test is not None:
        test = _reading_numbers(test)
    strings = None
    if build is _build_equality and all(value.__class__ is str for value in values):
        strings = frozenset(values)
    return ParsedCondition(attribute, name, test, flip, (), strings)


def _numeric_strings(condition: Mapping[str, Any], name: str, values: list[Any]) -> bool:
    """Whether the condition reads strings written as numbers as numbers; checks it may."""
    numeric_strings = condition.get("numericStrings", False)
    if numeric_strings is None:
        return False
    if numeric_strings.__class__ is not bool:
        raise DocumentError("numericStrings", f"must be true or false, got {numeric_strings!r}")
    if not numeric_strings:
        return False
    if name not in NUMERIC_STRING_OPERATORS:
        operators = ", ".join(NUMERIC_STRING_OPERATORS)
        raise DocumentError("numericStrings", f"applies to {operators}; not to {name}")
    _numbers(values, f"{name} with numericStrings")
    return True


def _parse_attribute(attribute: object, operator: Operator) -> str | None:
    if not operator.takes_attribute:
        if attribute not in (None, ""):
            raise DocumentError("attribute", f"{operator.name} takes no attribute")
        return None
    if attribute.__class__ is not str or not attribute:
        raise DocumentError("attribute", f"{operator.name} needs an attribute name")
    return require_text(attribute, "attribute", "the attribute name")


def check_condition(
    condition: dict[str, Any],
    segment_keys: set[str] | None = None,
    *,
    allow_in_segment: bool = True,
) -> None:
    """Raise DocumentError if `condition` is invalid.

    `segment_keys`, when given, are the segments `in_segment` may name. Pass
    `allow_in_segment=False` for a segment's own conditions: segments cannot nest.
    """
    parse_condition(condition, segment_keys, allow_in_segment=allow_in_segment)


# --- compilation --------------------------------------------------------------------------


def attribute_getter(attribute: str, draw: Draw | None = None) -> Callable[[Context], Any]:
    """A lookup of `attribute`: the exact key first, then a dotted path into nested objects.

    A missing attribute and an attribute whose value is null both read as None. With a
    `draw`, the `$random` attribute is not read from the context: each read draws anew.
    """
    if draw is not None and attribute == RANDOM_ATTRIBUTE:
        return lambda context: draw()
    if "." not in attribute:
        return lambda context: context.get(attribute)
    parts = tuple(attribute.split("."))

    def get(context: Context) -> Any:
        value = context.get(attribute)
        if value is not None:
            return value
        node: Any = context
        for part in parts:
            if not isinstance(node, Mapping):
                return None
            node = node.get(part)
        return node

    return get


def bind_condition(
    parsed: ParsedCondition, segments: Mapping[str, Predicate], draw: Draw | None = None
) -> Predicate:
    """The predicate of a parsed condition; `segments` must hold every key it names.

    With a `draw`, a condition on `$random` tests a value drawn anew at each evaluation.
    """
    flip = parsed.flip
    if parsed.operator == "in_segment":
        members = tuple(segments[key] for key in parsed.segment_keys)
        if len(members) == 1 and not flip:  # the commonest: one segment, its own answer
            return members[0]

        def in_segment(context: Context) -> bool:
            for member in members:
                if member(context):
                    return not flip
            return flip

        return in_segment
    attribute = parsed.attribute
    assert attribute is not None
    if draw is not None and attribute == RANDOM_ATTRIBUTE:
        get = attribute_getter(attribute, draw)
        if parsed.test is None:
            return _presence_condition(get, flip)
        return _path_attribute_condition(get, parsed.test, flip)
    if parsed.test is None:  # exists / not_exists: the only operators that see absence
        return _presence_condition(attribute_getter(attribute), flip)
    if "." not in attribute:
        if parsed.strings is not None:
            return _string_set_condition(attribute, parsed.strings, flip)
        return _simple_attribute_condition(attribute, parsed.test, flip)
    return _path_attribute_condition(attribute_getter(attribute), parsed.test, flip)


# A string-set condition as data, for the caller that inlines its commonest case (an ASCII
# string value): (attribute, strings, flip, the predicate that answers every other case).
StringSet = tuple[str, frozenset[str], bool, Predicate]


def string_set_of(parsed: ParsedCondition, predicate: Predicate) -> StringSet | None:
    """`predicate` (bound from `parsed`) as a StringSet when bind_condition made it a
    string-set condition, else None."""
    attribute = parsed.attribute
    if parsed.strings is None or parsed.test is None or attribute is None:
        return None
    if "." in attribute or attribute == RANDOM_ATTRIBUTE:
        return None
    return attribute, parsed.strings, parsed.flip, predicate


def _presence_condition(get: Callable[[Context], Any], flip: bool) -> Predicate:
    def condition(context: Context) -> bool:
        value = get(context)
        if value is None:
            return flip
        if value.__class__ is str and not value.isascii():
            value.encode()
        return not flip

    return condition


def _string_set_condition(attribute: str, strings: frozenset[str], flip: bool) -> Predicate:
    # `country in ["US", "CA"]`, the commonest condition, with its value test inlined: the
    # same answers as _simple_attribute_condition with _build_equality's test, one call fewer.
    def condition(context: Context) -> bool:
        value = context.get(attribute)
        if value.__class__ is str:
            if value in strings:
                return not flip
            if not value.isascii():
                value.encode()  # a lone surrogate raises: INVALID_CONTEXT
            return flip
        if value is None:
            return False
        if value.__class__ is list:
            for item in value:
                if item.__class__ is str:
                    if item in strings:
                        return not flip
                    if not item.isascii():
                        item.encode()
            return flip
        return flip  # present, of another type: no match

    return condition


def _simple_attribute_condition(attribute: str, test: ValueTest, flip: bool) -> Predicate:
    # The lookup is inlined (no getter call) because this is the hottest path of the engine.
    def condition(context: Context) -> bool:
        value = context.get(attribute)
        if value is None:
            return False
        if value.__class__ is list:
            for item in value:
                if test(item):
                    return not flip
            return flip
        return test(value) is not flip

    return condition


def _path_attribute_condition(
    get: Callable[[Context], Any], test: ValueTest, flip: bool
) -> Predicate:
    def condition(context: Context) -> bool:
        value = get(context)
        if value is None:
            return False
        if value.__class__ is list:
            for item in value:
                if test(item):
                    return not flip
            return flip
        return test(value) is not flip

    return condition


def all_of(predicates: list[Predicate]) -> Predicate:
    """One predicate that holds when every predicate holds (always, for none)."""
    if not predicates:
        return lambda context: True
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        first, second = predicates
        return lambda context: first(context) and second(context)
    frozen = tuple(predicates)

    def every(context: Context) -> bool:
        for predicate in frozen:  # noqa: SIM110 - a loop allocates no generator per call
            if not predicate(context):
                return False
        return True

    return every
