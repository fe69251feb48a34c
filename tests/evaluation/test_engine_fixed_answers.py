"""A snapshot's fixed answers and the answers that depend on the context, apart."""

from __future__ import annotations

from types import MappingProxyType

import pytest

from evaluation.engine import ErrorCode, Reason, compile_document
from tests.evaluation.test_engine_evaluation import boolean, equals, rule
from tests.evaluation.test_engine_shared_segments import generated_contexts, generated_document


def mixed_document() -> dict:
    return {
        "flags": {
            "ruled": boolean(rules=[rule("1", "off", equals("plan", "free"))]),
            "disabled": boolean(enabled=False),
            "static": boolean(),
            "broken": boolean(defaultServe={"variant": "missing"}),
            "archived": boolean(archived=True),
            "targeted": boolean(targets=[{"variant": "off", "values": ["u-1"]}]),
            "needs-ruled": boolean(prerequisites=[{"flag": "ruled", "variants": ["on"]}]),
        }
    }


def test_fixed_answers_are_the_flags_no_context_changes_in_document_order() -> None:
    snapshot = compile_document(mixed_document())
    fixed = snapshot.fixed_answers
    assert list(fixed) == ["disabled", "static", "broken"]
    assert fixed["disabled"].reason == Reason.DISABLED
    assert fixed["static"].reason == Reason.DEFAULT
    assert fixed["broken"].error_code == ErrorCode.PARSE_ERROR
    with pytest.raises(TypeError):
        fixed["static"] = fixed["disabled"]  # type: ignore[index]


def test_dependent_answers_are_the_others_in_document_order() -> None:
    snapshot = compile_document(mixed_document())
    dependent = snapshot.evaluate_dependent({"targetingKey": "u-1", "plan": "free"})
    assert dependent is not None
    assert list(dependent) == ["ruled", "targeted", "needs-ruled"]
    assert [result.variant for result in dependent.values()] == ["off", "off", "off"]


def test_fixed_and_dependent_answers_together_are_evaluate_all() -> None:
    for seed in (1, 2):
        snapshot = compile_document(generated_document(seed))
        fixed = snapshot.fixed_answers
        assert fixed  # the generated documents hold both kinds
        for context in generated_contexts(seed, 100):
            dependent = snapshot.evaluate_dependent(context)
            assert dependent is not None and len(dependent) < len(snapshot.flag_keys)
            assert set(dependent).isdisjoint(fixed)
            joined = {key: fixed.get(key) or dependent[key] for key in snapshot.flag_keys}
            answers = snapshot.evaluate_all(context)
            assert list(answers) == list(joined)
            assert answers == joined
            assert all(answers[key] is result for key, result in fixed.items())


@pytest.mark.parametrize(
    "context",
    [None, [], "user", {"targetingKey": 7}, {"targetingKey": "\ud800"}],
)
def test_a_context_every_flag_refuses_has_no_dependent_answers(context: object) -> None:
    snapshot = compile_document(mixed_document())
    assert snapshot.evaluate_dependent(context) is None
    answers = snapshot.evaluate_all(context)
    assert {answers[key].error_code for key in snapshot.fixed_answers if key != "broken"} == {
        ErrorCode.INVALID_CONTEXT
    }


def test_a_mapping_that_fails_to_read_has_no_dependent_answers() -> None:
    class Failing(dict):
        def get(self, key, default=None):
            raise RuntimeError("unreadable")

    snapshot = compile_document(mixed_document())
    assert snapshot.evaluate_dependent(Failing()) is None
    assert snapshot.evaluate_dependent(MappingProxyType({"plan": "free"})) is not None
