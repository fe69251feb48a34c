"""Every condition operator, through the engine's public API."""

from __future__ import annotations

from typing import Any

import pytest

from evaluation.engine import OPERATORS, Reason, compile_document

MISSING = object()


def matches(
    operator: str,
    values: list[Any],
    value: Any = MISSING,
    *,
    negate: bool = False,
    attribute: str = "attr",
    context: dict[str, Any] | None = None,
) -> bool:
    """Whether a one-condition rule matches a context holding `value` at `attribute`."""
    condition = {"attribute": attribute, "operator": operator, "values": values, "negate": negate}
    document = {
        "flags": {
            "f": {
                "type": "boolean",
                "enabled": True,
                "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}],
                "offVariant": "off",
                "rules": [{"id": "r", "conditions": [condition], "serve": {"variant": "on"}}],
                "defaultServe": {"variant": "off"},
            }
        }
    }
    if context is None:
        context = {"targetingKey": "user"}
        if value is not MISSING:
            context[attribute] = value
    result = compile_document(document).evaluate("f", context)
    assert result.error_code is None, result
    assert result.reason in (Reason.TARGETING_MATCH, Reason.DEFAULT)
    return result.reason == Reason.TARGETING_MATCH


CASES = [
    # case-insensitive string operators (Unleash's caseInsensitive)
    ("icontains", ["PRO"], "a pro plan", True),
    ("icontains", ["pro"], "team", False),
    ("istarts_with", ["ÉL"], "élodie", True),
    ("istarts_with", ["x"], "yx", False),
    ("iends_with", ["@Example.COM"], "a@example.com", True),
    ("iends_with", ["@example.com"], 5, False),
    # Unleash's gradual rollout: 100% takes everyone, 0% no one, numbers as their text
    ("unleash_percentage", ["group", 100], "anyone", True),
    ("unleash_percentage", ["group", 100], 42, True),
    ("unleash_percentage", ["group", 0], "anyone", False),
    ("unleash_percentage", ["group", 100], {"id": 1}, False),
    # Flagsmith's percentage split: the same, with its own hash of segment id and value
    ("flagsmith_percentage", ["5", 100], "anyone", True),
    ("flagsmith_percentage", ["5", 100], 42, True),
    ("flagsmith_percentage", ["5", 0], "anyone", False),
    ("flagsmith_percentage", ["5", 100], {"id": 1}, False),
    # equals / in: type-strict, numbers by value, case-sensitive
    ("equals", ["pro"], "pro", True),
    ("equals", ["pro"], "Pro", False),
    ("equals", ["pro"], "pro ", False),
    ("equals", ["pro", "team"], "team", True),
    ("equals", [5], 5, True),
    ("equals", [5], 5.0, True),
    ("equals", [5], "5", False),
    ("equals", ["5"], 5, False),
    ("equals", [1], True, False),
    ("equals", [True], 1, False),
    ("equals", [True], True, True),
    ("equals", [False], False, True),
    ("equals", [False], 0, False),
    ("equals", ["x"], {"x": 1}, False),
    ("equals", ["ünïcødé"], "ünïcødé", True),
    ("equals", ["é"], "e\u0301", False),  # no Unicode normalisation
    ("equals", [""], "", True),
    ("in", ["US", "CA", "GB"], "CA", True),
    ("in", ["US", "CA", "GB"], "FR", False),
    ("in", ["US", "CA", "GB"], "us", False),
    ("in", ["US", 1, True], 1, True),
    ("in", ["US", 1, True], True, True),
    ("in", ["US", 1, True], "1", False),
    ("not_equals", ["pro"], "free", True),
    ("not_equals", ["pro"], "pro", False),
    ("not_equals", ["5"], 5, True),
    ("not_in", ["US", "CA"], "FR", True),
    ("not_in", ["US", "CA"], "US", False),
    # list-valued attributes: any element
    ("in", ["a"], ["b", "a"], True),
    ("in", ["a"], ["b", "c"], False),
    ("in", ["a"], [], False),
    ("not_in", ["a"], ["b", "a"], False),  # the negation of "some element is in"
    ("not_in", ["a"], ["b", "c"], True),
    ("not_in", ["a"], [], True),
    # string operators
    ("contains", ["@example"], "ann@example.com", True),
    ("contains", ["@EXAMPLE"], "ann@example.com", False),
    ("contains", ["x", "@ex"], "ann@example.com", True),
    ("contains", ["5"], 15, False),
    ("contains", ["ü"], "Müller", True),
    ("contains", ["a"], ["xyz", "bab"], True),
    ("starts_with", ["ann"], "ann@example.com", True),
    ("starts_with", ["Ann"], "ann@example.com", False),
    ("starts_with", ["bob", "ann"], "ann@example.com", True),
    ("starts_with", ["1"], 12, False),
    ("ends_with", ["@example.com"], "ann@example.com", True),
    ("ends_with", ["@example.org"], "ann@example.com", False),
    ("ends_with", ["COM"], "ann@example.com", False),
    ("ends_with", ["2"], 12, False),
    ("matches", [r"^user-\d+$"], "user-42", True),
    ("matches", [r"^user-\d+$"], "user-x", False),
    ("matches", [r"\d"], "a1b", True),  # re.search, not re.match
    ("matches", ["abc"], "ABC", False),
    ("matches", ["(?i)abc"], "ABC", True),
    ("matches", ["x", "^a"], "abc", True),
    ("matches", ["1"], 1, False),
    ("matches", ["^é"], "été", True),
    # numbers: booleans are not numbers, no coercion, boundaries
    ("lt", [10], 9, True),
    ("lt", [10], 10, False),
    ("lt", [10], 9.999, True),
    ("lt", [10], "9", False),
    ("lt", [10], True, False),
    ("lt", [1, 10], 5, True),  # any value: the loosest bound
    ("lte", [10], 10, True),
    ("lte", [10], 10.0001, False),
    ("lte", [10.5], 10.5, True),
    ("gt", [10], 11, True),
    ("gt", [10], 10, False),
    ("gt", [10], "11", False),
    ("gt", [10], None, False),
    ("gt", [10, 20], 15, True),
    ("gte", [10], 10, True),
    ("gte", [10], 9, False),
    ("gte", [0], False, False),
    ("gte", [-1.5], -1.5, True),
    ("gt", [10], [5, 11], True),
    # semantic versions
    ("semver_eq", ["1.2.3"], "1.2.3", True),
    ("semver_eq", ["1.2.3"], "v1.2.3", True),
    ("semver_eq", ["1.2.3"], "1.2.3+build.7", True),  # build metadata has no precedence
    ("semver_eq", ["1.2.3"], "1.2.4", False),
    ("semver_eq", ["1.2.3"], "1.2", False),  # not a version: false, not an error
    ("semver_eq", ["1.2.3"], "banana", False),
    ("semver_eq", ["1.2.3"], 1.2, False),
    ("semver_lt", ["2.0.0"], "1.9.9", True),
    ("semver_lt", ["2.0.0"], "2.0.0", False),
    ("semver_lt", ["2.0.0"], "2.0.0-rc.1", True),  # a pre-release precedes its release
    ("semver_lt", ["1.0.0-rc.10"], "1.0.0-rc.2", True),  # numeric identifiers numerically
    ("semver_lt", ["1.0.0-beta"], "1.0.0-alpha", True),
    ("semver_lt", ["1.0.0-alpha.1"], "1.0.0-alpha", True),
    ("semver_lt", ["1.0.0-alpha"], "1.0.0-1", True),  # numeric before alphanumeric
    ("semver_lt", ["1.10.0"], "1.9.0", True),  # not string order
    ("semver_lte", ["2.0.0"], "2.0.0", True),
    ("semver_lte", ["2.0.0"], "2.0.1", False),
    ("semver_gt", ["2.0.0"], "10.0.0", True),
    ("semver_gt", ["2.0.0"], "2.0.0", False),
    ("semver_gt", ["2.0.0-rc.1"], "2.0.0", True),
    ("semver_gte", ["2.0.0"], "2.0.0", True),
    ("semver_gte", ["2.0.0"], "1.99.99", False),
    ("semver_gte", ["2.0.0"], "02.0.0", False),  # leading zeros: not a version
    # dates: ISO 8601 or epoch seconds, naive = UTC
    ("before", ["2025-01-01T00:00:00Z"], "2024-12-31T23:59:59Z", True),
    ("before", ["2025-01-01T00:00:00Z"], "2025-01-01T00:00:00Z", False),  # boundary
    ("before", ["2025-01-01T00:00:00Z"], "2025-01-01T00:00:00", False),  # naive = UTC
    ("before", ["2025-01-01T00:00:00Z"], "2025-01-01T00:30:00+01:00", True),
    ("before", ["2025-01-01"], "2024-12-31", True),
    ("before", ["2025-01-01T00:00:00Z"], 1735689599, True),
    ("before", ["2025-01-01T00:00:00Z"], 1735689600, False),
    ("before", [1735689600], "2024-12-31T23:59:59.999Z", True),
    ("before", ["2025-01-01T00:00:00Z"], "not a date", False),
    ("before", ["2025-01-01T00:00:00Z"], True, False),
    ("after", ["2025-01-01T00:00:00Z"], "2025-01-01T00:00:01Z", True),
    ("after", ["2025-01-01T00:00:00Z"], "2025-01-01T00:00:00Z", False),
    ("after", ["2025-01-01T00:00:00Z"], "2025-01-01T00:00:00-00:01", True),
    ("after", [0], 1, True),
    ("after", [0], 1.5, True),
    ("after", [0], -1, False),
    # exists: present and not null
    ("exists", [], "", True),
    ("exists", [], 0, True),
    ("exists", [], False, True),
    ("exists", [], [], True),
    ("exists", [], None, False),
    ("not_exists", [], None, True),
    ("not_exists", [], "x", False),
    # CIDR
    ("in_cidr", ["10.0.0.0/8"], "10.1.2.3", True),
    ("in_cidr", ["10.0.0.0/8"], "11.0.0.1", False),
    ("in_cidr", ["10.0.0.0/8"], "10.0.0.0", True),
    ("in_cidr", ["10.0.0.0/8"], "10.255.255.255", True),
    ("in_cidr", ["192.168.1.7"], "192.168.1.7", True),  # a bare address is a /32
    ("in_cidr", ["192.168.1.7"], "192.168.1.8", False),
    ("in_cidr", ["2001:db8::/32"], "2001:db8::1", True),
    ("in_cidr", ["2001:db8::/32"], "2001:db9::1", False),
    ("in_cidr", ["::/0"], "10.0.0.1", False),  # IPv4 is not in an IPv6 network
    ("in_cidr", ["0.0.0.0/0"], "::1", False),
    ("in_cidr", ["10.0.0.0/8"], "not an ip", False),
    ("in_cidr", ["10.0.0.0/8"], 167772161, False),
    ("in_cidr", ["10.0.0.0/8", "fd00::/8"], "fd12::1", True),
]


@pytest.mark.parametrize(("operator", "values", "value", "expected"), CASES)
def test_operator(operator: str, values: list[Any], value: Any, expected: bool) -> None:
    assert matches(operator, values, value) is expected


@pytest.mark.parametrize(("operator", "values", "value", "expected"), CASES)
def test_negate_inverts_a_present_attribute(
    operator: str, values: list[Any], value: Any, expected: bool
) -> None:
    if value is None:  # absent: negate does not apply (see the missing-attribute tests)
        return
    assert matches(operator, values, value, negate=True) is (not expected)


def test_every_operator_has_a_case() -> None:
    tested = {case[0] for case in CASES} | {"in_segment"}
    assert tested == set(OPERATORS)


ATTRIBUTE_OPERATORS = [
    (name, [] if name in ("exists", "not_exists") else SAMPLE_VALUES)
    for name, SAMPLE_VALUES in [
        ("equals", ["x"]),
        ("not_equals", ["x"]),
        ("in", ["x"]),
        ("not_in", ["x"]),
        ("contains", ["x"]),
        ("starts_with", ["x"]),
        ("ends_with", ["x"]),
        ("matches", ["x"]),
        ("lt", [1]),
        ("lte", [1]),
        ("gt", [1]),
        ("gte", [1]),
        ("semver_eq", ["1.0.0"]),
        ("semver_lt", ["1.0.0"]),
        ("semver_lte", ["1.0.0"]),
        ("semver_gt", ["1.0.0"]),
        ("semver_gte", ["1.0.0"]),
        ("before", [0]),
        ("after", [0]),
        ("in_cidr", ["10.0.0.0/8"]),
        ("icontains", ["x"]),
        ("istarts_with", ["x"]),
        ("iends_with", ["x"]),
        ("unleash_percentage", ["g", 100]),
        ("flagsmith_percentage", ["5", 100]),
        ("exists", []),
        ("not_exists", []),
    ]
]


@pytest.mark.parametrize(("operator", "values"), ATTRIBUTE_OPERATORS)
@pytest.mark.parametrize("negate", [False, True])
@pytest.mark.parametrize("absent", ["missing", "null"])
def test_a_missing_attribute_is_false_whatever_negate_says(
    operator: str, values: list[Any], negate: bool, absent: str
) -> None:
    context = {"targetingKey": "user"} if absent == "missing" else {"attr": None}
    expected = {"exists": negate, "not_exists": not negate}.get(operator, False)
    assert matches(operator, values, negate=negate, context=context) is expected


def test_targeting_key_is_an_attribute() -> None:
    context = {"targetingKey": "user-42"}
    assert matches("starts_with", ["user-"], attribute="targetingKey", context=context)


def test_dotted_attribute_reads_nested_objects() -> None:
    context = {"targetingKey": "u", "user": {"address": {"country": "FR"}}}
    assert matches("equals", ["FR"], attribute="user.address.country", context=context)
    assert not matches("equals", ["FR"], attribute="user.address.city", context=context)
    assert not matches("equals", ["FR"], attribute="user.address.country.x", context=context)
    assert not matches("exists", [], attribute="user.name", context=context)
    assert matches("exists", [], attribute="user.address", context=context)


def test_an_exact_dotted_key_wins_over_the_path() -> None:
    context = {"targetingKey": "u", "app.version": "2.0.0", "app": {"version": "1.0.0"}}
    assert matches("semver_eq", ["2.0.0"], attribute="app.version", context=context)


def test_a_dotted_path_does_not_walk_into_lists_or_strings() -> None:
    context = {"targetingKey": "u", "user": [{"plan": "pro"}], "s": "abc"}
    assert not matches("equals", ["pro"], attribute="user.plan", context=context)
    assert not matches("exists", [], attribute="s.upper", context=context)


def test_conditions_of_a_rule_must_all_hold() -> None:
    document = {
        "flags": {
            "f": {
                "type": "string",
                "enabled": True,
                "variants": [{"key": "a", "value": "A"}, {"key": "b", "value": "B"}],
                "offVariant": "b",
                "rules": [
                    {
                        "id": "r",
                        "conditions": [
                            {"attribute": "country", "operator": "in", "values": ["US", "CA"]},
                            {"attribute": "plan", "operator": "equals", "values": ["pro"]},
                            {"attribute": "age", "operator": "gte", "values": [18]},
                        ],
                        "serve": {"variant": "a"},
                    }
                ],
                "defaultServe": {"variant": "b"},
            }
        }
    }
    snapshot = compile_document(document)
    context = {"country": "US", "plan": "pro", "age": 18}
    assert snapshot.evaluate("f", context).variant == "a"
    for key, other in (("country", "FR"), ("plan", "free"), ("age", 17)):
        assert snapshot.evaluate("f", {**context, key: other}).variant == "b"
