"""What a compile reuses of the snapshot before it: the flags and segments left unchanged."""

from __future__ import annotations

import marshal
import random
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .conditions import Draw, Predicate
from .errors import DocumentError

if TYPE_CHECKING:
    from .snapshot import CompiledFlag


def reused_flags(
    flags: Mapping[str, Any],
    base: Origin,
    origin: Origin,
    segments: Mapping[str, Predicate | DocumentError],
) -> dict[str, CompiledFlag]:
    """The previous snapshot's compiled flags whose part of the document and whose segments
    are unchanged; records the mark of each flag it compares in `origin`."""
    reused: dict[str, CompiledFlag] = {}
    old_flags, old_marks, old_compiled = base.raw_flags, base.flag_marks, base.compiled
    marks = origin.flag_marks
    dumps = marshal.dumps
    for key, fragment in flags.items():
        # `unchanged`, written out for the usual case (a new object, as a document
        # received over the network is): one call fewer per flag.
        old = old_flags.get(key)
        if old is None:
            continue
        if old is fragment:
            if not unchanged(old_flags, old_marks, key, fragment, marks, flags):
                continue
        else:
            try:
                mark = dumps(fragment, 2)
            except Exception:  # noqa: BLE001 - not plain JSON data (see `mark_of`)
                continue
            old_mark = old_marks.get(key)
            if old_mark is None:  # the previous snapshot was compiled without one
                old_mark = mark_of(old)
                if old_mark is None:
                    continue
                old_marks[key] = old_mark
            if mark != old_mark:
                marks[key] = mark
                continue
            marks[key] = old_mark  # equal: the new bytes are dropped at once
        flag = old_compiled.get(key)
        if flag is None:
            continue
        if flag.error is not None and not flag.archived:
            continue  # a broken flag: which segments it lacked is not known, compile it
        if flag.segment_keys and not _same_segments(flag.segment_keys, segments, base.segments):
            continue
        reused[key] = flag
    return reused


def _same_segments(
    keys: frozenset[str],
    segments: Mapping[str, Predicate | DocumentError],
    old_segments: Mapping[str, Predicate | DocumentError],
) -> bool:
    """Whether each segment named is the one compiled before (unchanged, so reused)."""
    return all(segments.get(key) is old_segments.get(key) for key in keys)


def mark_of(fragment: object) -> bytes | None:
    """A part of a document as bytes that are equal only for equal JSON of equal types
    (true, 1 and 1.0 differ, unlike in `==`); None if it is not plain JSON data."""
    try:  # version 2: no references and no interning flags, which follow object identity
        return marshal.dumps(fragment, 2)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - ValueError: another type, or nested too deep
        return None


class Origin:
    """What a snapshot was compiled from and into, for the next compile to reuse: the
    document's flags and segments, the compiled segments and flags, the `$random` draw, and
    the marks (see `mark_of`) of the parts, made when a compile first compares them."""

    __slots__ = (
        "compiled",
        "compiled_flags",
        "draw",
        "flag_marks",
        "generator",
        "raw_flags",
        "raw_segments",
        "segment_marks",
        "segments",
    )

    def __init__(
        self,
        raw_flags: Mapping[str, Any],
        raw_segments: Mapping[str, Any],
        generator: random.Random,
        draw: Draw,
    ) -> None:
        self.raw_flags = raw_flags
        self.raw_segments = raw_segments
        self.generator = generator
        self.draw = draw
        self.segments: Mapping[str, Predicate | DocumentError] = {}
        self.compiled: Mapping[str, CompiledFlag] = {}
        self.compiled_flags = 0
        self.flag_marks: dict[str, bytes] = {}
        self.segment_marks: dict[str, bytes] = {}


def unchanged(
    raw: Mapping[str, Any],
    marks: dict[str, bytes],
    key: str,
    fragment: object,
    new_marks: dict[str, bytes],
    current: Mapping[str, Any],
) -> bool:
    """Whether `fragment`, the flag or segment `key` of a new document (in its `current`
    flags or segments), is what `raw[key]` of the previous one was (by their marks, `marks`
    holding the previous ones made so far); records its mark in `new_marks`.

    The previous part itself, in a new document, is unchanged without a comparison: a
    builder that reuses the parts of flags that did not change (evaluation.documents) hands
    the same objects again, and documents are not edited once compiled. In the previous
    document's own mapping, the same object may have been edited in place: compared anew.
    """
    old = raw.get(key)
    if old is None:
        return False
    if old is fragment:
        if raw is current:
            return False
        old_mark = marks.get(key)
        if old_mark is not None:  # kept for a later compile that compares the part
            new_marks[key] = old_mark
        return True
    mark = mark_of(fragment)
    if mark is None:
        return False
    new_marks[key] = mark
    old_mark = marks.get(key)
    if old_mark is None:  # the previous snapshot was compiled without one
        old_mark = mark_of(old)
        if old_mark is None:
            return False
        marks[key] = old_mark
    return mark == old_mark
