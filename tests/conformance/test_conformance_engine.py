"""Runs the language-neutral conformance suite (tests/conformance/*.json) against the engine."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from evaluation.engine import compile_document

HERE = Path(__file__).resolve().parent
SCHEMA = json.loads((HERE.parents[1] / "docs" / "flag-document.schema.json").read_text())
SUITES = {path.stem: json.loads(path.read_text()) for path in sorted(HERE.glob("*.json"))}
CASES = [
    pytest.param(name, index, id=f"{name}[{index}]-{case['flag']}")
    for name, suite in SUITES.items()
    for index, case in enumerate(suite["cases"])
]


def test_the_suite_is_not_empty() -> None:
    assert {"operators", "segments", "prerequisites", "targeting", "errors", "rollouts"} <= set(
        SUITES
    )
    assert len(CASES) > 500


def test_the_schema_is_valid() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


@pytest.mark.parametrize("name", sorted(SUITES))
def test_every_document_matches_the_schema(name: str) -> None:
    jsonschema.Draft202012Validator(SCHEMA).validate(SUITES[name]["document"])


@pytest.mark.parametrize("name", sorted(SUITES))
def test_every_suite_has_the_documented_shape(name: str) -> None:
    suite = SUITES[name]
    assert set(suite) == {"name", "description", "document", "cases"}
    assert suite["name"] == name
    for case in suite["cases"]:
        assert set(case) <= {"flag", "description", "context", "expected_type", "expect"}
        assert {"flag", "context", "expect"} <= set(case)
        assert set(case["expect"]) <= {"value", "variant", "reason", "error_code"}
        assert {"value", "variant", "reason"} <= set(case["expect"])


_SNAPSHOTS: dict[str, Any] = {}


def _snapshot(name: str) -> Any:
    if name not in _SNAPSHOTS:
        _SNAPSHOTS[name] = compile_document(SUITES[name]["document"])
    return _SNAPSHOTS[name]


@pytest.mark.parametrize(("name", "index"), CASES)
def test_case(name: str, index: int) -> None:
    case = SUITES[name]["cases"][index]
    result = _snapshot(name).evaluate(case["flag"], case["context"], case.get("expected_type"))
    expect = case["expect"]
    actual = {
        "value": result.value,
        "variant": result.variant,
        "reason": result.reason,
        "error_code": result.error_code,
    }
    wanted = {**expect, "error_code": expect.get("error_code")}
    assert actual == wanted, case.get("description", "")
    # JSON has no int/float or bool/int distinction to lose: compare the JSON forms too.
    assert json.dumps(result.value, sort_keys=True) == json.dumps(expect["value"], sort_keys=True)


@pytest.mark.parametrize("name", sorted(SUITES))
def test_evaluate_all_answers_every_flag_as_evaluate_does(name: str) -> None:
    # Two snapshots drawing `$random` from generators seeded alike, read in the same order;
    # only the details of an error may be worded differently (the context is checked once).
    document = SUITES[name]["document"]
    bulk = compile_document(document, generator=random.Random(1))
    single = compile_document(document, generator=random.Random(1))
    for case in SUITES[name]["cases"]:
        answers = bulk.evaluate_all(case["context"])
        assert list(answers) == list(bulk.flag_keys)
        for key, answer in answers.items():
            alone = single.evaluate(key, case["context"])
            assert replace(answer, error_details=None) == replace(alone, error_details=None)
