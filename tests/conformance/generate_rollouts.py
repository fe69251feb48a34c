"""Writes rollouts.json: rollout cases whose expected variants come from the hash spec alone.

The expectations are computed here with a MurmurHash3 x86_32 written from the algorithm's
description, not with the engine, so the conformance suite checks the engine (and every SDK)
against the specification. Run from the repository root:

    python tests/conformance/generate_rollouts.py

and commit the result. The test runner never recomputes these expectations.
"""

from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
MASK = 0xFFFFFFFF


def murmur3_32(data: bytes, seed: int = 0) -> int:
    """MurmurHash3 x86 32-bit, unsigned."""
    c1, c2 = 0xCC9E2D51, 0x1B873593
    h = seed & MASK
    whole = len(data) - len(data) % 4
    for i in range(0, whole, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * c1) & MASK
        k = ((k << 15) | (k >> 17)) & MASK
        k = (k * c2) & MASK
        h ^= k
        h = ((h << 13) | (h >> 19)) & MASK
        h = (h * 5 + 0xE6546B64) & MASK
    tail = data[whole:]
    if tail:
        k = int.from_bytes(tail, "little")
        k = (k * c1) & MASK
        k = ((k << 15) | (k >> 17)) & MASK
        k = (k * c2) & MASK
        h ^= k
    h ^= len(data)
    h ^= h >> 16
    h = (h * 0x85EBCA6B) & MASK
    h ^= h >> 13
    h = (h * 0xC2B2AE35) & MASK
    h ^= h >> 16
    return h


# Published vectors (seed 0): a wrong implementation must not write the file.
assert murmur3_32(b"") == 0
assert murmur3_32(b"hello") == 613153351
assert murmur3_32(b"The quick brown fox jumps over the lazy dog") == 776992547


def expected_variant(salt: str, value: str, weights: list[tuple[str, int]]) -> str:
    bucket = (murmur3_32((salt + value).encode("utf-8")) * sum(w for _, w in weights)) >> 32
    cumulative = 0
    for variant, weight in weights:
        cumulative += weight
        if bucket < cumulative:
            return variant
    raise AssertionError("weights must sum to more than the bucket")


VARIANTS = [{"key": "a", "value": "A"}, {"key": "b", "value": "B"}, {"key": "c", "value": "C"}]


def rollout_flag(weights: list[tuple[str, int]], **more: object) -> dict:
    bucket_by = more.pop("bucketBy", "targetingKey")
    rollout = {"bucketBy": bucket_by, "variants": [{"variant": k, "weight": w} for k, w in weights]}
    flag = {
        "type": "string",
        "enabled": True,
        "archived": False,
        "variants": VARIANTS,
        "offVariant": "c",
        "defaultServe": {"rollout": rollout},
    }
    flag.update(more)
    return flag


FLAGS: dict[str, tuple[dict, list[tuple[str, int]], str, str]] = {}


def add(
    key: str,
    weights: list[tuple[str, int]],
    *,
    salt: str | None = None,
    rollout_salt: str | None = None,
    **more: object,
):
    flag = rollout_flag(weights, **more)
    if salt is not None:
        flag["salt"] = salt
    if rollout_salt is not None:  # the rollout's own salt, hashed instead of the flag's
        flag["defaultServe"]["rollout"]["salt"] = rollout_salt
    bucket_by = flag["defaultServe"]["rollout"]["bucketBy"]
    hashed = rollout_salt if rollout_salt is not None else salt if salt is not None else key
    FLAGS[key] = (flag, weights, hashed, bucket_by)


add("split-50-50", [("a", 50), ("b", 50)])
add("split-10", [("a", 10), ("b", 90)])
add("split-20", [("a", 20), ("b", 80)])
add("split-thirds", [("a", 33), ("b", 33), ("c", 34)])
add("split-0-100", [("a", 0), ("b", 100)])
add("split-100-0", [("a", 100), ("b", 0)])
add("split-order", [("b", 25), ("a", 75)])  # walks the rollout's order, not the flag's
add("split-salted", [("a", 50), ("b", 50)], salt="shared-salt")
add("split-by-company", [("a", 50), ("b", 50)], bucketBy="company.id")
add("split-rollout-salted", [("a", 50), ("b", 50)], salt="flag-salt", rollout_salt="own-salt")
# Weights are any non-negative integers: their total is the scale, not 100.
add("split-1-3", [("a", 1), ("b", 3)])
add("split-fine", [("a", 1), ("b", 99_999)])  # 0.001% steps
add("split-large", [("a", 123_456), ("b", 654_321), ("c", 7)])

KEYS = [f"user-{i}" for i in range(40)] + ["", "élodie", "日本語", "🙂", "a" * 100]


def cases() -> list[dict]:
    out = []
    for key, (_, weights, salt, bucket_by) in FLAGS.items():
        for value in KEYS if bucket_by == "targetingKey" else KEYS[:20]:
            variant = expected_variant(salt, value, weights)
            if bucket_by == "targetingKey":
                context: dict = {"targetingKey": value}
            else:
                context = {"targetingKey": "same-user", "company": {"id": value}}
            expect = {"value": variant.upper(), "variant": variant, "reason": "SPLIT"}
            out.append({"flag": key, "context": context, "expect": expect})
    # A number attribute is bucketed as its decimal string.
    for number in (0, 7, 123456789):
        variant = expected_variant("split-by-company", str(number), FLAGS["split-by-company"][1])
        out.append(
            {
                "flag": "split-by-company",
                "description": "a number attribute is hashed as its decimal string",
                "context": {"company": {"id": number}},
                "expect": {"value": variant.upper(), "variant": variant, "reason": "SPLIT"},
            }
        )
    # A rule serving a rollout reports SPLIT too.
    for value in KEYS[:10]:
        variant = expected_variant("rule-split", value, [("a", 50), ("b", 50)])
        out.append(
            {
                "flag": "rule-split",
                "context": {"targetingKey": value, "beta": True},
                "expect": {"value": variant.upper(), "variant": variant, "reason": "SPLIT"},
            }
        )
    return out


def document() -> dict:
    flags = {key: flag for key, (flag, _, _, _) in FLAGS.items()}
    rule_rollout = {"variants": [{"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}]}
    flags["rule-split"] = {
        "type": "string",
        "enabled": True,
        "variants": VARIANTS,
        "offVariant": "c",
        "rules": [
            {
                "id": "beta",
                "conditions": [
                    {"attribute": "beta", "operator": "equals", "values": [True], "negate": False}
                ],
                "serve": {"rollout": rule_rollout},
            }
        ],
        "defaultServe": {"variant": "c"},
    }
    return {"schemaVersion": 1, "version": 6, "flags": flags, "segments": {}}


def main() -> None:
    data = {
        "name": "rollouts",
        "description": (
            "Bucketing, compatible with flagd's fractional: h = MurmurHash3 x86_32 (seed 0, "
            "unsigned) of the UTF-8 bytes of salt + bucket value (salt is the rollout's own, "
            "else the flag's, which defaults to the flag key; the bucket value is the "
            "bucketBy attribute, a number as its decimal string); "
            "bucket = (h * total weight) >> 32; the first variant, in the rollout's order, "
            "whose cumulative weight exceeds the bucket. Generated by generate_rollouts.py."
        ),
        "document": document(),
        "cases": cases(),
    }
    target = HERE / "rollouts.json"
    target.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {target} ({len(data['cases'])} cases)")


if __name__ == "__main__":
    main()
