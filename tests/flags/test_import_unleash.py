"""Unleash features written from its documentation, imported and evaluated.

Variant expectations come from Unleash's published formula computed here with mmh3:
MurmurHash3 x86_32, seed 86028157, of "{groupId}:{stickiness value}", `% total + 1`, walked
over the cumulative weights. Nothing calls the engine's bucketing.
"""

from __future__ import annotations

import random
from collections import Counter

import mmh3
import pytest

from evaluation.engine import compile_document
from flags.importers import convert
from flags.models import Flag
from tests.flags.importing import import_and_compile

pytestmark = pytest.mark.django_db


def unleash_variant(group: str, value: str, weights: list[tuple[str, int]]) -> str:
    target = mmh3.hash(f"{group}:{value}".encode(), 86028157, signed=False)
    target = target % sum(weight for _, weight in weights) + 1
    cumulative = 0
    for name, weight in weights:
        cumulative += weight
        if weight and cumulative >= target:
            return name
    raise AssertionError(target)


def variant(name: str, weight: int, **fields: object) -> dict:
    return {"name": name, "weight": weight, "payload": {"type": "string", "value": name}, **fields}


def strategy(group: str, *variants: dict, stickiness: str = "default") -> dict:
    return {
        "name": "flexibleRollout",
        "parameters": {"rollout": "100", "stickiness": stickiness, "groupId": group},
        "variants": list(variants),
    }


FEATURES = {
    "features": [
        # The groupId of the strategy, not the feature name, is what its variants hash.
        {
            "name": "checkout",
            "enabled": True,
            "strategies": [strategy("checkout-experiment", variant("a", 30), variant("b", 70))],
        },
        # The strategy's stickiness chooses its variants (they name none of their own).
        {
            "name": "tenant-banner",
            "enabled": True,
            "strategies": [strategy("tb", variant("x", 1), variant("y", 1), stickiness="tenant")],
        },
        # Random stickiness: a new draw at every evaluation.
        {
            "name": "random-rollout",
            "enabled": True,
            "strategies": [
                {"name": "flexibleRollout", "parameters": {"rollout": "30", "stickiness": "random"}}
            ],
        },
        {
            "name": "random-gradual",
            "enabled": True,
            "strategies": [{"name": "gradualRolloutRandom", "parameters": {"percentage": "60"}}],
        },
        # Default stickiness: userId, sessionId, remoteAddress, else a random variant.
        {
            "name": "banner",
            "enabled": True,
            "strategies": [{"name": "default"}],
            "variants": [variant("blue", 50), variant("red", 50)],
        },
        # Two groupIds for one flag's choices: each rollout has its strategy's as its salt.
        {
            "name": "two-groups",
            "enabled": True,
            "strategies": [
                {
                    **strategy("g1", variant("a", 1), variant("b", 1)),
                    "constraints": [{"contextName": "region", "operator": "IN", "values": ["eu"]}],
                },
                strategy("g2", variant("a", 1), variant("b", 3)),
            ],
        },
    ]
}


@pytest.fixture
def imported():
    return import_and_compile("unleash", FEATURES)


def test_strategy_variants_hash_the_strategys_group_id(imported):
    snapshot, _ = imported
    seen = set()
    for index in range(300):
        user = f"user-{index}"
        expected = unleash_variant("checkout-experiment", user, [("a", 30), ("b", 70)])
        result = snapshot.evaluate("checkout", {"targetingKey": user})
        assert result.value["name"] == expected, user
        seen.add(expected)
    assert seen == {"a", "b"}


def test_strategy_variants_follow_the_strategys_stickiness(imported):
    snapshot, _ = imported
    for index in range(100):
        tenant = f"tenant-{index}"
        expected = unleash_variant("tb", tenant, [("x", 1), ("y", 1)])
        result = snapshot.evaluate("tenant-banner", {"targetingKey": "same", "tenant": tenant})
        assert result.value["name"] == expected, tenant


DRAWS = 3_000


def shares(snapshot, key: str, context: dict) -> Counter:
    """How often each answer comes back for the same context, with a seeded generator."""
    seeded = compile_document(snapshot.document, generator=random.Random(11))
    counts: Counter = Counter()
    for _ in range(DRAWS):
        value = seeded.evaluate(key, context).value
        counts[value["name"] if isinstance(value, dict) else value] += 1
    return counts


def test_random_stickiness_draws_at_every_evaluation(imported):
    snapshot, _ = imported
    rollout = shares(snapshot, "random-rollout", {"targetingKey": "one-user"})
    assert 0.26 < rollout[True] / DRAWS < 0.34
    gradual = shares(snapshot, "random-gradual", {})
    assert 0.55 < gradual[True] / DRAWS < 0.65


def test_variants_without_a_stickiness_value_are_drawn_at_random(imported):
    snapshot, _ = imported
    counts = shares(snapshot, "banner", {"appName": "shop"})
    assert set(counts) == {"blue", "red"}
    assert 0.45 < counts["blue"] / DRAWS < 0.55


def test_default_variant_stickiness_falls_back_to_the_remote_address(imported):
    snapshot, _ = imported
    for index in range(100):
        address = f"10.0.{index}.7"
        expected = unleash_variant("banner", address, [("blue", 50), ("red", 50)])
        answer = snapshot.evaluate("banner", {"remoteAddress": address}).value["name"]
        assert answer == expected, address
        with_session = snapshot.evaluate("banner", {"remoteAddress": address, "sessionId": "s"})
        assert with_session.value["name"] == unleash_variant(
            "banner", "s", [("blue", 50), ("red", 50)]
        )


def test_a_flag_choosing_by_two_group_ids_hashes_each_strategys_as_unleash_does(imported):
    snapshot, conversion = imported
    assert "two-groups" not in conversion.skipped
    assert Flag.objects.get(key="two-groups").bucketing == "unleash"
    for index in range(200):
        user = f"user-{index}"
        in_eu = snapshot.evaluate("two-groups", {"targetingKey": user, "region": "eu"})
        assert in_eu.value["name"] == unleash_variant("g1", user, [("a", 1), ("b", 1)]), user
        elsewhere = snapshot.evaluate("two-groups", {"targetingKey": user})
        assert elsewhere.value["name"] == unleash_variant("g2", user, [("a", 1), ("b", 3)]), user
    # The store gives each rollout its salt back; a flag with one groupId needs none.
    salts = {
        rule["serve"]["rollout"].get("salt")
        for rule in snapshot.document["flags"]["two-groups"]["rules"]
        if "rollout" in rule["serve"]
    }
    assert salts == {"g1", "g2"}
    checkout = snapshot.document["flags"]["checkout"]
    assert checkout["salt"] == "checkout-experiment"
    assert all("salt" not in rule["serve"].get("rollout", {}) for rule in checkout["rules"])


def test_one_weighted_variant_needs_no_salt_so_any_group_id_imports():
    feature = {
        "name": "single",
        "enabled": True,
        "strategies": [strategy("g1", variant("a", 1)), strategy("g2", variant("a", 1))],
    }
    conversion = convert("unleash", {"features": [feature]})
    assert conversion.skipped == {}
    assert conversion.document["flags"]["single"]["salt"] == "single"


def numeric(operator: str, value: object, *, inverted: bool = False) -> dict:
    return {"contextName": "slicesLeft", "operator": operator, "value": value, "inverted": inverted}


def test_num_constraints_read_the_contexts_strings_as_numbers_as_unleash_does():
    features = {
        "features": [
            {
                "name": f"num-{index}",
                "enabled": True,
                "strategies": [{"name": "default", "constraints": [constraint]}],
            }
            for index, constraint in enumerate(
                [
                    numeric("NUM_GT", "3"),
                    numeric("NUM_EQ", "4.0"),
                    numeric("NUM_EQ", "4", inverted=True),
                    numeric("NUM_LTE", 4),
                    numeric("NUM_GT", " 3"),  # no number to Unleash's engine: never true
                ]
            )
        ]
    }
    snapshot, conversion = import_and_compile("unleash", features)
    assert conversion.skipped == {}

    def on(key: str, context: dict) -> bool:
        return snapshot.evaluate(key, {"targetingKey": "u", **context}).value is True

    assert [on("num-0", {"slicesLeft": v}) for v in ("4", "3", 4, "4e0", " 4", "x")] == [
        True,
        False,
        True,
        True,
        False,
        False,
    ]
    assert [on("num-1", {"slicesLeft": v}) for v in ("4", "4.00", 4, "5")] == [
        True,
        True,
        True,
        False,
    ]
    # inverted: true for another number, for no number and for no value at all
    assert [on("num-2", {"slicesLeft": v}) for v in ("4", "5", "x")] == [False, True, True]
    assert on("num-2", {})
    assert [on("num-3", {"slicesLeft": v}) for v in ("4", "-1e999", "5", "nan")] == [
        True,
        True,
        False,
        False,
    ]
    assert not on("num-4", {"slicesLeft": "9"})
    condition = snapshot.document["flags"]["num-0"]["rules"][0]["conditions"][0]
    assert condition == {
        "attribute": "slicesLeft",
        "operator": "gt",
        "values": [3],
        "negate": False,
        "numericStrings": True,
    }


def test_a_group_id_longer_than_the_store_holds_skips_the_flag_with_the_reason():
    features = {
        "features": [
            {
                "name": "long-group",
                "enabled": True,
                "strategies": [strategy("g" * 101, variant("a", 1), variant("b", 1))],
            },
            {"name": "fine", "enabled": True, "strategies": [{"name": "default"}]},
        ]
    }
    snapshot, conversion = import_and_compile("unleash", features)
    assert "longer than 100 characters" in conversion.skipped["long-group"]
    assert snapshot.evaluate("fine", {}).value is True
