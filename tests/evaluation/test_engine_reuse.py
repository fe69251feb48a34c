"""Compiling a new version with the previous snapshot reuses what did not change."""

from __future__ import annotations

import copy
import random
from typing import Any

import pytest

from evaluation.engine import ErrorCode, Reason, Snapshot, compile_document
from tests.evaluation.test_engine_evaluation import boolean, rule

CONTEXTS = [
    {"targetingKey": f"user-{index}", "country": country, "plan": plan, "email": email}
    for index, (country, plan, email) in enumerate(
        [
            ("US", "pro", "a@example.com"),
            ("FR", "pro", "b@test.org"),
            ("CA", "free", "c@example.com"),
            ("GB", "team", "d@beta.example.com"),
            ("DE", "pro", "e@beta.example.com"),
        ]
    )
] + [{}, {"country": "US"}]


def rollout_flag(country: str = "US") -> dict[str, Any]:
    in_country = {"attribute": "country", "operator": "in", "values": [country]}
    weights = [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}]
    return boolean(
        rules=[rule("1", "on", in_country)], defaultServe={"rollout": {"variants": weights}}
    )


def segment_flag() -> dict[str, Any]:
    flag = rollout_flag()
    flag["rules"][0]["conditions"] = [{"operator": "in_segment", "values": ["beta"]}]
    return flag


def document(flags: int = 20) -> dict[str, Any]:
    entries = {f"flag-{index}": rollout_flag() for index in range(flags)}
    entries["segmented"] = segment_flag()
    entries["numbers"] = {
        "type": "number",
        "enabled": True,
        "variants": [{"key": "one", "value": 1}, {"key": "two", "value": 2}],
        "offVariant": "two",
        "defaultServe": {"variant": "one"},
    }
    return {
        "version": 1,
        "flags": entries,
        "segments": {
            "beta": {
                "conditions": [
                    {"attribute": "email", "operator": "ends_with", "values": ["@beta.example.com"]}
                ]
            }
        },
    }


def next_version(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot's document as the next version arrives: new objects throughout."""
    fresh = copy.deepcopy(snapshot.document)
    fresh["version"] += 1
    return fresh


def assert_answers_as_from_scratch(snapshot: Snapshot) -> None:
    scratch = compile_document(snapshot.document)
    for context in CONTEXTS:
        assert snapshot.evaluate_all(context) == scratch.evaluate_all(context)
        for key in snapshot.flag_keys:
            assert snapshot.evaluate(key, context) == scratch.evaluate(key, context)


def test_a_compile_without_a_previous_snapshot_compiles_every_flag() -> None:
    assert compile_document(document()).compiled_flags == 22


def test_toggling_one_flag_compiles_only_that_flag() -> None:
    previous = compile_document(document())
    changed = next_version(previous)
    changed["flags"]["flag-3"]["enabled"] = False

    snapshot = compile_document(changed, previous=previous)

    assert snapshot.compiled_flags == 1
    assert snapshot.evaluate("flag-3", {"country": "US"}).reason == Reason.DISABLED
    assert snapshot.evaluate("flag-4", {"country": "US"}).value is True
    assert_answers_as_from_scratch(snapshot)


def test_each_version_reuses_the_one_before() -> None:
    snapshot = compile_document(document())
    for version in range(5):
        changed = next_version(snapshot)
        changed["flags"][f"flag-{version}"]["rules"][0]["conditions"][0]["values"] = ["FR"]
        snapshot = compile_document(changed, previous=snapshot)
        assert snapshot.compiled_flags == 1
    assert snapshot.evaluate("flag-4", {"targetingKey": "x", "country": "FR"}).value is True
    assert_answers_as_from_scratch(snapshot)


def test_added_and_removed_flags() -> None:
    previous = compile_document(document())
    changed = next_version(previous)
    del changed["flags"]["flag-0"]
    changed["flags"]["new"] = rollout_flag("FR")

    snapshot = compile_document(changed, previous=previous)

    assert snapshot.compiled_flags == 1
    assert snapshot.evaluate("flag-0", {}).error_code == ErrorCode.FLAG_NOT_FOUND
    assert "flag-0" not in snapshot.flag_keys
    assert snapshot.evaluate("new", {"country": "FR"}).value is True
    assert_answers_as_from_scratch(snapshot)


def test_a_changed_segment_recompiles_the_flags_that_read_it() -> None:
    previous = compile_document(document())
    beta = {"targetingKey": "user-1", "email": "b@test.org"}
    assert previous.evaluate("segmented", beta).reason == Reason.SPLIT
    changed = next_version(previous)
    changed["segments"]["beta"]["included"] = ["user-1"]

    snapshot = compile_document(changed, previous=previous)

    assert snapshot.compiled_flags == 1  # "segmented", the one flag that reads it
    assert snapshot.evaluate("segmented", beta).reason == Reason.TARGETING_MATCH
    assert_answers_as_from_scratch(snapshot)


def test_a_removed_segment_breaks_the_flags_that_read_it() -> None:
    previous = compile_document(document())
    changed = next_version(previous)
    del changed["segments"]["beta"]

    snapshot = compile_document(changed, previous=previous)

    assert snapshot.compiled_flags == 1
    assert snapshot.evaluate("segmented", {}).error_code == ErrorCode.PARSE_ERROR
    assert_answers_as_from_scratch(snapshot)


def test_a_broken_flag_is_compiled_again_when_what_it_lacked_arrives() -> None:
    first = document()
    del first["segments"]["beta"]
    previous = compile_document(first)
    assert previous.evaluate("segmented", {}).error_code == ErrorCode.PARSE_ERROR
    changed = next_version(previous)
    changed["segments"] = document()["segments"]

    snapshot = compile_document(changed, previous=previous)

    in_beta = {"email": "e@beta.example.com"}
    assert snapshot.evaluate("segmented", in_beta).reason == Reason.TARGETING_MATCH
    assert_answers_as_from_scratch(snapshot)


def test_a_value_of_another_type_is_a_change() -> None:
    # 1 == 1.0 == True in Python; in a flag document they are three different values.
    previous = compile_document(document())
    changed = next_version(previous)
    changed["flags"]["numbers"]["variants"][0]["value"] = 1.0
    changed["flags"]["flag-0"]["enabled"] = 1

    snapshot = compile_document(changed, previous=previous)

    assert snapshot.compiled_flags == 2
    served = snapshot.evaluate("numbers", {}).value
    assert served == 1.0 and served.__class__ is float
    assert snapshot.evaluate("flag-0", {}).error_code == ErrorCode.PARSE_ERROR
    assert_answers_as_from_scratch(snapshot)


def test_a_document_edited_in_place_is_compiled_anew() -> None:
    previous = compile_document(document())
    edited = previous.document
    edited["flags"]["flag-0"]["enabled"] = False

    snapshot = compile_document(edited, previous=previous)

    assert snapshot.compiled_flags == 22
    assert snapshot.evaluate("flag-0", {"country": "US"}).reason == Reason.DISABLED


def test_a_new_document_holding_the_previous_parts_reuses_them_and_compiles_the_new_ones() -> None:
    # A builder that keeps the entries of unchanged flags (evaluation.documents) hands the
    # very objects again, in a new document; the changed flag is a new object.
    previous = compile_document(document())
    flags = dict(previous.document["flags"])
    flags["flag-3"] = {**flags["flag-3"], "enabled": False}
    segments = dict(previous.document["segments"])
    segments["beta"] = {"conditions": [], "included": ["user-0"]}
    changed = {**previous.document, "version": 2, "flags": flags, "segments": segments}

    snapshot = compile_document(changed, previous=previous)

    # flag-3 changed; "segmented" asks for the changed segment.
    assert snapshot.compiled_flags == 2
    assert snapshot.evaluate("flag-3", {"country": "US"}).reason == Reason.DISABLED
    in_segment = snapshot.evaluate("segmented", {"targetingKey": "user-0"})
    assert in_segment.reason == Reason.TARGETING_MATCH and in_segment.value is True
    assert previous.evaluate("segmented", {"targetingKey": "user-0"}).reason != in_segment.reason
    assert_answers_as_from_scratch(snapshot)
    again = {**changed, "version": 3, "flags": dict(flags), "segments": dict(segments)}
    assert compile_document(again, previous=snapshot).compiled_flags == 0


def test_another_generator_reuses_nothing() -> None:
    # Compiled `$random` conditions and rollouts draw from the generator they were given.
    generator = random.Random(1)
    previous = compile_document(document(), generator=generator)
    other = random.Random(1)

    assert (
        compile_document(next_version(previous), previous=previous, generator=other).compiled_flags
        == 22
    )
    assert (
        compile_document(
            next_version(previous), previous=previous, generator=generator
        ).compiled_flags
        == 0
    )


def _json_flag() -> dict[str, Any]:
    return {
        "type": "json",
        "enabled": True,
        "variants": [
            {"key": "a", "value": {"size": 1, "tags": ["x", "y"], "ratio": 0.0}},
            {"key": "b", "value": {"size": 2}},
        ],
        "offVariant": "b",
        "defaultServe": {"variant": "a"},
    }


def _set(path: tuple[Any, ...], value: Any) -> Any:
    def change(document: dict[str, Any]) -> None:
        node: Any = document["flags"]
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = value

    return change


def _reorder_value(document: dict[str, Any]) -> None:
    value = document["flags"]["shaped"]["variants"][0]["value"]
    document["flags"]["shaped"]["variants"][0]["value"] = dict(reversed(list(value.items())))


DEEP_CHANGES = {
    "a rule's value in a list": _set(("flag-2", "rules", 0, "conditions", 0, "values", 0), "CA"),
    "a weight": _set(("flag-2", "defaultServe", "rollout", "variants", 0, "weight"), 26),
    "a weight of another type": _set(
        ("flag-2", "defaultServe", "rollout", "variants", 0, "weight"), 25.0
    ),
    "a boolean variant's value": _set(("flag-2", "variants", 0, "value"), 1),
    "a number variant's value": _set(("numbers", "variants", 0, "value"), 1.0),
    "a JSON variant's nested number": _set(("shaped", "variants", 0, "value", "size"), True),
    "a JSON variant's nested list": _set(("shaped", "variants", 0, "value", "tags", 1), "z"),
    "a zero's sign": _set(("shaped", "variants", 0, "value", "ratio"), -0.0),
    "the order of a JSON variant's keys": _reorder_value,
    "a rule id": _set(("flag-2", "rules", 0, "id"), "2"),
    "an added field": _set(("flag-2", "salt"), "other"),
}


@pytest.mark.parametrize("change", list(DEEP_CHANGES), ids=list(DEEP_CHANGES))
def test_a_deep_change_in_a_new_document_is_compiled_again(change: str) -> None:
    first = document()
    first["flags"]["shaped"] = _json_flag()
    previous = compile_document(first)
    for _ in range(2):  # the second time, against the marks the first compare recorded
        changed = next_version(previous)
        DEEP_CHANGES[change](changed)

        snapshot = compile_document(changed, previous=previous)

        assert snapshot.compiled_flags == 1
        assert_answers_as_from_scratch(snapshot)
        for context in CONTEXTS:
            for key in snapshot.flag_keys:
                answer = snapshot.evaluate(key, context)
                expected = compile_document(changed).evaluate(key, context)
                assert repr(answer.value) == repr(expected.value)  # 1, 1.0, True, -0.0 apart
        # Unchanged since: reused, but for a flag the change broke, which is compiled again.
        broken = [
            key
            for key in snapshot.flag_keys
            if snapshot.evaluate(key, {}).error_code == ErrorCode.PARSE_ERROR
        ]
        unchanged_again = compile_document(next_version(snapshot), previous=snapshot)
        assert unchanged_again.compiled_flags == len(broken)
        previous = compile_document(next_version(previous), previous=previous)
