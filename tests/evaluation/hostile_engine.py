"""The engine against hostile documents and contexts; run as a script, in a process of its own.

`test_adversarial_engine.py` runs this file with `python` and checks its exit status, so
that a crash of the process (the hash's C code once died on a lone surrogate: SIGSEGV) is a
failed test rather than a dead test run. Prints one line per property and exits 0 when
every example held.
"""

from __future__ import annotations

import json
import os
import random
import sys
from pathlib import Path
from types import MappingProxyType

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from evaluation.engine import ErrorCode, EvaluationResult, Snapshot, compile_document  # noqa: E402
from tests.evaluation.hostile import contexts, documents, every_operator_document  # noqa: E402

EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "150"))
SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,  # the same examples in every run: a failure reproduces
    suppress_health_check=list(HealthCheck),
)
ran = {"compile": 0, "evaluate": 0, "reused": 0}


def _lone_surrogate(value: object) -> bool:
    return isinstance(value, str) and any(0xD800 <= ord(c) <= 0xDFFF for c in value)


def _check(snapshot: Snapshot, key: str, result: EvaluationResult, context: dict) -> None:
    assert isinstance(result, EvaluationResult)
    assert result.error_code != ErrorCode.GENERAL, (key, result.error_details)
    if result.error_code is not None:
        assert (result.value, result.variant) == (None, None)
    json.dumps(result.to_dict())  # an answer can always be encoded (with escapes)
    if _lone_surrogate(context.get("targetingKey")) and result.error_code is None:
        raise AssertionError(f"{key!r} read a targetingKey that is not valid Unicode")


SNAPSHOT = compile_document(every_operator_document())
assert all(
    SNAPSHOT.evaluate(key, {}).error_code != ErrorCode.PARSE_ERROR for key in SNAPSHOT.flag_keys
)
FIXED_CONTEXTS = [
    {},
    {"targetingKey": "user-1", "email": "a@example.com", "companyId": 7, "a": {"b": "x"}},
    {"targetingKey": "\ud800", "email": "\udfff", "companyId": "c\udc00", "a": {"b": "\ud800"}},
    {"targetingKey": "a\x00b", "email": "a" * 10_000 + "!", "companyId": 10**400},
]


def _evaluate_everything(snapshot: Snapshot, context: dict) -> None:
    for key in snapshot.flag_keys:
        result = snapshot.evaluate(key, context)
        _check(snapshot, key, result, context)
        assert snapshot.evaluate(key, context) == result  # deterministic
        ran["evaluate"] += 1
    for key, result in snapshot.evaluate_all(context).items():
        _check(snapshot, key, result, context)


@SETTINGS
@given(context=contexts)
def hostile_contexts(context: dict) -> None:
    """Every operator and rollout of a valid document reads the hostile context."""
    _evaluate_everything(SNAPSHOT, context)


@SETTINGS
@given(document=documents())
def hostile_documents(document: dict) -> None:
    snapshot = compile_document(document)
    ran["compile"] += 1
    for context in FIXED_CONTEXTS:
        _evaluate_everything(snapshot, context)


@SETTINGS
@given(document=documents())
def broken_strings_are_parse_errors(document: dict) -> None:
    snapshot = compile_document(document)
    for key in snapshot.flag_keys:
        flag = document["flags"][key]
        if _lone_surrogate(flag.get("salt")) or _lone_surrogate(key):
            result = snapshot.evaluate(key, {"targetingKey": "u"})
            assert result.error_code == ErrorCode.PARSE_ERROR, (key, result)


@SETTINGS
@given(document=documents(), context=contexts)
def bulk_answers_as_without_shared_segments(document: dict, context: dict) -> None:
    """evaluate_all of a dict context (each segment matched once, for every flag reading
    it) answers as of the same context read as another mapping (nothing shared)."""
    shared = compile_document(document, generator=random.Random(7))
    alone = compile_document(document, generator=random.Random(7))
    for each in (context, *FIXED_CONTEXTS):
        assert shared.evaluate_all(each) == alone.evaluate_all(MappingProxyType(each))


def _answers(snapshot: Snapshot) -> list[object]:
    keys = [*snapshot.flag_keys, "absent"]
    return [
        [snapshot.evaluate(key, context) for key in keys] + [snapshot.evaluate_all(context)]
        for context in FIXED_CONTEXTS
    ]


@SETTINGS
@given(first=documents(), second=documents(), again=st.booleans())
def recompiles_answer_as_compiles_from_scratch(first: dict, second: dict, again: bool) -> None:
    """A document compiled with the snapshot of another (or of a copy of itself, when all
    can be reused) answers exactly as compiled alone; `$random` draws alike on both sides."""
    try:  # only what JSON can carry (values nested 10,000 deep are for the other properties)
        texts = json.dumps(first), json.dumps(second)
    except (RecursionError, ValueError):
        assume(False)
    if again:
        second = json.loads(texts[0])  # the same content, new objects
    generator = random.Random(7)
    previous = compile_document(first, generator=generator)
    scratch = compile_document(second, generator=random.Random(7))
    snapshot = compile_document(second, generator=generator, previous=previous)
    ran["reused"] += len(snapshot.flag_keys) - snapshot.compiled_flags
    assert _answers(snapshot) == _answers(scratch)


if __name__ == "__main__":
    hostile_contexts()
    hostile_documents()
    broken_strings_are_parse_errors()
    bulk_answers_as_without_shared_segments()
    recompiles_answer_as_compiles_from_scratch()
    assert ran["reused"] > 0, "no recompile reused a flag: the property tested nothing"
    print(
        f"hostile engine: {ran['compile']} documents, {ran['evaluate']} evaluations held;"
        f" {ran['reused']} flags reused by recompiles answered as compiled afresh"
    )
