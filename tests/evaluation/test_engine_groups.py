"""`evaluate_all` evaluates the flags of one shape together: the same answers as flag by flag.

Random documents mix the shapes a group evaluates (string sets in and out, segment reads,
targets, fixed results and rollouts by the targeting key) with those it leaves to one call
per flag (other operators, prerequisites, rollouts by another attribute or on `$random`,
disabled, archived and broken flags), over segments that are kept, drawn anew and broken;
random contexts hold missing attributes, values of other types, strings that are not ASCII
and strings that are not valid Unicode. Every answer of `evaluate_all` and
`evaluate_dependent` must equal the flag's own `evaluate`, in document order, with the
same `$random` draws.
"""

from __future__ import annotations

import random
from types import MappingProxyType
from typing import Any

import pytest

from evaluation.engine import Snapshot, compile_document, specialise

VARIANTS = [{"key": "on", "value": True}, {"key": "off", "value": False}]
ATTRIBUTES = ("country", "plan", "tier")
STRINGS = ("US", "CA", "FR", "pro", "free", "Ü", "É", "gold")
VALUES: tuple[Any, ...] = (
    *STRINGS,
    "\ud800",  # not valid Unicode: INVALID_CONTEXT when a test must look at it
    "ÜS\udfff",
    None,
    7,
    2.5,
    True,
    ["US"],
    ["\ud800"],
    {"nested": "US"},
)
SEGMENTS = {
    "kept": {"conditions": [{"attribute": "plan", "operator": "in", "values": ["pro"]}]},
    "listed": {"included": ["user-1", "user-3"], "excluded": ["user-2"]},
    "drawn": {"conditions": [{"attribute": "$random", "operator": "starts_with", "values": ["1"]}]},
    "ends": {"conditions": [{"attribute": "country", "operator": "ends_with", "values": ["S"]}]},
}


@pytest.fixture(autouse=True)
def _own_shapes(monkeypatch: pytest.MonkeyPatch) -> None:
    # The random documents make hundreds of shapes: generated in tables of their own, so
    # that they do not use up the bound on shapes (MAX_SHAPES) of the other tests.
    monkeypatch.setattr(specialise, "_factories", {})
    monkeypatch.setattr(specialise, "_group_factories", {})


def _rollout(rng: random.Random, bucket_by: str | None = None) -> dict[str, Any]:
    on = rng.randint(0, 100)
    rollout: dict[str, Any] = {
        "variants": [{"variant": "on", "weight": on}, {"variant": "off", "weight": 100 - on or 1}]
    }
    if bucket_by is not None:
        rollout["bucketBy"] = bucket_by
    if rng.random() < 0.2:
        rollout["salt"] = f"salt-{rng.randint(0, 9)}"
    return {"rollout": rollout}


def _serving(rng: random.Random) -> dict[str, Any]:
    choice = rng.random()
    if choice < 0.4:
        return {"variant": rng.choice(["on", "off"])}
    if choice < 0.9:
        return _rollout(rng)
    return _rollout(rng, rng.choice(["plan", "$random"]))


def _condition(rng: random.Random) -> dict[str, Any]:
    choice = rng.random()
    if choice < 0.15:
        return {"operator": "in_segment", "values": [rng.choice(sorted(SEGMENTS))]}
    if choice < 0.25:
        return {"attribute": rng.choice(ATTRIBUTES), "operator": "starts_with", "values": ["U"]}
    operator = rng.choice(["in", "not_in", "equals", "not_equals"])
    count = 1 if operator in ("equals", "not_equals") else rng.randint(1, 3)
    return {
        "attribute": rng.choice(ATTRIBUTES),
        "operator": operator,
        "values": rng.sample(STRINGS, count),
    }


def _flag(rng: random.Random, index: int, keys: list[str]) -> dict[str, Any]:
    flag: dict[str, Any] = {
        "type": "boolean",
        "enabled": rng.random() < 0.9,
        "variants": VARIANTS,
        "offVariant": "off",
        "rules": [
            {
                "id": f"r{index}-{position}",
                "conditions": [_condition(rng) for _ in range(rng.randint(0, 3))],
                "serve": _serving(rng),
            }
            for position in range(rng.randint(0, 3))
        ],
        "defaultServe": _serving(rng),
    }
    if rng.random() < 0.3:
        flag["targets"] = [{"variant": "on", "values": [f"user-{rng.randint(0, 5)}"]}]
    if keys and rng.random() < 0.1:
        flag["prerequisites"] = [{"flag": rng.choice(keys), "variants": ["on"]}]
    if rng.random() < 0.05:
        flag["archived"] = True
    if rng.random() < 0.05:
        flag["offVariant"] = "missing"  # broken: a PARSE_ERROR for every context
    return flag


def _document(seed: int) -> dict[str, Any]:
    rng = random.Random(seed)
    # Few shapes, many flags: most flags share a group. The rules of half the flags are
    # copied from an earlier flag with other values, as documents of alike flags are.
    flags: dict[str, Any] = {}
    for index in range(rng.randint(20, 60)):
        keys = list(flags)
        if keys and rng.random() < 0.5:
            model = flags[rng.choice(keys)]
            flag = {**_flag(rng, index, keys), "rules": model["rules"]}
        else:
            flag = _flag(rng, index, keys)
        flags[f"flag-{index}"] = flag
    return {"version": 1, "flags": flags, "segments": SEGMENTS}


def _context(rng: random.Random) -> dict[str, Any]:
    context: dict[str, Any] = {}
    key = rng.random()
    if key < 0.8:
        context["targetingKey"] = f"user-{rng.randint(0, 5)}"
    elif key < 0.9:
        context["targetingKey"] = "ü-1"
    for attribute in ATTRIBUTES:
        if rng.random() < 0.8:
            context[attribute] = rng.choice(VALUES)
    return context


def _snapshot(document: dict[str, Any], seed: int) -> Snapshot:
    return compile_document(document, generator=random.Random(seed))


@pytest.mark.parametrize("seed", range(40))
def test_evaluate_all_answers_as_each_flag_alone(seed: int) -> None:
    document = _document(seed)
    together = _snapshot(document, seed)
    alone = _snapshot(document, seed)
    rng = random.Random(seed)
    for _ in range(25):
        context = _context(rng)
        answers = together.evaluate_all(context)
        assert list(answers) == list(alone.flag_keys)
        assert answers == {key: alone.evaluate(key, context) for key in alone.flag_keys}


@pytest.mark.parametrize("seed", range(10))
def test_evaluate_dependent_answers_the_same_flags_in_document_order(seed: int) -> None:
    document = _document(seed)
    dependent = _snapshot(document, seed)
    alone = _snapshot(document, seed)
    rng = random.Random(seed)
    for _ in range(25):
        context = _context(rng)
        answers = dependent.evaluate_dependent(context)
        assert answers is not None
        expected = [key for key in alone.flag_keys if key not in alone.fixed_answers]
        assert list(answers) == expected
        assert answers == {key: alone.evaluate(key, context) for key in expected}


def test_a_mapping_that_is_not_a_dict_is_evaluated_flag_by_flag_with_the_same_answers() -> None:
    document = _document(3)
    together = _snapshot(document, 3)
    alone = _snapshot(document, 3)
    rng = random.Random(3)
    for _ in range(25):
        context = _context(rng)
        assert together.evaluate_all(MappingProxyType(context)) == {
            key: alone.evaluate(key, context) for key in alone.flag_keys
        }


def test_flags_of_one_shape_are_evaluated_together() -> None:
    # 200 flags of the benchmark's shape (two string sets, then a rollout), each read for a
    # context that matches its rule and one that falls to its rollout.
    rule = {
        "id": "1",
        "conditions": [
            {"attribute": "country", "operator": "in", "values": ["US", "CA", "GB"]},
            {"attribute": "plan", "operator": "equals", "values": ["pro"]},
        ],
        "serve": {"variant": "on"},
    }
    rollout = {"variants": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}]}
    flag = {
        "type": "boolean",
        "enabled": True,
        "variants": VARIANTS,
        "offVariant": "off",
        "rules": [rule],
        "defaultServe": {"rollout": rollout},
    }
    snapshot = compile_document({"flags": {f"flag-{i}": flag for i in range(200)}})
    for context in (
        {"targetingKey": "user-1", "country": "US", "plan": "pro"},
        {"targetingKey": "user-1", "country": "FR", "plan": "pro"},
        {"country": "FR"},
    ):
        answers = snapshot.evaluate_all(context)
        assert answers == {key: snapshot.evaluate(key, context) for key in snapshot.flag_keys}
    plan = snapshot._plan  # noqa: SLF001 - how they were evaluated
    assert plan is not None
    assert [len(members) for _, members, _ in plan.groups] == [200]
    assert plan.singles == ()
    on = sum(answer.value for answer in snapshot.evaluate_all({"targetingKey": "u"}).values())
    assert 0 < on < 200  # each flag hashes its own salt: not one bucket for all


@pytest.mark.parametrize(
    "weights",
    [(0, 100), (100, 0), (1, 0, 0), (0, 0, 1), (1, 1), (3, 0, 5, 2), (1, 9_998), (9_999, 1)],
)
def test_a_grouped_rollout_picks_the_bucket_table_entry_for_every_key(
    weights: tuple[int, ...],
) -> None:
    variants = [{"key": f"v{index}", "value": f"value-{index}"} for index in range(len(weights))]
    rollout = {
        "variants": [{"variant": f"v{index}", "weight": w} for index, w in enumerate(weights)]
    }
    flag = {
        "type": "string",
        "enabled": True,
        "variants": variants,
        "offVariant": "v0",
        "defaultServe": {"rollout": rollout},
    }
    snapshot = compile_document({"flags": {f"flag-{i}": flag for i in range(5)}})
    seen = set()
    for index in range(400):
        context = {"targetingKey": f"user-{index}"}
        answers = snapshot.evaluate_all(context)
        assert answers == {key: snapshot.evaluate(key, context) for key in snapshot.flag_keys}
        seen.update(answer.variant for answer in answers.values())
    plan = snapshot._plan  # noqa: SLF001 - evaluated as one group
    assert plan is not None and len(plan.groups) == 1
    assert seen <= {f"v{index}" for index, weight in enumerate(weights) if weight}
