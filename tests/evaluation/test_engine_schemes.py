"""Bucketing schemes: each flag buckets as the system it came from publishes it.

The expectations are computed here from each system's published formula with hashlib and
mmh3, never by calling the engine's own bucketing functions.
"""

from __future__ import annotations

import hashlib
from typing import Any

import mmh3
import pytest

from evaluation.engine import ErrorCode, Reason, compile_document

KEYS = [f"user-{index}" for index in range(500)] + ["", "élodie", "日本語", "🙂"]


def flag_with(weights: list[tuple[str, int]], **changes: Any) -> dict[str, Any]:
    flag: dict[str, Any] = {
        "type": "string",
        "enabled": True,
        "variants": [{"key": k, "value": k.upper()} for k in ("a", "b", "c")],
        "offVariant": "c",
        "defaultServe": {
            "rollout": {"variants": [{"variant": k, "weight": w} for k, w in weights]}
        },
    }
    flag.update(changes)
    return flag


def variants_of(flag: dict[str, Any], keys: list[str]) -> list[str | None]:
    snapshot = compile_document({"flags": {"f": flag}})
    return [snapshot.evaluate("f", {"targetingKey": key}).variant for key in keys]


def walk(weights: list[tuple[str, int]], inside: Any) -> str:
    """The first variant whose cumulative weight `inside(cumulative)` accepts; else the last."""
    cumulative = 0
    for variant, weight in weights:
        cumulative += weight
        if inside(cumulative):
            return variant
    return weights[-1][0]


def flagd_variant(salt: str, key: str, weights: list[tuple[str, int]]) -> str:
    total = sum(weight for _, weight in weights)
    point = (mmh3.hash((salt + key).encode(), 0, signed=False) * total) >> 32
    return walk(weights, lambda cumulative: point < cumulative)


def unleash_variant(group: str, key: str, weights: list[tuple[str, int]]) -> str:
    total = sum(weight for _, weight in weights)
    target = mmh3.hash(f"{group}:{key}".encode(), 86028157, signed=False) % total + 1
    return walk(weights, lambda cumulative: cumulative >= target)


def launchdarkly_variant(flag_key: str, salt: str, key: str, weights: list[tuple[str, int]]):
    digest = hashlib.sha1(f"{flag_key}.{salt}.{key}".encode()).hexdigest()
    point = int(digest[:15], 16) / 0xFFFFFFFFFFFFFFF
    return walk(weights, lambda cumulative: point < cumulative / 100_000)


def flagsmith_variant(salt: str, key: str, weights: list[tuple[str, int]]) -> str:
    total = sum(weight for _, weight in weights)
    digest = hashlib.md5(f"{salt},{key}".encode()).hexdigest()
    percentage = int(digest, 16) % 9999 / 9998 * 100
    return walk(weights, lambda cumulative: percentage < cumulative * 100 / total)


def test_published_hash_vectors() -> None:
    assert mmh3.hash(b"hello", 0, signed=False) == 613153351
    assert hashlib.sha1(b"abc").hexdigest() == "a9993e364706816aba3e25717850c26c9cd0d89d"
    assert hashlib.md5(b"abc").hexdigest() == "900150983cd24fb0d6963f7d28e17f72"


@pytest.mark.parametrize("bucketing", [None, "flagd"])
def test_flagd_is_the_default_scheme(bucketing: str | None) -> None:
    weights = [("a", 30), ("b", 70)]
    flag = flag_with(weights) if bucketing is None else flag_with(weights, bucketing=bucketing)
    assert variants_of(flag, KEYS) == [flagd_variant("f", key, weights) for key in KEYS]


@pytest.mark.parametrize(
    "weights",
    [
        [("a", 1), ("b", 3)],
        [("a", 1), ("b", 99_999)],
        [("a", 0), ("b", 5), ("c", 0)],
        [("a", 123_456), ("b", 654_321), ("c", 7)],  # past the precomputed table
    ],
)
def test_flagd_weights_are_any_non_negative_integers(weights: list[tuple[str, int]]) -> None:
    assert variants_of(flag_with(weights), KEYS) == [
        flagd_variant("f", key, weights) for key in KEYS
    ]


@pytest.mark.parametrize("weights", [[("a", 50), ("b", 50)], [("a", 1), ("b", 2), ("c", 997)]])
def test_unleash_scheme_hashes_group_and_value_with_its_variant_seed(
    weights: list[tuple[str, int]],
) -> None:
    flag = flag_with(weights, bucketing="unleash", salt="Feature.Variants.B")
    expected = [unleash_variant("Feature.Variants.B", key, weights) for key in KEYS]
    assert variants_of(flag, KEYS) == expected
    assert set(expected) <= {key for key, weight in weights if weight}


@pytest.mark.parametrize("weights", [[("a", 25_000), ("b", 75_000)], [("a", 10_000), ("b", 100)]])
def test_launchdarkly_scheme_hashes_key_salt_and_value(weights: list[tuple[str, int]]) -> None:
    flag = flag_with(weights, bucketing="launchdarkly", salt="b5bd7dd0")
    expected = [launchdarkly_variant("f", "b5bd7dd0", key, weights) for key in KEYS]
    assert variants_of(flag, KEYS) == expected
    # Weights short of 100,000 leave the rest to the last variant, as LaunchDarkly does.
    assert expected.count("b") > expected.count("a")


def test_flagsmith_scheme_hashes_the_ids_joined_with_commas() -> None:
    weights = [("a", 33_300), ("b", 20_000), ("c", 46_700)]
    flag = flag_with(weights, bucketing="flagsmith", salt="17")
    assert variants_of(flag, KEYS) == [flagsmith_variant("17", key, weights) for key in KEYS]


def test_the_schemes_place_users_differently() -> None:
    weights = [("a", 50), ("b", 50)]
    answers = {
        scheme: variants_of(flag_with(weights, bucketing=scheme), KEYS)
        for scheme in ("flagd", "unleash", "launchdarkly", "flagsmith")
    }
    assert len({tuple(answer) for answer in answers.values()}) == 4


@pytest.mark.parametrize("bucketing", ["murmur", 3, True, ["flagd"]])
def test_an_unknown_scheme_makes_the_flag_a_parse_error(bucketing: object) -> None:
    snapshot = compile_document({"flags": {"f": flag_with([("a", 1)], bucketing=bucketing)}})
    result = snapshot.evaluate("f", {"targetingKey": "u"})
    assert result.error_code == ErrorCode.PARSE_ERROR
    assert "bucketing" in (result.error_details or "")


@pytest.mark.parametrize(
    "weights, message",
    [
        ([("a", 0), ("b", 0)], "at least one weight must be above 0"),
        ([("a", 2**31), ("b", 0)], "weights must total at most"),
    ],
)
def test_rollouts_need_a_positive_bounded_total(weights: list[tuple[str, int]], message: str):
    result = compile_document({"flags": {"f": flag_with(weights)}}).evaluate("f", {})
    assert result.error_code == ErrorCode.PARSE_ERROR
    assert message in (result.error_details or "")


@pytest.mark.parametrize("bucketing", ["flagd", "unleash", "launchdarkly", "flagsmith"])
def test_every_scheme_refuses_a_lone_surrogate_as_an_invalid_context(bucketing: str) -> None:
    snapshot = compile_document({"flags": {"f": flag_with([("a", 1)], bucketing=bucketing)}})
    result = snapshot.evaluate("f", {"targetingKey": "x\ud800"})
    assert result.error_code == ErrorCode.INVALID_CONTEXT
    assert snapshot.evaluate("f", {"targetingKey": "x"}).reason == Reason.SPLIT


def unleash_percentage_condition(group: str, percentage: int) -> dict[str, Any]:
    return {
        "attribute": "targetingKey",
        "operator": "unleash_percentage",
        "values": [group, percentage],
    }


@pytest.mark.parametrize("percentage", [0, 1, 33, 100])
def test_unleash_percentage_is_its_normalized_value_at_most_the_percentage(percentage: int):
    flag = flag_with(
        [("a", 1)],
        defaultServe={"variant": "c"},
        rules=[
            {
                "id": "1",
                "conditions": [unleash_percentage_condition("group", percentage)],
                "serve": {"variant": "a"},
            }
        ],
    )
    expected = [
        "a" if mmh3.hash(f"group:{key}".encode(), 0, signed=False) % 100 + 1 <= percentage else "c"
        for key in KEYS
    ]
    assert variants_of(flag, KEYS) == expected


@pytest.mark.parametrize(
    "operator, values, matching, other",
    [
        ("icontains", ["BeTa"], "alphabeta", "alpha"),
        ("istarts_with", ["Ad"], "aDmin", "bad"),
        ("iends_with", ["@EXAMPLE.com"], "x@example.COM", "x@example.org"),
    ],
)
def test_case_insensitive_string_operators(
    operator: str, values: list[str], matching: str, other: str
) -> None:
    flag = flag_with(
        [("a", 1)],
        defaultServe={"variant": "c"},
        rules=[
            {
                "id": "1",
                "conditions": [{"attribute": "name", "operator": operator, "values": values}],
                "serve": {"variant": "a"},
            }
        ],
    )
    snapshot = compile_document({"flags": {"f": flag}})
    assert snapshot.evaluate("f", {"name": matching}).variant == "a"
    assert snapshot.evaluate("f", {"name": other}).variant == "c"
    assert snapshot.evaluate("f", {"name": "x\ud800"}).error_code == ErrorCode.INVALID_CONTEXT
