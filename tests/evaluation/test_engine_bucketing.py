"""Rollouts: the bucketing hash, its stability, its distribution and its failure modes."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import mmh3
import pytest

from evaluation.engine import ErrorCode, Reason, Snapshot, compile_document

ROOT = Path(__file__).resolve().parents[2]


def rollout_flag(weights: list[tuple[str, int]], **changes: Any) -> dict[str, Any]:
    bucket_by = changes.pop("bucketBy", None)
    rollout: dict[str, Any] = {"variants": [{"variant": k, "weight": w} for k, w in weights]}
    if bucket_by is not None:
        rollout["bucketBy"] = bucket_by
    flag = {
        "type": "string",
        "enabled": True,
        "variants": [{"key": k, "value": k.upper()} for k in ("a", "b", "c")],
        "offVariant": "c",
        "defaultServe": {"rollout": rollout},
    }
    flag.update(changes)
    return flag


def snapshot_of(**flags: dict[str, Any]) -> Snapshot:
    return compile_document({"flags": flags})


def expected_bucket(salt: str, key: str) -> int:
    return (mmh3.hash((salt + key).encode("utf-8"), 0, signed=False) * 100) >> 32


def test_murmur3_vectors() -> None:
    # Published MurmurHash3 x86_32 vectors, seed 0: the hash the SDKs must reproduce.
    assert mmh3.hash(b"", 0, signed=False) == 0
    assert mmh3.hash(b"hello", 0, signed=False) == 613153351
    assert mmh3.hash(b"The quick brown fox jumps over the lazy dog", 0, signed=False) == 776992547


def test_the_variant_follows_the_documented_bucket() -> None:
    snapshot = snapshot_of(f=rollout_flag([("a", 30), ("b", 70)]))
    for index in range(2000):
        key = f"user-{index}"
        bucket = expected_bucket("f", key)
        result = snapshot.evaluate("f", {"targetingKey": key})
        assert result.variant == ("a" if bucket < 30 else "b"), (key, bucket)
        assert result.reason == Reason.SPLIT


def test_the_salt_defaults_to_the_flag_key_and_can_be_set() -> None:
    weights = [("a", 50), ("b", 50)]
    snapshot = snapshot_of(f=rollout_flag(weights), g=rollout_flag(weights, salt="f"))
    keys = [f"k{i}" for i in range(300)]
    f_variants = [snapshot.evaluate("f", {"targetingKey": k}).variant for k in keys]
    g_variants = [snapshot.evaluate("g", {"targetingKey": k}).variant for k in keys]
    assert f_variants == g_variants
    other = snapshot_of(h=rollout_flag(weights))
    h_variants = [other.evaluate("h", {"targetingKey": k}).variant for k in keys]
    assert h_variants != f_variants


def test_unicode_keys_hash_their_utf8_bytes() -> None:
    snapshot = snapshot_of(f=rollout_flag([("a", 50), ("b", 50)]))
    for key in ("élodie", "日本語", "🙂", ""):
        bucket = expected_bucket("f", key)
        assert snapshot.evaluate("f", {"targetingKey": key}).variant == (
            "a" if bucket < 50 else "b"
        )


def test_bucketing_is_the_same_in_another_process() -> None:
    keys = [f"user-{i}" for i in range(200)]
    here = {k: compile_rollout_variant(k) for k in keys}
    document = {"flags": {"f": rollout_flag([("a", 33), ("b", 33), ("c", 34)])}}
    code = (
        "import json, sys\n"
        "from evaluation.engine import compile_document\n"
        "document, keys = json.loads(sys.stdin.read())\n"
        "s = compile_document(document)\n"
        "print(json.dumps({k: s.evaluate('f', {'targetingKey': k}).variant for k in keys}))\n"
    )
    for seed in ("1", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        run = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps([document, keys]),
            capture_output=True,
            text=True,
            cwd=ROOT,
            env=env,
            check=True,
        )
        assert json.loads(run.stdout) == here


def compile_rollout_variant(key: str) -> str | None:
    snapshot = snapshot_of(f=rollout_flag([("a", 33), ("b", 33), ("c", 34)]))
    return snapshot.evaluate("f", {"targetingKey": key}).variant


def test_raising_a_rollout_keeps_everyone_who_was_in() -> None:
    keys = [f"user-{i}" for i in range(20000)]
    before = snapshot_of(f=rollout_flag([("a", 10), ("b", 90)]))
    after = snapshot_of(f=rollout_flag([("a", 20), ("b", 80)]))
    was_in = {k for k in keys if before.evaluate("f", {"targetingKey": k}).variant == "a"}
    now_in = {k for k in keys if after.evaluate("f", {"targetingKey": k}).variant == "a"}
    assert was_in <= now_in
    assert 0.09 < len(was_in) / len(keys) < 0.11
    assert 0.19 < len(now_in) / len(keys) < 0.21


def test_fifty_fifty_splits_random_keys_evenly() -> None:
    generator = random.Random(20240601)
    snapshot = snapshot_of(f=rollout_flag([("a", 50), ("b", 50)]))
    count = 100_000
    in_a = sum(
        snapshot.evaluate("f", {"targetingKey": f"{generator.getrandbits(64):x}"}).variant == "a"
        for _ in range(count)
    )
    assert abs(in_a - count / 2) <= count * 0.01


@pytest.mark.parametrize(
    ("weights", "variant"),
    [([("a", 0), ("b", 100)], "b"), ([("a", 100), ("b", 0)], "a"), ([("c", 100)], "c")],
)
def test_zero_and_full_weights(weights: list[tuple[str, int]], variant: str) -> None:
    snapshot = snapshot_of(f=rollout_flag(weights))
    served = {snapshot.evaluate("f", {"targetingKey": f"u{i}"}).variant for i in range(3000)}
    assert served == {variant}


def test_bucket_by_another_attribute() -> None:
    snapshot = snapshot_of(f=rollout_flag([("a", 50), ("b", 50)], bucketBy="company.id"))
    for index in range(300):
        company = f"company-{index}"
        bucket = expected_bucket("f", company)
        context = {"targetingKey": f"user-{index}", "company": {"id": company}}
        assert snapshot.evaluate("f", context).variant == ("a" if bucket < 50 else "b")


def test_a_number_attribute_is_bucketed_as_its_string() -> None:
    snapshot = snapshot_of(f=rollout_flag([("a", 50), ("b", 50)], bucketBy="accountId"))
    for number in range(200):
        as_number = snapshot.evaluate("f", {"accountId": number})
        as_string = snapshot.evaluate("f", {"accountId": str(number)})
        assert as_number == as_string


def test_a_rollout_without_targeting_key_is_an_error_not_a_guess() -> None:
    snapshot = snapshot_of(f=rollout_flag([("a", 50), ("b", 50)]))
    result = snapshot.evaluate("f", {"plan": "pro"})
    assert (result.reason, result.error_code, result.value, result.variant) == (
        Reason.ERROR,
        ErrorCode.TARGETING_KEY_MISSING,
        None,
        None,
    )


@pytest.mark.parametrize("value", [None, True, ["x"], {"id": "x"}])
def test_a_rollout_on_an_unusable_attribute_is_invalid_context(value: Any) -> None:
    snapshot = snapshot_of(f=rollout_flag([("a", 50), ("b", 50)], bucketBy="company"))
    context = {"targetingKey": "u"} if value is None else {"targetingKey": "u", "company": value}
    result = snapshot.evaluate("f", context)
    assert (result.error_code, result.value) == (ErrorCode.INVALID_CONTEXT, None)
    assert "company" in result.error_details


def test_rule_rollouts_use_the_flag_salt_too() -> None:
    rollout = {
        "rollout": {"variants": [{"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}]}
    }
    flag = rollout_flag([("c", 100)], rules=[{"id": "r1", "conditions": [], "serve": rollout}])
    snapshot = snapshot_of(f=flag)
    for index in range(300):
        key = f"u{index}"
        result = snapshot.evaluate("f", {"targetingKey": key})
        assert result.variant == ("a" if expected_bucket("f", key) < 50 else "b")
        assert (result.reason, result.rule_id) == (Reason.SPLIT, "r1")
