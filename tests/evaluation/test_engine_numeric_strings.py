"""`numericStrings`: a numeric condition that reads a string written as a number as that number."""

from __future__ import annotations

from typing import Any

import pytest

from evaluation.engine import DocumentError, ErrorCode, Reason, check_condition, compile_document


def evaluate(condition: dict[str, Any], context: dict[str, Any]) -> Any:
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
    return compile_document(document).evaluate("f", context)


def matches(operator: str, values: list[Any], value: Any, *, negate: bool = False) -> bool:
    condition = {
        "attribute": "n",
        "operator": operator,
        "values": values,
        "negate": negate,
        "numericStrings": True,
    }
    result = evaluate(condition, {"targetingKey": "u", "n": value})
    assert result.error_code is None, result
    return result.reason == Reason.TARGETING_MATCH


CASES = [
    # Unleash's NUM_ operators: the context's strings read as numbers
    ("gt", [12], "13", True),
    ("gt", [12], "12", False),
    ("gte", [12], "12", True),
    ("lt", [12], "0", True),
    ("lte", [12], "12", True),
    ("lte", [12], "13", False),
    ("equals", [12], "12", True),
    ("equals", [12], "12.0", True),
    ("equals", [12.0], "12", True),
    ("equals", [12], "13", False),
    ("not_equals", [12], "13", True),
    ("in", [1, 2], "2", True),
    ("not_in", [1, 2], "2", False),
    ("not_in", [1, 2], "3", True),
    # the forms of a number Unleash's engine reads
    ("gte", [5], "+5", True),
    ("lt", [0], "-0.5", True),
    ("lt", [1], ".5", True),
    ("equals", [5], "5.", True),
    ("equals", [1000], "1E3", True),
    ("equals", [0.001], "1e-3", True),
    ("equals", [7], "007", True),
    ("gt", [1e308], "inf", True),
    ("gt", [1e308], "Infinity", True),
    ("lt", [-1e308], "-INF", True),
    ("gt", [1e308], "1e999", True),  # past a double's range: infinity
    ("lt", [-1e308], "-1e999", True),
    ("equals", [0], "1e-999", True),  # below a double's precision: zero
    ("gt", [1e308], "9" * 400, True),
    # what it does not read: no match, as for any value that is no number
    ("gt", [1], " 12", False),
    ("gt", [1], "12 ", False),
    ("gt", [1], "1_000", False),
    ("gt", [1], "0x10", False),
    ("gt", [1], "12abc", False),
    ("gt", [1], "", False),
    ("gt", [1], ".", False),
    ("gt", [1], "e5", False),
    ("gt", [1], "5e", False),
    ("gt", [1], "١٢", False),  # digits that are not ASCII
    ("gt", [1], "12\x00", False),
    ("gt", [1], "\x0012", False),
    ("equals", [12], "twelve", False),
    # NaN reads as a number that equals and compares with nothing
    ("gt", [1], "NaN", False),
    ("lt", [1], "nan", False),
    ("equals", [1], "NaN", False),
    # JSON numbers compare as they always do; booleans are still not numbers
    ("gt", [12], 13, True),
    ("equals", [12], 12.0, True),
    ("gt", [0], True, False),
    ("equals", [1], True, False),
    # a list: any element
    ("gt", [10], ["1", "20"], True),
    ("gt", [10], ["1", "x"], False),
]


@pytest.mark.parametrize(("operator", "values", "value", "expected"), CASES)
def test_a_string_written_as_a_number_compares_as_that_number(
    operator: str, values: list[Any], value: Any, expected: bool
) -> None:
    assert matches(operator, values, value) is expected


@pytest.mark.parametrize(("operator", "values", "value", "expected"), CASES)
def test_negate_inverts_it_for_a_present_attribute(
    operator: str, values: list[Any], value: Any, expected: bool
) -> None:
    assert matches(operator, values, value, negate=True) is (not expected)


@pytest.mark.parametrize("operator", ["gt", "equals", "not_in"])
def test_a_missing_attribute_is_still_false_whatever_negate_says(operator: str) -> None:
    for negate in (False, True):
        condition = {
            "attribute": "n",
            "operator": operator,
            "values": [1],
            "negate": negate,
            "numericStrings": True,
        }
        for context in ({"targetingKey": "u"}, {"n": None}):
            assert evaluate(condition, context).reason == Reason.DEFAULT


@pytest.mark.parametrize("numeric_strings", [False, None])
def test_without_it_a_string_is_no_number(numeric_strings: bool | None) -> None:
    condition = {"attribute": "n", "operator": "gt", "values": [12]}
    condition["numericStrings"] = numeric_strings
    assert evaluate(condition, {"n": "13"}).reason == Reason.DEFAULT
    assert evaluate(condition, {"n": 13}).reason == Reason.TARGETING_MATCH


HOSTILE = [
    "9" * 1_000_000,  # a million digits: infinity
    "1e" + "9" * 1_000_000,  # an exponent of a million digits
    "0." + "0" * 1_000_000 + "1",
    "1" * 1_000_000 + "x",  # a million digits, then no number
    "." * 1_000_000,
    "-" * 1_000_000,
    "e" * 1_000_000,
    "\x00" * 100_000,
    "nan" * 100_000,
]


@pytest.mark.parametrize("value", HOSTILE, ids=lambda value: f"{value[:8]!r}x{len(value)}")
def test_hostile_strings_answer_without_error(value: str) -> None:
    for operator in ("gt", "lte", "equals", "not_in"):
        condition = {"attribute": "n", "operator": operator, "values": [1], "numericStrings": True}
        result = evaluate(condition, {"targetingKey": "u", "n": value})
        assert result.error_code is None, result


def test_a_lone_surrogate_is_an_invalid_context() -> None:
    condition = {"attribute": "n", "operator": "gt", "values": [1], "numericStrings": True}
    for value in ("\ud800", "12\udfff", ["1", "\ud800"]):
        result = evaluate(condition, {"targetingKey": "u", "n": value})
        assert result.error_code == ErrorCode.INVALID_CONTEXT


@pytest.mark.parametrize(
    ("condition", "field", "message"),
    [
        (
            {"attribute": "n", "operator": "gt", "values": [1], "numericStrings": "yes"},
            "numericStrings",
            "must be true or false, got 'yes'",
        ),
        (
            {"attribute": "n", "operator": "gt", "values": [1], "numericStrings": 1},
            "numericStrings",
            "must be true or false, got 1",
        ),
        (
            {"attribute": "n", "operator": "contains", "values": ["1"], "numericStrings": True},
            "numericStrings",
            "applies to equals, not_equals, in, not_in, lt, lte, gt, gte; not to contains",
        ),
        (
            {"operator": "in_segment", "values": ["s"], "numericStrings": True},
            "numericStrings",
            "applies to equals, not_equals, in, not_in, lt, lte, gt, gte; not to in_segment",
        ),
        (
            {"attribute": "n", "operator": "equals", "values": [1, "x"], "numericStrings": True},
            "values",
            "equals with numericStrings compares numbers, got 'x'",
        ),
        (
            {"attribute": "n", "operator": "in", "values": [True], "numericStrings": True},
            "values",
            "in with numericStrings compares numbers, got True",
        ),
    ],
)
def test_check_condition_refuses_it_where_it_means_nothing(
    condition: dict[str, Any], field: str, message: str
) -> None:
    with pytest.raises(DocumentError) as refused:
        check_condition(condition, {"s"})
    assert (refused.value.field, refused.value.message) == (field, message)
    result = evaluate(condition, {"n": "1"}) if "attribute" in condition else None
    if result is not None:
        assert result.error_code == ErrorCode.PARSE_ERROR
