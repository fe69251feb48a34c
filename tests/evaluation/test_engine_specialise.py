"""The evaluation generated per flag shape answers exactly what the general one does.

Each flag below has a shape the generator writes out (string sets in and out of the set,
other operators, targets, rollouts by the targeting key and by another attribute, a rule
without conditions) or one it leaves to the general evaluation (prerequisites, more rules
than it unrolls). Every flag is evaluated for ordinary and hostile contexts, once through the
snapshot as it is and once with every flag forced onto `CompiledFlag.resolve`: the answers
must be equal field for field, errors included.
"""

from __future__ import annotations

from typing import Any

import pytest

from evaluation.engine import compile_document
from evaluation.engine.specialise import MAX_RULES

BOOL = {
    "type": "boolean",
    "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}],
    "offVariant": "off",
    "enabled": True,
}
ROLLOUT = {
    "rollout": {"variants": [{"variant": "on", "weight": 30}, {"variant": "off", "weight": 70}]}
}


def condition(attribute: str, operator: str, *values: Any) -> dict[str, Any]:
    return {"attribute": attribute, "operator": operator, "values": list(values)}


def rule(rule_id: str, *conditions: dict[str, Any], serve: Any = None) -> dict[str, Any]:
    return {"id": rule_id, "conditions": list(conditions), "serve": serve or {"variant": "on"}}


FLAGS: dict[str, dict[str, Any]] = {
    "sets": {
        **BOOL,
        "rules": [
            rule(
                "r1",
                condition("country", "in", "US", "CA", "Ü"),
                condition("plan", "equals", "pro"),
            ),
            rule("r2", condition("country", "not_in", "FR", "É"), serve=ROLLOUT),
        ],
        "defaultServe": {"variant": "off"},
    },
    "not-in": {
        **BOOL,
        "rules": [rule("r1", condition("country", "not_in", "FR", "É"))],
        "defaultServe": {"variant": "off"},
    },
    "mixed": {
        **BOOL,
        "targets": [{"variant": "off", "values": ["user-1", "ü-2"]}],
        "rules": [
            rule("r1", condition("email", "ends_with", "@example.com")),
            rule("r2", condition("age", "gte", 18), condition("plan", "not_equals", "free")),
        ],
        "defaultServe": ROLLOUT,
    },
    "by-attribute": {
        **BOOL,
        "rules": [
            rule(
                "r1",
                condition("plan", "in", "pro"),
                serve={"rollout": {**ROLLOUT["rollout"], "bucketBy": "companyId"}},
            )
        ],
        "defaultServe": {"variant": "off"},
    },
    "unleash": {**BOOL, "bucketing": "unleash", "defaultServe": ROLLOUT},
    "catch-all-rule": {
        **BOOL,
        "rules": [rule("always", serve=ROLLOUT), rule("never", condition("plan", "in", "pro"))],
        "defaultServe": {"variant": "off"},
    },
    "with-prerequisite": {
        **BOOL,
        "prerequisites": [{"flag": "sets", "variants": ["on"]}],
        "defaultServe": {"variant": "on"},
    },
    "many-rules": {
        **BOOL,
        "rules": [rule(f"r{i}", condition("n", "equals", str(i))) for i in range(MAX_RULES + 8)],
        "defaultServe": {"variant": "off"},
    },
}

CONTEXTS: list[Any] = [
    {"targetingKey": "user-1", "country": "US", "plan": "pro"},
    {"targetingKey": "user-2", "country": "FR", "plan": "pro", "companyId": "acme"},
    {"targetingKey": "user-3", "country": "DE", "plan": "free", "age": 30},
    {"targetingKey": "ü-2", "country": "Ü", "plan": "pro", "email": "a@example.com"},
    {"targetingKey": "ü-3", "country": "É", "companyId": 7, "n": str(MAX_RULES + 3)},
    {"country": "US", "plan": "pro"},  # no targeting key: a rollout cannot bucket
    {"targetingKey": "user-4", "country": "\ud800", "plan": "pro"},  # a lone surrogate
    {"targetingKey": "user-5", "country": "ÜS\udfff", "email": "\ud800@example.com"},
    {"targetingKey": "user-6", "country": ["US"], "plan": None, "age": "x", "n": 3},
    {"targetingKey": "\ud800", "country": "US"},
    {"targetingKey": 5},
    "not an object",
]


def _snapshots() -> tuple[Any, Any]:
    document = {"version": 1, "flags": FLAGS}
    generated = compile_document(document)
    general = compile_document(document)
    for flag in general._flags.values():  # noqa: SLF001 - the general evaluation, forced
        flag.run = flag.resolve
    return generated, general


@pytest.mark.parametrize("index", range(len(CONTEXTS)))
def test_generated_evaluation_answers_as_the_general_one(index: int) -> None:
    generated, general = _snapshots()
    context = CONTEXTS[index]
    for key in FLAGS:
        assert generated.evaluate(key, context) == general.evaluate(key, context), key
    assert generated.evaluate_all(context) == general.evaluate_all(context)


def test_the_shapes_are_generated_and_answer_what_the_rules_say() -> None:
    generated, _ = _snapshots()
    pro_us = {"targetingKey": "user-9", "country": "US", "plan": "pro"}
    assert generated.evaluate("sets", pro_us).rule_id == "r1"
    assert generated.evaluate("sets", {"targetingKey": "user-9", "country": "FR"}).reason == (
        "DEFAULT"
    )
    assert generated.evaluate("mixed", {"targetingKey": "ü-2"}).reason == "TARGETING_MATCH"
    assert generated.evaluate("many-rules", {"n": str(MAX_RULES + 5)}).rule_id == (
        f"r{MAX_RULES + 5}"
    )
    assert generated.evaluate("sets", {"country": "\ud800"}).error_code == "INVALID_CONTEXT"
    generated.evaluate_all(pro_us)  # every flag has its evaluation function now
    flags = generated._flags  # noqa: SLF001 - which evaluation each flag got
    generated_ones = {key for key, flag in flags.items() if flag.run != flag.resolve}
    assert generated_ones == {
        "sets",
        "not-in",
        "mixed",
        "by-attribute",
        "unleash",
        "catch-all-rule",
    }
