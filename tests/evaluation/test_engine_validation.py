"""check_condition, check_serving and compile_document's handling of invalid input."""

from __future__ import annotations

from typing import Any

import pytest

from evaluation.engine import (
    OPERATORS,
    DocumentError,
    ErrorCode,
    Reason,
    check_condition,
    check_serving,
    compile_document,
)


def condition(operator: str, values: Any = None, **fields: Any) -> dict[str, Any]:
    fields.setdefault("attribute", "attr")
    return {"operator": operator, "values": values, **fields}


INVALID_CONDITIONS = [
    (condition("like", ["x"]), "operator", "unknown operator 'like'"),
    ({"attribute": "a", "values": ["x"]}, "operator", "unknown operator None"),
    (condition("matches", ["(["]), "values", "invalid regular expression '(['"),
    (condition("matches", ["("]), "values", "missing )"),
    (condition("matches", [5]), "values", "matches takes strings"),
    (condition("semver_gt", ["1.2"]), "values", "invalid semantic version '1.2'"),
    (condition("semver_eq", ["1.2.3", "x"]), "values", "invalid semantic version 'x'"),
    (condition("semver_lt", [1]), "values", "invalid semantic version 1"),
    (condition("before", ["yesterday"]), "values", "invalid date 'yesterday'"),
    (condition("after", ["2025-13-01"]), "values", "invalid date '2025-13-01'"),
    (condition("after", [True]), "values", "invalid date True"),
    (condition("in_cidr", ["10.0.0.0/33"]), "values", "invalid CIDR '10.0.0.0/33'"),
    (condition("in_cidr", ["example.com"]), "values", "invalid CIDR 'example.com'"),
    (condition("lt", ["10"]), "values", "lt compares numbers, got '10'"),
    (condition("gte", [True]), "values", "gte compares numbers, got True"),
    (condition("gt", [float("nan")]), "values", "gt compares numbers"),
    (condition("equals", []), "values", "equals needs at least one value"),
    (condition("in", None), "values", "in needs at least one value"),
    (condition("in", [["nested"]]), "values", "takes strings, numbers or booleans"),
    (condition("in", [None]), "values", "takes strings, numbers or booleans"),
    (condition("contains", [1]), "values", "contains takes strings"),
    (condition("in", "US"), "values", "must be a list"),
    (condition("exists", ["x"]), "values", "exists takes no values"),
    (condition("equals", ["x"], attribute=""), "attribute", "equals needs an attribute name"),
    (condition("equals", ["x"], attribute=None), "attribute", "needs an attribute name"),
    (condition("equals", ["x"], attribute=3), "attribute", "needs an attribute name"),
    (condition("in_segment", ["beta"], attribute="x"), "attribute", "takes no attribute"),
    (condition("in_segment", ["nope"], attribute=None), "values", "unknown segment 'nope'"),
    (condition("in_segment", [], attribute=None), "values", "needs at least one value"),
    (condition("equals", ["x"], negate="yes"), "negate", "must be true or false"),
    (condition("equals", ["x"], negate=1), "negate", "must be true or false"),
]


@pytest.mark.parametrize(("bad", "field", "message"), INVALID_CONDITIONS)
def test_check_condition_names_the_field(bad: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(DocumentError) as caught:
        check_condition(bad, {"beta"})
    assert caught.value.field == field
    assert message in caught.value.message
    assert str(caught.value) == f"{field}: {caught.value.message}"


def test_regex_message_is_human_readable() -> None:
    with pytest.raises(DocumentError) as caught:
        check_condition(condition("matches", ["(["]))
    assert str(caught.value) == "values: invalid regular expression '([': missing ]: ["


VALID_CONDITIONS = [
    condition("equals", ["x", 1, 2.5, True]),
    condition("matches", [r"^\w+@example\.com$"]),
    condition("semver_gte", ["1.2.3-rc.1+build.5", "v2.0.0"]),
    condition("before", ["2025-01-01", "2025-01-01T10:00:00+02:00", 1735689600, 1.5]),
    condition("in_cidr", ["10.0.0.0/8", "10.1.2.3/8", "::1", "2001:db8::/32"]),
    condition("exists", []),
    condition("not_exists", None),
    {"attribute": "a", "operator": "exists"},
    condition("in_segment", ["beta"], attribute=None),
    condition("in_segment", ["beta"], attribute=""),
    condition("equals", ["x"], negate=True),
    condition("equals", ["x"], negate=None),
    {"attribute": "a", "operator": "equals", "values": ["x"]},
]


@pytest.mark.parametrize("good", VALID_CONDITIONS)
def test_check_condition_accepts_valid_conditions(good: dict[str, Any]) -> None:
    check_condition(good, {"beta"})


def test_check_condition_without_segment_keys_skips_the_segment_check() -> None:
    check_condition(condition("in_segment", ["anything"], attribute=None))


def test_segments_cannot_reference_segments() -> None:
    with pytest.raises(DocumentError) as caught:
        check_condition(condition("in_segment", ["beta"], attribute=None), allow_in_segment=False)
    assert caught.value.field == "operator"


def test_operators_describe_themselves() -> None:
    assert OPERATORS["in_segment"].takes_attribute is False
    assert OPERATORS["exists"].takes_values is False
    assert OPERATORS["equals"].takes_attribute and OPERATORS["equals"].takes_values
    assert len(OPERATORS) == 28
    with pytest.raises(TypeError):
        OPERATORS["new"] = OPERATORS["in"]  # type: ignore[index]


VARIANTS = ["on", "off"]


def rollout(*weights: tuple[str, Any], **fields: Any) -> dict[str, Any]:
    entries = [{"variant": key, "weight": weight} for key, weight in weights]
    return {"rollout": {"variants": entries, **fields}}


INVALID_SERVINGS = [
    ({"variant": "maybe"}, "variant", "unknown variant 'maybe'"),
    ({}, "variant", "either a variant or a rollout"),
    ({"variant": "on", **rollout(("on", 100))}, "variant", "not both"),
    (rollout(("on", 0), ("off", 0)), "rollout.variants", "at least one weight must be above 0"),
    (rollout(("on", 2**31), ("off", 60)), "rollout.variants", "weights must total at most"),
    (rollout(("on", 50.0), ("off", 50)), "rollout.variants[0].weight", "must be an integer"),
    (rollout(("on", -10), ("off", 110)), "rollout.variants[0].weight", "must be an integer >= 0"),
    (rollout(("on", True), ("off", 99)), "rollout.variants[0].weight", "must be an integer"),
    (rollout(("on", "50"), ("off", 50)), "rollout.variants[0].weight", "must be an integer"),
    (rollout(("on", 50), ("maybe", 50)), "rollout.variants[1].variant", "unknown variant"),
    (rollout(("on", 50), ("on", 50)), "rollout.variants[1].variant", "listed twice"),
    (rollout(), "rollout.variants", "at least one variant"),
    ({"rollout": {"variants": "on"}}, "rollout.variants", "must be a list"),
    ({"rollout": "on"}, "rollout", "must be an object"),
    (rollout(("on", 100), bucketBy=""), "rollout.bucketBy", "attribute name"),
    (rollout(("on", 100), bucketBy=5), "rollout.bucketBy", "attribute name"),
]


@pytest.mark.parametrize(("bad", "field", "message"), INVALID_SERVINGS)
def test_check_serving_names_the_field(bad: dict[str, Any], field: str, message: str) -> None:
    with pytest.raises(DocumentError) as caught:
        check_serving(bad, VARIANTS)
    assert caught.value.field == field
    assert message in caught.value.message


@pytest.mark.parametrize(
    "good",
    [
        {"variant": "on"},
        rollout(("on", 100)),
        rollout(("on", 0), ("off", 100)),
        rollout(("on", 25), ("off", 75), bucketBy="company.id"),
    ],
)
def test_check_serving_accepts_valid_servings(good: dict[str, Any]) -> None:
    check_serving(good, VARIANTS)


# --- compile_document ---------------------------------------------------------------------


def good_flag(**changes: Any) -> dict[str, Any]:
    flag = {
        "type": "boolean",
        "enabled": True,
        "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}],
        "offVariant": "off",
        "defaultServe": {"variant": "on"},
    }
    flag.update(changes)
    return {key: value for key, value in flag.items() if value is not None}


@pytest.mark.parametrize("document", [None, [], "flags", {}, {"flags": []}, {"flags": None}])
def test_a_document_without_flags_raises(document: Any) -> None:
    with pytest.raises(DocumentError):
        compile_document(document)


def test_a_non_integer_version_or_bad_segments_raise() -> None:
    with pytest.raises(DocumentError) as caught:
        compile_document({"flags": {}, "version": "7"})
    assert caught.value.field == "version"
    with pytest.raises(DocumentError) as caught:
        compile_document({"flags": {}, "segments": []})
    assert caught.value.field == "segments"


BROKEN_FLAGS = [
    ("not an object", "a flag must be an object"),
    (good_flag(type="bool"), "type: must be one of"),
    (good_flag(enabled=None), "enabled: must be true or false"),
    (good_flag(enabled="yes"), "enabled: must be true or false"),
    (good_flag(archived="no"), "archived: must be true or false"),
    (good_flag(variants=[]), "variants: a flag needs at least one variant"),
    (good_flag(variants={"on": True}), "variants: must be a list"),
    (good_flag(variants=[{"key": "on", "value": 1}]), "variants[0].value: 1 is not a boolean"),
    (
        good_flag(variants=[{"key": "on", "value": True}, {"key": "on", "value": False}]),
        "variants[1].key: variant 'on' is listed twice",
    ),
    (
        good_flag(variants=[{"key": "yes", "value": True}, {"key": "no", "value": False}]),
        "variants: a boolean flag has exactly on (true) and off (false)",
    ),
    (good_flag(variants=[{"value": True}]), "variants[0].key: must be a non-empty string"),
    (good_flag(offVariant="nope"), "offVariant: unknown variant 'nope'"),
    (good_flag(salt=5), "salt: must be a string"),
    (good_flag(defaultServe=None), "defaultServe: must be an object"),
    (good_flag(defaultServe={"variant": "x"}), "defaultServe.variant: unknown variant 'x'"),
    (
        good_flag(defaultServe=rollout(("on", 0), ("off", 0))),
        "defaultServe.rollout.variants: at least one weight must be above 0",
    ),
    (good_flag(prerequisites=[{"flag": "", "variants": ["on"]}]), "prerequisites[0].flag"),
    (good_flag(prerequisites=[{"flag": "g", "variants": []}]), "prerequisites[0].variants"),
    (good_flag(targets=[{"variant": "x", "values": ["u"]}]), "targets[0].variant: unknown"),
    (good_flag(targets=[{"variant": "on", "values": [1]}]), "targets[0].values"),
    (good_flag(rules=[{"conditions": [], "serve": {"variant": "on"}}]), "rules[0].id"),
    (
        good_flag(rules=[{"id": "1", "conditions": [], "serve": {"variant": "x"}}]),
        "rules[0].serve.variant: unknown variant 'x'",
    ),
    (
        good_flag(
            rules=[
                {"id": "1", "conditions": [], "serve": {"variant": "on"}},
                {
                    "id": "2",
                    "conditions": [{"attribute": "a", "operator": "matches", "values": ["("]}],
                    "serve": {"variant": "on"},
                },
            ]
        ),
        "rules[1].conditions[0].values: invalid regular expression '('",
    ),
    (
        good_flag(
            rules=[
                {
                    "id": "1",
                    "conditions": [{"operator": "in_segment", "values": ["ghost"]}],
                    "serve": {"variant": "on"},
                }
            ]
        ),
        "rules[0].conditions[0].values: unknown segment 'ghost'",
    ),
    (
        good_flag(
            rules=[
                {
                    "id": "1",
                    "conditions": [{"operator": "in_segment", "values": ["broken"]}],
                    "serve": {"variant": "on"},
                }
            ]
        ),
        "segment 'broken' is invalid: conditions[0].values: invalid CIDR 'x'",
    ),
]


@pytest.mark.parametrize(("flag", "details"), BROKEN_FLAGS)
def test_a_broken_flag_evaluates_to_parse_error(flag: Any, details: str) -> None:
    segments = {
        "broken": {"conditions": [{"attribute": "ip", "operator": "in_cidr", "values": ["x"]}]}
    }
    document = {"flags": {"broken": flag, "fine": good_flag()}, "segments": segments}
    snapshot = compile_document(document)
    result = snapshot.evaluate("broken", {"targetingKey": "u"})
    assert result.reason == Reason.ERROR
    assert result.error_code == ErrorCode.PARSE_ERROR
    assert result.value is None and result.variant is None
    assert details in result.error_details
    assert result.error_details.startswith("flag 'broken': ")
    assert snapshot.evaluate("fine", {}).value is True
    assert snapshot.flag_keys == ("broken", "fine")


def test_flag_types_and_values() -> None:
    document = {
        "flags": {
            "s": good_flag(
                type="string",
                variants=[{"key": "a", "value": "A"}, {"key": "b", "value": "B"}],
                offVariant="b",
                defaultServe={"variant": "a"},
            ),
            "n": good_flag(
                type="number",
                variants=[{"key": "one", "value": 1}, {"key": "half", "value": 0.5}],
                offVariant="one",
                defaultServe={"variant": "half"},
            ),
            "j": good_flag(
                type="json",
                variants=[{"key": "x", "value": {"k": [1, 2]}}],
                offVariant="x",
                defaultServe={"variant": "x"},
            ),
            "bad-number": good_flag(
                type="number",
                variants=[{"key": "t", "value": True}],
                offVariant="t",
                defaultServe={"variant": "t"},
            ),
            "bad-json": good_flag(
                type="json",
                variants=[{"key": "x", "value": [1]}],
                offVariant="x",
                defaultServe={"variant": "x"},
            ),
        }
    }
    snapshot = compile_document(document)
    assert snapshot.evaluate("s", {}).value == "A"
    assert snapshot.evaluate("n", {}).value == 0.5
    assert snapshot.evaluate("j", {}).value == {"k": [1, 2]}
    assert snapshot.evaluate("bad-number", {}).error_code == ErrorCode.PARSE_ERROR
    assert snapshot.evaluate("bad-json", {}).error_code == ErrorCode.PARSE_ERROR
