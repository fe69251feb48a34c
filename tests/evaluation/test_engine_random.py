"""The `$random` attribute: a bucket value drawn anew at every read, from the generator the
snapshot is given (Unleash's `random` stickiness). The engine keeps no state of its own."""

from __future__ import annotations

import random
from collections import Counter
from typing import Any

from evaluation.engine import Reason, compile_document

DRAWS = 4_000


def flag(serve: dict[str, Any], rules: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "type": "string",
        "enabled": True,
        "bucketing": "unleash",
        "variants": [{"key": k, "value": k} for k in ("a", "b", "off")],
        "offVariant": "off",
        "rules": rules or [],
        "defaultServe": serve,
    }


RANDOM_SPLIT = {
    "rollout": {
        "bucketBy": "$random",
        "variants": [{"variant": "a", "weight": 25}, {"variant": "b", "weight": 75}],
    }
}


def answers(document_flag: dict[str, Any], seed: int, context: dict[str, Any]) -> list[str]:
    snapshot = compile_document({"flags": {"f": document_flag}}, generator=random.Random(seed))
    return [snapshot.evaluate("f", context).variant or "" for _ in range(DRAWS)]


def test_a_random_rollout_draws_at_every_evaluation_in_its_weights():
    counts = Counter(answers(flag(RANDOM_SPLIT), 1, {"targetingKey": "the-same-user"}))
    assert set(counts) == {"a", "b"}
    assert 0.21 < counts["a"] / DRAWS < 0.29


def test_a_seeded_generator_gives_the_same_answers_again():
    first = answers(flag(RANDOM_SPLIT), 7, {})
    assert answers(flag(RANDOM_SPLIT), 7, {}) == first
    assert answers(flag(RANDOM_SPLIT), 8, {}) != first


def test_a_random_rollout_needs_no_context_and_ignores_a_random_attribute_sent():
    snapshot = compile_document({"flags": {"f": flag(RANDOM_SPLIT)}})
    seen = {snapshot.evaluate("f", {"$random": "fixed"}).variant for _ in range(200)}
    assert seen == {"a", "b"}
    assert snapshot.evaluate("f", {}).reason == Reason.SPLIT


def test_a_condition_on_random_holds_for_its_share_of_evaluations():
    rules = [
        {
            "id": "r",
            "conditions": [
                {"attribute": "$random", "operator": "unleash_percentage", "values": ["g", 10]}
            ],
            "serve": {"variant": "a"},
        }
    ]
    counts = Counter(answers(flag({"variant": "b"}, rules), 3, {"targetingKey": "u"}))
    assert 0.07 < counts["a"] / DRAWS < 0.13
    assert counts["a"] + counts["b"] == DRAWS
