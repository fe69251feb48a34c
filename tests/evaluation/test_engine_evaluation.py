"""Evaluation order and outcomes: errors, disabled, prerequisites, targets, rules, defaults."""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from evaluation.engine import ErrorCode, EvaluationResult, Reason, Snapshot, compile_document


def flag(**changes: Any) -> dict[str, Any]:
    """A string flag with variants a/b/c, off variant c, serving b by default."""
    document_flag = {
        "type": "string",
        "enabled": True,
        "archived": False,
        "variants": [
            {"key": "a", "value": "A"},
            {"key": "b", "value": "B"},
            {"key": "c", "value": "C"},
        ],
        "offVariant": "c",
        "prerequisites": [],
        "targets": [],
        "rules": [],
        "defaultServe": {"variant": "b"},
    }
    document_flag.update(changes)
    return document_flag


def boolean(on: bool = True, **changes: Any) -> dict[str, Any]:
    document_flag = {
        "type": "boolean",
        "enabled": True,
        "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}],
        "offVariant": "off",
        "defaultServe": {"variant": "on" if on else "off"},
    }
    document_flag.update(changes)
    return document_flag


def rule(rule_id: str, variant: str, *conditions: dict[str, Any]) -> dict[str, Any]:
    return {"id": rule_id, "conditions": list(conditions), "serve": {"variant": variant}}


def equals(attribute: str, *values: Any) -> dict[str, Any]:
    return {"attribute": attribute, "operator": "equals", "values": list(values)}


def snapshot_of(flags: dict[str, Any], **document: Any) -> Snapshot:
    return compile_document({"version": 3, "flags": flags, **document})


def test_an_unknown_flag_is_not_found() -> None:
    result = snapshot_of({}).evaluate("ghost", {})
    assert result == EvaluationResult(
        "ghost",
        None,
        None,
        Reason.ERROR,
        None,
        ErrorCode.FLAG_NOT_FOUND,
        "flag 'ghost' does not exist",
    )


def test_an_archived_flag_is_not_found_and_says_so() -> None:
    snapshot = snapshot_of({"old": flag(archived=True), "new": flag()})
    result = snapshot.evaluate("old", {})
    assert result.error_code == ErrorCode.FLAG_NOT_FOUND
    assert result.reason == Reason.ERROR
    assert "archived" in result.error_details
    assert snapshot.flag_keys == ("new",)
    assert set(snapshot.evaluate_all({})) == {"new"}


def test_an_archived_flag_is_not_found_even_when_broken() -> None:
    snapshot = snapshot_of({"old": {"archived": True}})
    assert snapshot.evaluate("old", {}).error_code == ErrorCode.FLAG_NOT_FOUND


@pytest.mark.parametrize("context", [None, [], "user-1", 42, ("targetingKey", "u")])
def test_a_context_that_is_not_an_object_is_invalid(context: Any) -> None:
    result = snapshot_of({"f": flag()}).evaluate("f", context)
    assert (result.reason, result.error_code) == (Reason.ERROR, ErrorCode.INVALID_CONTEXT)
    assert result.value is None and result.variant is None


@pytest.mark.parametrize("key", [42, 4.2, True, ["u"], {"id": "u"}])
def test_a_targeting_key_that_is_not_a_string_is_invalid(key: Any) -> None:
    result = snapshot_of({"f": flag()}).evaluate("f", {"targetingKey": key})
    assert result.error_code == ErrorCode.INVALID_CONTEXT


def test_a_null_targeting_key_is_absent() -> None:
    result = snapshot_of({"f": flag()}).evaluate("f", {"targetingKey": None})
    assert (result.variant, result.reason) == ("b", Reason.DEFAULT)


def test_a_mapping_context_is_accepted() -> None:
    class Attributes(Mapping[str, Any]):
        def __init__(self, data: dict[str, Any]) -> None:
            self.data = data

        def __getitem__(self, key: str) -> Any:
            return self.data[key]

        def __iter__(self) -> Iterator[str]:
            return iter(self.data)

        def __len__(self) -> int:
            return len(self.data)

    snapshot = snapshot_of({"f": flag(rules=[rule("1", "a", equals("plan", "pro"))])})
    assert snapshot.evaluate("f", Attributes({"plan": "pro"})).variant == "a"


def test_disabled_flag_serves_off_variant() -> None:
    snapshot = snapshot_of({"f": flag(enabled=False, targets=[{"variant": "a", "values": ["u"]}])})
    result = snapshot.evaluate("f", {"targetingKey": "u"})
    assert result == EvaluationResult("f", "C", "c", Reason.DISABLED)


def test_disabled_flag_does_not_need_a_valid_rollout_context() -> None:
    rollout = {"rollout": {"variants": [{"variant": "a", "weight": 100}]}}
    result = snapshot_of({"f": flag(enabled=False, defaultServe=rollout)}).evaluate("f", {})
    assert result.reason == Reason.DISABLED


def test_type_mismatch() -> None:
    snapshot = snapshot_of(
        {
            "f": flag(),
            "j": flag(
                type="json",
                variants=[{"key": "a", "value": {}}],
                offVariant="a",
                defaultServe={"variant": "a"},
            ),
        }
    )
    result = snapshot.evaluate("f", {}, expected_type="boolean")
    assert (result.reason, result.error_code, result.value) == (
        Reason.ERROR,
        ErrorCode.TYPE_MISMATCH,
        None,
    )
    assert snapshot.evaluate("f", {}, expected_type="string").value == "B"
    assert snapshot.evaluate("j", {}, expected_type="json").value == {}
    assert snapshot.evaluate("j", {}, expected_type="object").value == {}
    assert snapshot.evaluate("f", {}, expected_type="object").error_code == ErrorCode.TYPE_MISMATCH


def test_type_mismatch_applies_to_disabled_flags_too() -> None:
    snapshot = snapshot_of({"f": flag(enabled=False)})
    assert snapshot.evaluate("f", {}, "number").error_code == ErrorCode.TYPE_MISMATCH


# --- prerequisites ------------------------------------------------------------------------


def test_a_satisfied_prerequisite_lets_the_flag_evaluate() -> None:
    snapshot = snapshot_of(
        {"api": boolean(True), "f": flag(prerequisites=[{"flag": "api", "variants": ["on"]}])}
    )
    assert snapshot.evaluate("f", {}).variant == "b"


def test_a_prerequisite_serving_another_variant_fails() -> None:
    snapshot = snapshot_of(
        {"api": boolean(False), "f": flag(prerequisites=[{"flag": "api", "variants": ["on"]}])}
    )
    assert snapshot.evaluate("f", {}) == EvaluationResult("f", "C", "c", Reason.PREREQUISITE_FAILED)


def test_a_prerequisite_is_evaluated_with_the_same_context() -> None:
    api = boolean(False, rules=[rule("9", "on", equals("plan", "pro"))])
    snapshot = snapshot_of(
        {"api": api, "f": flag(prerequisites=[{"flag": "api", "variants": ["on"]}])}
    )
    assert snapshot.evaluate("f", {"plan": "pro"}).reason == Reason.DEFAULT
    assert snapshot.evaluate("f", {"plan": "free"}).reason == Reason.PREREQUISITE_FAILED


def test_every_prerequisite_must_hold() -> None:
    snapshot = snapshot_of(
        {
            "yes": boolean(True),
            "no": boolean(False),
            "f": flag(
                prerequisites=[
                    {"flag": "yes", "variants": ["on"]},
                    {"flag": "no", "variants": ["on"]},
                ]
            ),
            "g": flag(
                prerequisites=[
                    {"flag": "yes", "variants": ["on"]},
                    {"flag": "no", "variants": ["off", "on"]},
                ]
            ),
        }
    )
    assert snapshot.evaluate("f", {}).reason == Reason.PREREQUISITE_FAILED
    assert snapshot.evaluate("g", {}).reason == Reason.DEFAULT


def test_a_disabled_prerequisite_serves_its_off_variant() -> None:
    snapshot = snapshot_of(
        {
            "api": boolean(True, enabled=False),
            "f": flag(prerequisites=[{"flag": "api", "variants": ["on"]}]),
            "g": flag(prerequisites=[{"flag": "api", "variants": ["off"]}]),
        }
    )
    assert snapshot.evaluate("f", {}).reason == Reason.PREREQUISITE_FAILED
    assert snapshot.evaluate("g", {}).reason == Reason.DEFAULT


@pytest.mark.parametrize(
    "prerequisite",
    [
        {"flag": "ghost", "variants": ["on"]},
        {"flag": "archived", "variants": ["on"]},
        {"flag": "broken", "variants": ["on"]},
        {"flag": "needs-key", "variants": ["on"]},
    ],
)
def test_a_missing_broken_or_erroring_prerequisite_is_not_satisfied(
    prerequisite: dict[str, Any],
) -> None:
    rollout = {"rollout": {"variants": [{"variant": "on", "weight": 100}]}}
    snapshot = snapshot_of(
        {
            "archived": boolean(True, archived=True),
            "broken": boolean(True, offVariant="nope"),
            "needs-key": boolean(True, defaultServe=rollout),
            "f": flag(prerequisites=[prerequisite]),
        }
    )
    assert snapshot.evaluate("f", {}).reason == Reason.PREREQUISITE_FAILED


def test_a_prerequisite_cycle_is_not_satisfied() -> None:
    snapshot = snapshot_of(
        {
            "a": boolean(True, prerequisites=[{"flag": "b", "variants": ["on"]}]),
            "b": boolean(True, prerequisites=[{"flag": "a", "variants": ["on"]}]),
            "self": boolean(True, prerequisites=[{"flag": "self", "variants": ["on"]}]),
            "c": boolean(True, prerequisites=[{"flag": "a", "variants": ["on", "off"]}]),
        }
    )
    for key in ("a", "b", "self"):
        result = snapshot.evaluate(key, {})
        assert (result.reason, result.value) == (Reason.PREREQUISITE_FAILED, False)
    # c's prerequisite a fails on its cycle and serves "off", which c accepts.
    assert snapshot.evaluate("c", {}).reason == Reason.DEFAULT


def test_a_deep_prerequisite_chain_is_cut() -> None:
    flags = {"f0": boolean(True)}
    for depth in range(1, 40):
        flags[f"f{depth}"] = boolean(
            True, prerequisites=[{"flag": f"f{depth - 1}", "variants": ["on"]}]
        )
    snapshot = snapshot_of(flags)
    assert snapshot.evaluate("f5", {}).reason == Reason.DEFAULT
    assert snapshot.evaluate("f39", {}).reason == Reason.PREREQUISITE_FAILED


def test_prerequisites_come_before_targets() -> None:
    snapshot = snapshot_of(
        {
            "api": boolean(False),
            "f": flag(
                prerequisites=[{"flag": "api", "variants": ["on"]}],
                targets=[{"variant": "a", "values": ["u"]}],
            ),
        }
    )
    assert snapshot.evaluate("f", {"targetingKey": "u"}).reason == Reason.PREREQUISITE_FAILED


# --- targets, rules, default --------------------------------------------------------------


def test_an_individual_target_wins_over_rules() -> None:
    snapshot = snapshot_of(
        {
            "f": flag(
                targets=[
                    {"variant": "a", "values": ["u1", "u2"]},
                    {"variant": "c", "values": ["u3", "u2"]},
                ],
                rules=[rule("1", "b")],
            )
        }
    )
    assert snapshot.evaluate("f", {"targetingKey": "u2"}) == EvaluationResult(
        "f", "A", "a", Reason.TARGETING_MATCH
    )
    assert snapshot.evaluate("f", {"targetingKey": "u3"}).variant == "c"
    assert snapshot.evaluate("f", {"targetingKey": "U1"}).rule_id == "1"  # case-sensitive
    assert snapshot.evaluate("f", {}).rule_id == "1"


def test_the_first_matching_rule_wins() -> None:
    snapshot = snapshot_of(
        {
            "f": flag(
                rules=[
                    rule("first", "a", equals("plan", "pro")),
                    rule("second", "c", equals("country", "FR")),
                    rule("third", "b", equals("plan", "pro")),
                ]
            )
        }
    )
    result = snapshot.evaluate("f", {"plan": "pro", "country": "FR"})
    assert result == EvaluationResult("f", "A", "a", Reason.TARGETING_MATCH, "first")
    assert snapshot.evaluate("f", {"country": "FR"}).rule_id == "second"
    assert snapshot.evaluate("f", {"country": "US"}) == EvaluationResult(
        "f", "B", "b", Reason.DEFAULT
    )


def test_a_rule_without_conditions_always_matches() -> None:
    snapshot = snapshot_of({"f": flag(rules=[rule("all", "a"), rule("never", "c")])})
    assert snapshot.evaluate("f", {}).rule_id == "all"


def test_a_rule_serving_a_rollout_reports_split_and_its_id() -> None:
    rollout = {"rollout": {"variants": [{"variant": "a", "weight": 100}]}}
    snapshot = snapshot_of({"f": flag(rules=[{"id": "7", "conditions": [], "serve": rollout}])})
    assert snapshot.evaluate("f", {"targetingKey": "u"}) == EvaluationResult(
        "f", "A", "a", Reason.SPLIT, "7"
    )


def test_segments() -> None:
    segments = {
        "staff": {
            "conditions": [
                {"attribute": "email", "operator": "ends_with", "values": ["@example.com"]}
            ],
            "included": ["guest-1"],
            "excluded": ["intern@example.com"],
        },
        "listed-only": {"included": ["vip"]},
    }
    in_staff = {"operator": "in_segment", "values": ["staff"]}
    not_staff = {"operator": "in_segment", "values": ["staff", "listed-only"], "negate": True}
    snapshot = snapshot_of(
        {
            "f": flag(rules=[rule("1", "a", in_staff)]),
            "g": flag(rules=[rule("1", "a", not_staff)]),
        },
        segments=segments,
    )

    def variant(key: str, **context: Any) -> str:
        return snapshot.evaluate(key, context).variant

    assert variant("f", email="ann@example.com") == "a"
    assert variant("f", targetingKey="guest-1", email="guest@else.org") == "a"  # included
    assert variant("f", targetingKey="intern@example.com", email="x@example.com") == "b"
    assert variant("f", email="bob@else.org") == "b"
    assert variant("f") == "b"
    assert variant("g", email="bob@else.org") == "a"
    assert variant("g", targetingKey="vip") == "b"
    assert variant("g", email="ann@example.com") == "b"


def test_a_segment_without_conditions_holds_only_its_included_keys() -> None:
    snapshot = snapshot_of(
        {"f": flag(rules=[rule("1", "a", {"operator": "in_segment", "values": ["s"]})])},
        segments={"s": {"conditions": [], "included": ["u"]}},
    )
    assert snapshot.evaluate("f", {"targetingKey": "u"}).variant == "a"
    assert snapshot.evaluate("f", {"targetingKey": "v"}).variant == "b"


def test_a_segment_referencing_a_segment_breaks_the_flags_using_it() -> None:
    segments = {
        "s": {"conditions": [{"operator": "in_segment", "values": ["t"]}]},
        "t": {"included": ["u"]},
    }
    snapshot = snapshot_of(
        {
            "f": flag(rules=[rule("1", "a", {"operator": "in_segment", "values": ["s"]})]),
            "g": flag(rules=[rule("1", "a", {"operator": "in_segment", "values": ["t"]})]),
        },
        segments=segments,
    )
    result = snapshot.evaluate("f", {"targetingKey": "u"})
    assert result.error_code == ErrorCode.PARSE_ERROR
    assert "cannot use in_segment" in result.error_details
    assert snapshot.evaluate("g", {"targetingKey": "u"}).variant == "a"


# --- the snapshot -------------------------------------------------------------------------


def test_snapshot_properties() -> None:
    document = {"version": 42, "flags": {"x": flag(), "y": flag(archived=True), "z": "broken"}}
    snapshot = compile_document(document)
    assert snapshot.version == 42
    assert snapshot.flag_keys == ("x", "z")
    assert snapshot.document is document
    assert compile_document({"flags": {}}).version == 0


def test_evaluate_all_covers_every_flag_that_is_not_archived() -> None:
    snapshot = snapshot_of(
        {"x": flag(), "y": flag(archived=True), "z": "broken", "w": boolean(False)}
    )
    results = snapshot.evaluate_all({"targetingKey": "u"})
    assert list(results) == ["x", "z", "w"]
    assert results["x"].value == "B"
    assert results["z"].error_code == ErrorCode.PARSE_ERROR
    assert results["w"].value is False
    assert snapshot.evaluate_all(7)["x"].error_code == ErrorCode.INVALID_CONTEXT


def test_unexpected_exceptions_become_general_errors() -> None:
    class Exploding(dict):
        def get(self, key: str, default: Any = None) -> Any:
            raise RuntimeError("boom")

    snapshot = snapshot_of({"f": flag()})
    result = snapshot.evaluate("f", Exploding())
    assert (result.reason, result.error_code, result.value, result.variant) == (
        Reason.ERROR,
        ErrorCode.GENERAL,
        None,
        None,
    )
    assert "boom" in result.error_details
    assert snapshot.evaluate_all(Exploding())["f"].error_code == ErrorCode.GENERAL
    assert snapshot.evaluate(["unhashable"], {}).reason == Reason.ERROR  # type: ignore[arg-type]


def test_results_are_frozen_and_serialise() -> None:
    result = snapshot_of({"f": flag(rules=[rule("1", "a")])}).evaluate("f", {})
    with pytest.raises(AttributeError):
        result.value = "X"  # type: ignore[misc]
    assert result.to_dict() == {
        "flag_key": "f",
        "value": "A",
        "variant": "a",
        "reason": "TARGETING_MATCH",
        "rule_id": "1",
        "error_code": None,
        "error_details": None,
    }


def test_editing_the_document_after_compiling_does_not_change_the_snapshot() -> None:
    document = {
        "flags": {
            "j": flag(
                type="json",
                variants=[{"key": "a", "value": {"limit": 1}}],
                offVariant="a",
                defaultServe={"variant": "a"},
            ),
            "f": flag(rules=[rule("1", "a", equals("plan", "pro"))]),
        }
    }
    snapshot = compile_document(document)
    document["flags"]["j"]["variants"][0]["value"]["limit"] = 2
    document["flags"]["f"]["rules"][0]["conditions"][0]["values"].append("free")
    document["flags"]["f"]["enabled"] = False
    assert snapshot.evaluate("j", {}).value == {"limit": 1}
    assert snapshot.evaluate("f", {"plan": "free"}).variant == "b"
    assert snapshot.evaluate("f", {"plan": "pro"}).variant == "a"


def test_a_snapshot_is_safe_to_share_between_threads() -> None:
    rollout = {
        "rollout": {"variants": [{"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}]}
    }
    snapshot = snapshot_of({"f": flag(defaultServe=rollout)})
    expected = {f"u{i}": snapshot.evaluate("f", {"targetingKey": f"u{i}"}) for i in range(500)}
    mismatches: list[str] = []

    def work() -> None:
        for key, result in expected.items():
            if snapshot.evaluate("f", {"targetingKey": key}) != result:
                mismatches.append(key)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert mismatches == []
