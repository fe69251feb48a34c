"""Bulk evaluation matches each segment once per context, and answers as flag by flag."""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import Any

from evaluation.engine import ErrorCode, Snapshot, compile_document
from tests.evaluation.test_engine_evaluation import boolean, rule

COUNTRIES = ["US", "CA", "GB", "FR", "DE", "JP"]
PLANS = ["free", "pro", "team", "enterprise"]


def _segment_condition(rng: random.Random) -> dict[str, Any]:
    return rng.choice(
        [
            {"attribute": "country", "operator": "in", "values": rng.sample(COUNTRIES, 2)},
            {"attribute": "plan", "operator": "not_in", "values": rng.sample(PLANS, 2)},
            {"attribute": "email", "operator": "ends_with", "values": ["@example.com"]},
            {"attribute": "age", "operator": "gte", "values": [rng.randint(18, 60)]},
            {"attribute": "app.version", "operator": "semver_gte", "values": ["2.1.0"]},
            {"attribute": "beta", "operator": "exists", "values": []},
            {"attribute": "country", "operator": "equals", "values": ["US"], "negate": True},
        ]
    )


def _segment(rng: random.Random) -> dict[str, Any]:
    return {
        "conditions": [_segment_condition(rng) for _ in range(rng.randint(0, 4))],
        "included": [f"user-{rng.randrange(40)}" for _ in range(rng.randint(0, 2))],
        "excluded": [f"user-{rng.randrange(40)}" for _ in range(rng.randint(0, 2))],
    }


def _in_segments(rng: random.Random, segments: list[str]) -> dict[str, Any]:
    return {
        "operator": "in_segment",
        "values": rng.sample(segments, rng.randint(1, 3)),
        "negate": rng.random() < 0.3,
    }


def _flag(rng: random.Random, index: int, segments: list[str]) -> dict[str, Any]:
    rollout = {"variants": [{"variant": "on", "weight": 30}, {"variant": "off", "weight": 70}]}
    rules = []
    for position in range(rng.randint(0, 3)):
        conditions = [_in_segments(rng, segments)]
        if rng.random() < 0.5:
            plans = rng.sample(PLANS, 2)
            conditions.append({"attribute": "plan", "operator": "in", "values": plans})
        serve = (
            {"rollout": rollout} if rng.random() < 0.3 else {"variant": rng.choice(["on", "off"])}
        )
        rules.append({"id": f"r{index}-{position}", "conditions": conditions, "serve": serve})
    flag = boolean(enabled=rng.random() < 0.8, rules=rules)
    if rng.random() < 0.5:
        flag["defaultServe"] = {"rollout": rollout}
    if rng.random() < 0.2:
        flag["targets"] = [{"variant": "off", "values": [f"user-{rng.randrange(40)}"]}]
    if index and rng.random() < 0.2:  # on an earlier flag, which reads segments too
        earlier = f"flag-{rng.randrange(index)}"
        flag["prerequisites"] = [{"flag": earlier, "variants": ["on"]}]
    return flag


def generated_document(seed: int, flags: int = 200, segments: int = 25) -> dict[str, Any]:
    rng = random.Random(seed)
    keys = [f"segment-{index}" for index in range(segments)]
    return {
        "version": 1,
        "segments": {key: _segment(rng) for key in keys},
        "flags": {f"flag-{index}": _flag(rng, index, keys) for index in range(flags)},
    }


def generated_contexts(seed: int, count: int) -> Iterator[dict[str, Any]]:
    rng = random.Random(seed)
    for index in range(count):
        context: dict[str, Any] = {"targetingKey": f"user-{rng.randrange(40)}"}
        if index % 7 == 0:
            del context["targetingKey"]
        for name, values in (
            ("country", [*COUNTRIES, None, ["US", "FR"], 3]),
            ("plan", [*PLANS, None, ["pro"]]),
            ("email", ["a@example.com", "b@test.org", None, 5]),
            ("age", [17, 30, 61, "40", None]),
            ("app", [{"version": "2.3.0"}, {"version": "1.0.0"}, "x", None]),
            ("beta", [True, None]),
        ):
            value = rng.choice(values)
            if value is not None:
                context[name] = value
        yield context


def single_answers(snapshot: Snapshot, context: Mapping[str, Any]) -> dict[str, Any]:
    return {key: snapshot.evaluate(key, context) for key in snapshot.flag_keys}


def test_bulk_answers_are_the_single_flag_answers_for_flags_sharing_segments() -> None:
    for seed in range(3):
        snapshot = compile_document(generated_document(seed))
        for context in generated_contexts(seed, 300):
            assert snapshot.evaluate_all(context) == single_answers(snapshot, context), context


def test_bulk_answers_are_the_same_with_and_without_shared_segment_answers() -> None:
    # A context that is not a dict is evaluated as it is, nothing shared between flags.
    snapshot = compile_document(generated_document(11))
    for context in generated_contexts(11, 300):
        assert snapshot.evaluate_all(context) == snapshot.evaluate_all(MappingProxyType(context))


def test_bulk_answers_vary_with_the_segments_matched() -> None:
    # The comparisons above would hold for a snapshot answering alike for every context.
    snapshot = compile_document(generated_document(5))
    answers = {
        tuple(result.variant for result in snapshot.evaluate_all(context).values())
        for context in generated_contexts(5, 100)
    }
    assert len(answers) > 20


class _CountedReads(dict[str, Any]):
    """A nested object of a context that counts how often a condition reads it."""

    reads = 0

    def get(self, key: str, default: Any = None) -> Any:
        type(self).reads += 1
        return super().get(key, default)


def test_a_segment_read_by_many_flags_is_matched_once_per_bulk_evaluation() -> None:
    segment = {"conditions": [{"attribute": "user.plan", "operator": "in", "values": ["pro"]}]}
    in_segment = {"operator": "in_segment", "values": ["pros"]}
    flags = {
        f"flag-{index}": boolean(False, rules=[rule("1", "on", in_segment)]) for index in range(50)
    }
    snapshot = compile_document({"flags": flags, "segments": {"pros": segment}})
    _CountedReads.reads = 0
    answers = snapshot.evaluate_all({"user": _CountedReads(plan="pro")})
    assert {result.value for result in answers.values()} == {True}
    assert _CountedReads.reads == 1
    _CountedReads.reads = 0
    assert single_answers(snapshot, {"user": _CountedReads(plan="pro")}) == answers
    assert _CountedReads.reads == 50
    _CountedReads.reads = 0
    snapshot.evaluate_all({"user": _CountedReads(plan="free")})  # a miss is kept too
    assert _CountedReads.reads == 1


def test_each_bulk_evaluation_matches_the_segments_for_its_own_context() -> None:
    segment = {"conditions": [{"attribute": "plan", "operator": "in", "values": ["pro"]}]}
    in_segment = {"operator": "in_segment", "values": ["pros"]}
    flags = {
        f"flag-{index}": boolean(False, rules=[rule("1", "on", in_segment)]) for index in range(5)
    }
    snapshot = compile_document({"flags": flags, "segments": {"pros": segment}})
    context = {"plan": "pro"}
    assert {r.value for r in snapshot.evaluate_all(context).values()} == {True}
    context["plan"] = "free"  # the same dict, changed: nothing of the last call is kept
    assert {r.value for r in snapshot.evaluate_all(context).values()} == {False}


def test_a_segment_on_random_draws_at_every_read_of_a_bulk_evaluation() -> None:
    lucky = {"conditions": [{"attribute": "$random", "operator": "ends_with", "values": ["7"]}]}
    in_segment = {"operator": "in_segment", "values": ["lucky"]}
    flags = {
        f"flag-{index}": boolean(False, rules=[rule("1", "on", in_segment)]) for index in range(400)
    }
    document = {"flags": flags, "segments": {"lucky": lucky}}
    bulk = compile_document(document, generator=random.Random(3)).evaluate_all({})
    one_by_one = compile_document(document, generator=random.Random(3))
    assert bulk == {key: one_by_one.evaluate(key, {}) for key in one_by_one.flag_keys}
    hits = sum(result.value for result in bulk.values())
    assert 10 < hits < 80  # about one draw in ten, drawn for each flag


def test_a_segment_that_fails_on_the_context_fails_every_flag_that_reads_it() -> None:
    segment = {"conditions": [{"attribute": "email", "operator": "ends_with", "values": ["@x.io"]}]}
    in_segment = {"operator": "in_segment", "values": ["staff"]}
    flags = {
        f"flag-{index}": boolean(False, rules=[rule("1", "on", in_segment)]) for index in range(3)
    }
    snapshot = compile_document({"flags": flags, "segments": {"staff": segment}})
    context = {"email": "a\ud800@x.io"}  # a lone surrogate: no UTF-8 form
    answers = snapshot.evaluate_all(context)
    assert [result.error_code for result in answers.values()] == [ErrorCode.INVALID_CONTEXT] * 3
    assert answers == single_answers(snapshot, context)


def test_bulk_evaluations_in_threads_share_nothing_between_contexts() -> None:
    snapshot = compile_document(generated_document(21))
    contexts = list(generated_contexts(21, 120))
    expected = [single_answers(snapshot, context) for context in contexts]
    failures: list[int] = []

    def evaluate(offset: int) -> None:
        for _ in range(3):
            for index in range(offset, len(contexts), 4):
                if snapshot.evaluate_all(contexts[index]) != expected[index]:
                    failures.append(index)

    threads = [threading.Thread(target=evaluate, args=(offset,)) for offset in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
