"""The versions of ingested data, per day: what changed since an analysis last read it.

Ingestion (evaluation.events, the one writer of first exposures and events) calls
`ingested_bump` in the transaction that writes the rows, once per flag or event name and
day (UTC) it wrote rows for; an analysis reads a `Watermark` (one query) and keys its cached
totals by the versions of the days its answer depends on, so a cached answer is used only
while none of the rows it was computed from can have changed, and rows of other days (an
ended experiment's, once its windows closed) leave it in use.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from django.db import connection
from django.db.models import Q

from evaluation import batches
from flags.models import IngestedData

__all__ = ["Watermark", "ingested_bump", "watermark"]

EXPOSURES, EVENTS = IngestedData.Kind.EXPOSURES, IngestedData.Kind.EVENTS
# environment id, kind, name, the row's day, a time written (a first exposure's, an event's)
Written = tuple[int, str, str, date, datetime]


@dataclass(frozen=True)
class Watermark:
    """The per-day versions of a flag's first exposures and of some events in an environment.

    Versions only grow and rows are only added, so the sum of the versions of a range of
    days changes whenever anything in the range was written: that sum is the range's mark.
    """

    rows: tuple[tuple[str, str, date, int, datetime], ...]  # kind, name, day, version, latest

    @property
    def exposures_latest(self) -> datetime | None:
        """The latest first exposure time ingested for the flag; None without any."""
        return max((row[4] for row in self.rows if row[0] == EXPOSURES), default=None)

    def exposures(self, until: date) -> int:
        """The mark of the flag's first exposures of every day up to `until`."""
        return sum(row[3] for row in self.rows if row[0] == EXPOSURES and row[2] <= until)

    def events(self, name: str, since: date, until: date) -> int:
        """The mark of the events of `name` of the days from `since` to `until`."""
        return sum(
            row[3]
            for row in self.rows
            if row[0] == EVENTS and row[1] == name and since <= row[2] <= until
        )


def ingested_bump(written: Iterable[Written]) -> None:
    """Count one more write of each (environment, kind, name, day), keeping the latest time.

    Called last in the writing transaction: the rows it locks are held only until commit.
    """
    latest: dict[tuple[int, str, str, date], datetime] = {}
    for environment_id, kind, name, day, at in written:
        key = (environment_id, kind, name, day)
        latest[key] = max(at, latest.get(key, at))
    if not latest:
        return
    sql = batches.upsert_statement(
        IngestedData._meta.db_table,
        ("environment_id", "kind", "name", "day", "version", "latest"),
        ("environment_id", "kind", "name", "day"),
        version="add",
        latest="latest",
    )
    adapt, adapt_day = (
        connection.ops.adapt_datetimefield_value,
        connection.ops.adapt_datefield_value,
    )
    # A fixed order keeps two flushes of the same environment from deadlocking.
    params = [
        (environment_id, kind, name, adapt_day(day), 1, adapt(at))
        for (environment_id, kind, name, day), at in sorted(latest.items())
    ]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def watermark(environment_id: int, flag_key: str, events: Iterable[str]) -> Watermark:
    """The versions an analysis of `flag_key`'s units on `events` depends on. One query."""
    rows = IngestedData.objects.filter(
        Q(kind=EXPOSURES, name=flag_key) | Q(kind=EVENTS, name__in=sorted(set(events))),
        environment_id=environment_id,
    ).values_list("kind", "name", "day", "version", "latest")
    return Watermark(tuple(rows))
