"""Deterministic assignment of a context to a rollout bucket, in each system's own scheme.

A flag names its bucketing scheme (`bucketing` in the document, `flagd` when absent), so that
a flag imported from another system keeps every user in the variant they had there. Each
scheme is that system's published algorithm (see docs/evaluation.md#bucketing):

- `flagd`: MurmurHash3 x86_32, seed 0, of salt + value; bucket `(hash * total) >> 32`;
- `unleash`: MurmurHash3 x86_32, seed 86028157, of `"{salt}:{value}"`; `hash % total + 1`
  walked over the cumulative weights (the salt is Unleash's groupId: the feature name, or
  the groupId of the strategy whose variants the flag serves);
- `launchdarkly`: the first 15 hex digits of SHA-1 of `"{flagKey}.{salt}.{value}"` divided by
  0xFFFFFFFFFFFFFFF, walked over the cumulative weights on a 100,000 scale;
- `flagsmith`: MD5 of `"{salt},{value}"` as an integer, `% 9999 / 9998 * 100`, walked over
  the cumulative weights as percentages of the total.

The salt is the rollout's own `salt` when it has one, else the flag's.

Where a system draws at random (Unleash's `random` stickiness), the bucket value is the
`$random` attribute, which the snapshot draws anew at each read from a generator it is
given: nothing here holds state or reads the clock.

Every hash gets UTF-8 bytes encoded here: a string that is not valid Unicode raises
UnicodeEncodeError instead of reaching C code that crashes on it.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
from collections.abc import Callable, Sequence

import mmh3

SCHEMES = ("flagd", "unleash", "launchdarkly", "flagsmith")
# The attribute that is never read from the context: each read is a fresh random value.
RANDOM_ATTRIBUTE = "$random"
UNLEASH_VARIANT_SEED = 86028157
LAUNCHDARKLY_SCALE = 100_000
_LD_LONG_SCALE = float(0xFFFFFFFFFFFFFFF)
# Rollouts whose weights total at most this pick their variant from a precomputed table.
TABLE_LIMIT = 10_000
# The largest total of a rollout's weights (flagd's weights are 32-bit integers).
MAX_TOTAL_WEIGHT = 2**31 - 1

# MurmurHash3 x86_32 of (str or bytes, seed, signed): `snapshot` and `specialise` inline
# bucket() with it.
murmur3 = mmh3.hash

# value -> index of the chosen entry in the rollout's weights
Chooser = Callable[[str], int]


def bucket(salt: str, bucket_value: str, total_weight: int = 100) -> int:
    """The flagd bucket in [0, total_weight) of `bucket_value` for a flag salted with `salt`.

    MurmurHash3 x86 32-bit, seed 0, unsigned, of the UTF-8 bytes of salt + value, scaled
    with a multiply and shift rather than a modulo so that buckets stay evenly sized. The
    only copy of the formula: every flagd rollout buckets through it. The bytes are encoded
    here, never by the hash: a string that is not valid Unicode raises UnicodeEncodeError
    instead of reaching C code that crashed the process on it. An ASCII string's buffer is
    its UTF-8 already, so only other strings pay for the encoding. (`CompiledFlag.resolve`
    and the functions `specialise` generates inline this formula for the commonest rollout;
    the conformance rollouts cover them all.)
    """
    key = salt + bucket_value
    data: str | bytes = key if key.isascii() else key.encode()
    return (mmh3.hash(data, 0, False) * total_weight) >> 32


def bucket_value_of(value: object) -> str | None:
    """The string that is hashed for an attribute value, or None if it cannot be bucketed."""
    cls = value.__class__
    if cls is str:
        return value  # type: ignore[return-value]
    if cls is int or cls is float:
        return str(value)
    return None


def unleash_normalized(group_id: str, value: str, seed: int = 0) -> int:
    """Unleash's `normalizedValue`: `murmur3("{groupId}:{value}", seed) % 100 + 1`."""
    return mmh3.hash(f"{group_id}:{value}".encode(), seed, False) % 100 + 1


def launchdarkly_bucket(flag_key: str, salt: str, value: str) -> float:
    """LaunchDarkly's bucket in [0, 1) of `value` for a flag (its key and salt)."""
    digest = hashlib.sha1(f"{flag_key}.{salt}.{value}".encode()).hexdigest()
    return int(digest[:15], 16) / _LD_LONG_SCALE


def flagsmith_percentage(ids: Sequence[str]) -> float:
    """Flagsmith's hashed percentage in [0, 100) of object ids.

    MD5 of the ids joined with `","`, as an integer, `% 9999 / 9998 * 100`; a value of
    exactly 100 hashes the ids repeated twice, as Flagsmith does, so 100 is never returned.
    """
    repeated = list(ids)
    while True:
        digest = hashlib.md5(",".join(repeated).encode()).hexdigest()  # noqa: S324 - bucketing
        percentage = int(digest, 16) % 9999 / 9998 * 100
        if percentage != 100:
            return percentage
        repeated = repeated + list(ids)


def _cumulative_index(weights: Sequence[int], below: Callable[[int], bool]) -> int:
    """The first entry whose cumulative weight satisfies `below`; the last one otherwise."""
    cumulative = 0
    for index, weight in enumerate(weights):
        cumulative += weight
        if below(cumulative):
            return index
    return len(weights) - 1


def bucket_indexes(weights: Sequence[int]) -> tuple[int, ...]:
    """For each flagd bucket in [0, total of the weights), the index of its entry."""
    table: list[int] = []
    for index, weight in enumerate(weights):
        table.extend([index] * weight)
    return tuple(table)


def chooser(scheme: str, flag_key: str, salt: str, weights: Sequence[int]) -> Chooser:
    """The function that picks a rollout entry for a bucketed value, in `scheme`."""
    total = sum(weights)
    if scheme == "flagd":
        if total > TABLE_LIMIT:  # a bucket table this long would cost memory, not time
            cumulative = tuple(itertools.accumulate(weights))

            def flagd_large(value: str) -> int:
                return bisect.bisect_right(cumulative, bucket(salt, value, total))

            return flagd_large
        entries = bucket_indexes(weights)

        def flagd(value: str) -> int:
            return entries[bucket(salt, value, total)]

        return flagd
    if scheme == "unleash":

        def unleash(value: str) -> int:
            target = mmh3.hash(f"{salt}:{value}".encode(), UNLEASH_VARIANT_SEED, False)
            target = target % total + 1
            return _cumulative_index(weights, lambda cumulative: cumulative >= target)

        return unleash
    if scheme == "launchdarkly":

        def launchdarkly(value: str) -> int:
            point = launchdarkly_bucket(flag_key, salt, value)
            return _cumulative_index(
                weights, lambda cumulative: point < cumulative / LAUNCHDARKLY_SCALE
            )

        return launchdarkly
    if scheme == "flagsmith":

        def flagsmith(value: str) -> int:
            percentage = flagsmith_percentage((salt, value))
            return _cumulative_index(
                weights, lambda cumulative: percentage < cumulative * 100 / total
            )

        return flagsmith
    raise ValueError(f"unknown bucketing scheme {scheme!r}")
