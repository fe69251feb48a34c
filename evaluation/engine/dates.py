"""The dates of the `before` / `after` operators: a strict ISO 8601 profile, or epoch seconds.

Accepted, and nothing else (see docs/evaluation.md):

    2025-01-01                       a calendar date: midnight UTC
    2025-01-01T10:00:00              a date and time without a zone: UTC
    2025-01-01T10:00:00.123          ... with 1 to 9 digits of a fraction of a second
                                     (compared to the microsecond: digits past 6 are cut)
    2025-01-01T10:00:00Z             ... in UTC
    2025-01-01T10:00:00+02:00        ... at an offset of hours and minutes (-00:00 is UTC)

Digits are ASCII, the separator is an upper-case `T`, the zone an upper-case `Z` or `±HH:MM`;
years run from 0001 to 9999 and every field is range-checked (February 30 is not a date).
`datetime.fromisoformat`, which this replaces, also took `2025-01-01X00:00:00`, week dates,
`+0200` and offsets with seconds: what a date is must not depend on a Python version.
"""

from __future__ import annotations

import math
import re
from datetime import date

_DATE = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})"
    r"(?:T([0-9]{2}):([0-9]{2}):([0-9]{2})(?:\.([0-9]{1,9}))?(Z|[+-][0-9]{2}:[0-9]{2})?)?"
)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_DAY = 86_400


def timestamp(value: object) -> float | None:
    """Epoch seconds of a date in the profile or of a finite epoch number; else None."""
    cls = value.__class__
    if cls is int or cls is float:
        try:
            stamp = float(value)  # type: ignore[arg-type]
        except OverflowError:  # an integer beyond any float
            return None
        return stamp if math.isfinite(stamp) else None
    if cls is not str:
        return None
    match = _DATE.fullmatch(value)  # type: ignore[call-overload]
    if match is None:
        return None
    return _epoch_seconds(match.groups())


def _epoch_seconds(fields: tuple[str | None, ...]) -> float | None:
    year, month, day, hour, minute, second, fraction, zone = fields
    try:
        days = date(int(year), int(month), int(day)).toordinal() - _EPOCH_DAY  # type: ignore[arg-type]
    except ValueError:  # year 0000, month 13, February 30, ...
        return None
    if hour is None:
        return float(days * _DAY)
    hours, minutes, seconds = int(hour), int(minute), int(second)  # type: ignore[arg-type]
    if hours > 23 or minutes > 59 or seconds > 59:
        return None
    offset = _offset_seconds(zone)
    if offset is None:
        return None
    stamp = days * _DAY + hours * 3600 + minutes * 60 + seconds - offset
    if fraction is None:
        return float(stamp)
    # To the microsecond, as a double holds an epoch time: 23:59:59.999999999 must stay
    # before midnight, which rounding the nanoseconds into the double would not keep.
    return stamp + int(fraction[:6].ljust(6, "0")) / 1_000_000


def _offset_seconds(zone: str | None) -> int | None:
    if zone is None or zone == "Z":
        return 0
    hours, minutes = int(zone[1:3]), int(zone[4:6])
    if hours > 23 or minutes > 59:
        return None
    offset = hours * 3600 + minutes * 60
    return -offset if zone[0] == "-" else offset
