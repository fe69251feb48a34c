"""Deterministic assignment of a context to a rollout bucket (flagd `fractional` compatible)."""

from __future__ import annotations

import mmh3

BUCKETS = 100  # a rollout's weights add up to this


def bucket(salt: str, bucket_value: str, total_weight: int = BUCKETS) -> int:
    """The bucket in [0, total_weight) of `bucket_value` for a flag salted with `salt`.

    MurmurHash3 x86 32-bit, seed 0, unsigned, of the UTF-8 bytes of salt + value, scaled
    with a multiply and shift rather than a modulo so that buckets stay evenly sized. The
    bytes are encoded here, never by the hash: a string that is not valid Unicode raises
    UnicodeEncodeError instead of reaching C code that crashes on it. An ASCII string's
    buffer is its UTF-8 already, so only other strings pay for the encoding.
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
