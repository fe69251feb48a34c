"""The engine's strictness: null optional fields, document strings, huge values."""

from __future__ import annotations

from typing import Any

import pytest

from evaluation.engine import DocumentError, ErrorCode, compile_document


def flag(**fields: Any) -> dict[str, Any]:
    return {
        "type": "boolean",
        "enabled": True,
        "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}],
        "offVariant": "off",
        "defaultServe": {"variant": "on"},
        **fields,
    }


ROLLOUT = {"variants": [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}]}


def test_every_null_optional_field_is_its_default() -> None:
    condition = {"attribute": "plan", "operator": "exists"}
    absent = {
        "flags": {
            "f": flag(
                rules=[
                    {"id": "1", "conditions": [condition], "serve": {"rollout": ROLLOUT}},
                    {"id": "2", "serve": {"variant": "off"}},
                ]
            )
        }
    }
    nulls = {
        "version": None,
        "segments": None,
        "schemaVersion": None,
        "flags": {
            "f": flag(
                archived=None,
                salt=None,
                prerequisites=None,
                targets=None,
                metadata=None,
                rules=[
                    {
                        "id": "1",
                        "name": None,
                        "conditions": [{**condition, "values": None, "negate": None}],
                        "serve": {"rollout": {**ROLLOUT, "bucketBy": None}},
                    },
                    {"id": "2", "conditions": None, "serve": {"variant": "off"}},
                ],
            )
        },
    }
    one, other = compile_document(absent), compile_document(nulls)
    assert one.version == other.version == 0
    for context in ({}, {"plan": "pro", "targetingKey": f"user-{7}"}, {"targetingKey": "u"}):
        first, second = one.evaluate("f", context), other.evaluate("f", context)
        assert (first.variant, first.reason) == (second.variant, second.reason)
    assert other.evaluate("f", {"plan": "pro", "targetingKey": "u"}).error_code is None


@pytest.mark.parametrize("version", ["3", 3.0, True, [], {}])
def test_a_version_that_is_not_an_integer_is_refused(version: object) -> None:
    with pytest.raises(DocumentError) as caught:
        compile_document({"version": version, "flags": {}})
    assert caught.value.field == "version"


@pytest.mark.parametrize(
    ("fields", "where"),
    [
        ({"salt": "s\ud800"}, "salt"),
        ({"variants": [{"key": "on\udc00", "value": True}]}, "variants[0].key"),
        ({"targets": [{"variant": "on", "values": ["ok", "\udfff"]}]}, "targets[0].values"),
        ({"rules": [{"id": "\ud800", "serve": {"variant": "on"}}]}, "rules[0].id"),
        (
            {"defaultServe": {"rollout": {**ROLLOUT, "bucketBy": "a\ud800"}}},
            "defaultServe.rollout.bucketBy",
        ),
        (
            {
                "rules": [
                    {
                        "id": "1",
                        "conditions": [{"attribute": "a", "operator": "in", "values": ["\ud800"]}],
                        "serve": {"variant": "on"},
                    }
                ]
            },
            "rules[0].conditions[0].values",
        ),
    ],
)
def test_a_document_string_that_is_not_valid_unicode_is_a_parse_error(
    fields: dict[str, Any], where: str
) -> None:
    snapshot = compile_document({"flags": {"f": flag(**fields), "ok": flag()}})
    result = snapshot.evaluate("f", {"targetingKey": "u"})
    assert result.error_code == ErrorCode.PARSE_ERROR
    assert f"{where}: " in result.error_details and "not valid Unicode" in result.error_details
    assert snapshot.evaluate("ok", {}).error_code is None


def test_a_served_json_value_that_is_not_valid_unicode_is_a_parse_error() -> None:
    document = {
        "flags": {
            "j": {
                "type": "json",
                "enabled": True,
                "variants": [{"key": "v", "value": {"deep": [{"\ud800": 1}]}}],
                "offVariant": "v",
                "defaultServe": {"variant": "v"},
            }
        }
    }
    result = compile_document(document).evaluate("j", {})
    assert result.error_code == ErrorCode.PARSE_ERROR
    assert "variants[0].value" in result.error_details


def test_huge_versions_and_numbers_compare_without_errors() -> None:
    rules = [
        {
            "id": "1",
            "conditions": [{"attribute": "app", "operator": "semver_gt", "values": ["1.0.0"]}],
            "serve": {"variant": "on"},
        }
    ]
    dates = [
        {
            "id": "2",
            "conditions": [{"attribute": "at", "operator": "after", "values": [0]}],
            "serve": {"variant": "on"},
        }
    ]
    snapshot = compile_document(
        {
            "flags": {
                "v": flag(rules=rules, defaultServe={"variant": "off"}),
                "d": flag(rules=dates, defaultServe={"variant": "off"}),
            }
        }
    )
    assert snapshot.evaluate("v", {"app": "9" * 5_000 + ".0.0"}).variant == "on"
    assert snapshot.evaluate("v", {"app": "1.0.0-" + "1" * 5_000}).variant == "off"
    assert snapshot.evaluate("d", {"at": 10**400}).variant == "off"  # no double holds it
    assert snapshot.evaluate("d", {"at": float("inf")}).variant == "off"
    assert snapshot.evaluate("d", {"at": 1}).variant == "on"
