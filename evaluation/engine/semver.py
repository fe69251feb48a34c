"""Semantic Versioning 2.0.0 parsing into keys that compare by precedence."""

from __future__ import annotations

import re

# The official semver.org pattern, with ASCII digits only and an optional leading "v".
_SEMVER = re.compile(
    r"[vV]?(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)\.(0|[1-9][0-9]*)"
    r"(?:-((?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*)"
    r"(?:\.(?:0|[1-9][0-9]*|[0-9]*[a-zA-Z-][0-9a-zA-Z-]*))*))?"
    r"(?:\+[0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*)?",
    re.ASCII,
)

# A numeric identifier is compared as (number of digits, digits): the same order as its
# value, since identifiers have no leading zeros, and no `int()` (which refuses past 4,300
# digits) of a hostile value.
Number = tuple[int, str]
VersionKey = tuple[Number, Number, Number, int, tuple[tuple[int, Number | str], ...]]


def parse_version(text: object) -> VersionKey | None:
    """The precedence key of a version string, or None when it is not a version.

    A release sorts after its pre-releases (flag 1 vs 0); pre-release identifiers compare
    numerically when numeric and sort before alphanumeric ones; build metadata is ignored.
    """
    if text.__class__ is not str:
        return None
    match = _SEMVER.fullmatch(text)
    if match is None:
        return None
    major, minor, patch, prerelease = match.groups()
    release = ((len(major), major), (len(minor), minor), (len(patch), patch))
    if prerelease is None:
        return (*release, 1, ())
    identifiers = tuple(
        (0, (len(part), part)) if part.isdigit() else (1, part) for part in prerelease.split(".")
    )
    return (*release, 0, identifiers)
