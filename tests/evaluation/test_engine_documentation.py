"""The examples in the documentation compile and behave as the documentation says."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

from evaluation.engine import Reason, compile_document

DOCS = Path(__file__).resolve().parents[2] / "docs"


def documented_example() -> dict:
    text = (DOCS / "flag-document.md").read_text()
    return json.loads(text.split("```json", 1)[1].split("```", 1)[0])


def test_the_documented_flag_document_is_valid_and_compiles() -> None:
    document = documented_example()
    schema = json.loads((DOCS / "flag-document.schema.json").read_text())
    jsonschema.Draft202012Validator(schema).validate(document)
    snapshot = compile_document(document)
    assert snapshot.version == 42
    assert snapshot.flag_keys == ("new-checkout",)
    # Its prerequisite flag is not in the example, so the flag serves its off variant.
    result = snapshot.evaluate("new-checkout", {"targetingKey": "user-1"})
    assert (result.value, result.reason) == (False, Reason.PREREQUISITE_FAILED)


def test_the_documented_flag_evaluates_as_described_once_its_prerequisite_exists() -> None:
    document = documented_example()
    document["flags"]["checkout-api"] = {
        "type": "boolean",
        "enabled": True,
        "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}],
        "offVariant": "off",
        "defaultServe": {"variant": "on"},
    }
    snapshot = compile_document(document)
    target = snapshot.evaluate("new-checkout", {"targetingKey": "user-1"})
    assert (target.value, target.reason) == (True, Reason.TARGETING_MATCH)
    rule = snapshot.evaluate("new-checkout", {"targetingKey": "user-7", "country": "US"})
    assert (rule.value, rule.reason, rule.rule_id) == (True, Reason.TARGETING_MATCH, "17")
    excluded = snapshot.evaluate(
        "new-checkout", {"targetingKey": "user-9", "country": "US", "email": "a@example.com"}
    )
    assert excluded.reason == Reason.SPLIT
