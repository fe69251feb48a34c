"""Unleash features written from its documentation, imported and evaluated.

Variant expectations come from Unleash's published formula computed here with mmh3:
MurmurHash3 x86_32, seed 86028157, of "{groupId}:{stickiness value}", `% total + 1`, walked
over the cumulative weights. Nothing calls the engine's bucketing.
"""

from __future__ import annotations

import mmh3
import pytest

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
        # Two groupIds for one flag's choices: one salt cannot give both.
        {
            "name": "two-groups",
            "enabled": True,
            "strategies": [
                {**strategy("g1", variant("a", 1), variant("b", 1)), "constraints": []},
                strategy("g2", variant("a", 1), variant("b", 1)),
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


def test_a_flag_choosing_by_two_group_ids_is_skipped_with_the_reason(imported):
    _, conversion = imported
    assert "several groupIds (g1, g2)" in conversion.skipped["two-groups"]
    assert not Flag.objects.filter(key="two-groups").exists()
    assert Flag.objects.get(key="checkout").bucketing == "unleash"


def test_one_weighted_variant_needs_no_salt_so_any_group_id_imports():
    feature = {
        "name": "single",
        "enabled": True,
        "strategies": [strategy("g1", variant("a", 1)), strategy("g2", variant("a", 1))],
    }
    conversion = convert("unleash", {"features": [feature]})
    assert conversion.skipped == {}
    assert conversion.document["flags"]["single"]["salt"] == "single"
