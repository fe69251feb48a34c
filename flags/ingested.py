"""The versions of ingested data: what changed since an analysis last read it.

Ingestion (evaluation.events, the one writer of first exposures and events) calls
`ingested_bump` in the transaction that writes the rows, once per flag and event name it
wrote for; an analysis reads `watermark` (one query) and keys its cached totals by it, so a
cached answer is used only while none of the rows it was computed from can have changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from django.db import connection
from django.db.models import Q

from evaluation import batches
from flags.models import IngestedData

__all__ = ["Watermark", "ingested_bump", "watermark"]

Written = tuple[int, str, str, datetime]  # environment id, kind, name, a time written


@dataclass(frozen=True)
class Watermark:
    """The versions of a flag's first exposures and of some events in an environment."""

    exposures: int  # 0: never written by ingestion
    exposures_latest: datetime | None  # the latest first exposure time written
    events: tuple[tuple[str, int], ...]  # (event name, version), by name


def ingested_bump(written: Iterable[Written]) -> None:
    """Count one more write of each (environment, kind, name), keeping the latest time.

    Called last in the writing transaction: the rows it locks are held only until commit.
    """
    latest: dict[tuple[int, str, str], datetime] = {}
    for environment_id, kind, name, at in written:
        key = (environment_id, kind, name)
        latest[key] = max(at, latest.get(key, at))
    if not latest:
        return
    sql = batches.upsert_statement(
        IngestedData._meta.db_table,
        ("environment_id", "kind", "name", "version", "latest"),
        ("environment_id", "kind", "name"),
        version="add",
        latest="latest",
    )
    adapt = connection.ops.adapt_datetimefield_value
    # A fixed order keeps two flushes of the same environment from deadlocking.
    params = [(*key, 1, adapt(at)) for key, at in sorted(latest.items())]
    with connection.cursor() as cursor:
        cursor.executemany(sql, params)


def watermark(environment_id: int, flag_key: str, events: Iterable[str]) -> Watermark:
    """The versions an analysis of `flag_key`'s units on `events` depends on. One query."""
    names = sorted(set(events))
    rows = IngestedData.objects.filter(
        Q(kind=IngestedData.Kind.EXPOSURES, name=flag_key)
        | Q(kind=IngestedData.Kind.EVENTS, name__in=names),
        environment_id=environment_id,
    )
    exposures, latest, versions = 0, None, dict.fromkeys(names, 0)
    for kind, name, version, at in rows.values_list("kind", "name", "version", "latest"):
        if kind == IngestedData.Kind.EXPOSURES:
            exposures, latest = version, at
        else:
            versions[name] = version
    return Watermark(exposures, latest, tuple(versions.items()))
