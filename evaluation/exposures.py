"""Exposure counts: evaluations per flag, environment, variant, reason and hour, in batches.

The evaluation path only adds to a dict in process memory (one lock per request). Every
`EXPOSURE_FLUSH_SECONDS` a background thread of each process moves its counters out in one
batch: to Redis (HINCRBY on one hash per environment and hour) when Redis is configured,
else straight into the database (one upsert per counter, in one transaction). The
scheduler (`run_scheduler`, or `manage.py flush_exposures`) drains Redis into the database.
Nothing is ever written per evaluation.

Redis keys (evaluation.keys, under the cache's KEY_PREFIX):
  `exposures:{environment_id}:{hour}`  hash, field "flag\\tvariant\\treason" -> count
  `exposures:pending`                  set of the hashes above not yet drained

One bad counter never stops the others: a counter the store cannot hold (a NUL or a tab
in a name, a name longer than its column) is dropped where it is met, logged and counted
(`flags_exposures_dropped_total`), and the rest of its batch is written. Only a store that
is away fails a flush or a drain, and then nothing is lost: the counts wait for the next.
"""

from __future__ import annotations

import logging
import operator
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any, cast

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.db.models import Count, Max, Min, Sum

from evaluation import keys
from evaluation.batches import (
    SEPARATOR,
    TAKE_HASH,
    Batch,
    redis,
    text_problem,
    upsert,
    upsert_statement,
)
from evaluation.engine import ErrorCode, EvaluationResult
from flags.models import Environment, ExposureCount, Flag
from flagsite import metrics

log = logging.getLogger(__name__)

HOUR = 3600
# Past this many distinct counters a process flushes without waiting for its interval.
MAX_COUNTERS = 50_000

Key = tuple[int, str, str, str, int]  # environment id, flag key, variant, reason, hour


class Together:
    """The counters a bulk answer adds one to on every request (its flags whose answer is the
    same for every context): one batch entry a request and hour, spread over them at the
    flush, so a thousand fixed flags cost one increment instead of a thousand."""

    __slots__ = ("environment_id", "counters")

    def __init__(self, environment_id: int, results: Iterable[EvaluationResult]) -> None:
        self.environment_id = environment_id
        self.counters = tuple(
            (result.flag_key, result.variant or "", result.reason)
            for result in results
            if result.error_code != ErrorCode.FLAG_NOT_FOUND
        )


# A batch entry: one counter, or a Together counted in an hour.
Entry = Key | tuple[Together, int]


def _flush_batch() -> int:
    return flush()


_batch: Batch[Entry, int] = Batch(
    "exposure", flush=_flush_batch, merge=operator.add, limit=MAX_COUNTERS
)


# --- Recording (the evaluation path) ------------------------------------------------------


def record(environment_id: int, results: Iterable[EvaluationResult]) -> None:
    """Count evaluations just served; cheap enough for every request.

    A flag that does not exist is not counted: its key is whatever the caller put in the
    URL, and any client key could fill the counters with made-up names.
    """
    hour = int(time.time()) // HOUR * HOUR
    with _batch.lock:
        counts = _batch.items
        for result in results:
            if result.error_code == ErrorCode.FLAG_NOT_FOUND:
                continue
            key = (environment_id, result.flag_key, result.variant or "", result.reason, hour)
            counts[key] = counts.get(key, 0) + 1
        size = len(counts)
    _batch.started(size)


def record_together(together: Together) -> None:
    """Count one evaluation of each of `together`'s flags."""
    _batch.add((together, int(time.time()) // HOUR * HOUR), 1)


def _spread(taken: dict[Entry, int]) -> dict[Key, int]:
    """The batch's entries as counters: each Together's count added to each of its own."""
    counts: dict[Key, int] = {}
    for entry, count in taken.items():
        if len(entry) == 2:
            together, hour = entry
            assert isinstance(together, Together)
            environment_id = together.environment_id
            for flag_key, variant, reason in together.counters:
                key = (environment_id, flag_key, variant, reason, hour)
                counts[key] = counts.get(key, 0) + count
        else:
            counts[entry] = counts.get(entry, 0) + count
    return counts


def add(
    environment_id: int, flag_key: str, variant: str, reason: str, count: int, hour: int
) -> None:
    """Count evaluations made elsewhere (server-side SDKs posting their own counts)."""
    _batch.add((environment_id, flag_key, variant or "", reason, hour // HOUR * HOUR), count)


# --- Flushing -----------------------------------------------------------------------------


# The ExposureCount columns' sizes, and hours a timestamp can name.
_LIMITS = {"flag": 100, "variant": 64, "reason": 32}
_LAST_HOUR = 2**40


def _unstorable(key: Key) -> str | None:
    """Why a counter cannot be stored (or be a field of a Redis hash), or None."""
    environment_id, flag_key, variant, reason, hour = key
    for name, text in (("flag", flag_key), ("variant", variant), ("reason", reason)):
        problem = text_problem(name, text, _LIMITS[name])
        if problem:
            return problem
    if not isinstance(environment_id, int) or not isinstance(hour, int):
        return "environment or hour is not a number"
    if not 0 <= hour < _LAST_HOUR:
        return "hour is out of range"
    return None


def _storable(counts: dict[Key, int]) -> dict[Key, int]:
    """The counters that can be stored; the others are logged, counted and dropped."""
    kept, dropped = {}, 0
    for key, count in counts.items():
        why = _unstorable(key)
        if why is None and isinstance(count, int) and 0 < count < 2**62:
            kept[key] = count
            continue
        dropped += 1
        log.warning("dropped an exposure counter %r: %s", key[:4], why or "bad count")
    if dropped:
        metrics.record_dropped_exposures("unstorable", dropped)
    return kept


def flush() -> int:
    """Move this process's counters to Redis (or the database); the number of counters."""
    counts = _spread(_batch.take())
    if not counts:
        return 0
    if settings.REDIS_URL:
        try:
            _to_redis(counts)
            return len(counts)
        except Exception as error:
            log.warning("Redis unavailable, writing exposure counts to the database: %s", error)
    try:
        _to_database(counts)
    except Exception:
        _batch.give_back(cast(dict[Entry, int], counts))  # each counter on its own now
        raise
    return len(counts)


def _hash_key(environment_id: int, hour: int) -> str:
    return cache.make_key(keys.exposures(environment_id, hour))


_redis = redis


def _to_redis(counts: dict[Key, int]) -> None:
    pipe = _redis().pipeline(transaction=False)
    pending = cache.make_key(keys.EXPOSURES_PENDING)
    for (environment_id, flag_key, variant, reason, hour), count in _storable(counts).items():
        key = _hash_key(environment_id, hour)
        pipe.hincrby(key, SEPARATOR.join((flag_key, variant, reason)), count)
        pipe.sadd(pending, key)
    pipe.execute()


def _to_database(counts: dict[Key, int], now: datetime | None = None) -> None:
    """Upsert the counters in one transaction; raises only if the database is away.

    Should the batch still be refused for its data, each row is written on its own and
    the ones the database refuses are dropped (logged and counted), not the batch.
    """
    counts = _storable(counts)
    now = now or datetime.now(UTC)
    existing = set(
        Environment.objects.filter(pk__in={key[0] for key in counts}).values_list("pk", flat=True)
    )
    rows = []
    # A fixed order keeps concurrent upserts of the same rows from deadlocking.
    for key in sorted(counts):
        environment_id, flag_key, variant, reason, hour = key
        if environment_id not in existing:
            continue
        start = datetime.fromtimestamp(hour, UTC)
        last = min(now, start + timedelta(seconds=HOUR - 1))
        rows.append((environment_id, flag_key, variant, reason, start, counts[key], last))
    if not rows:
        return
    adapt = connection.ops.adapt_datetimefield_value
    sql = upsert_statement(
        ExposureCount._meta.db_table,
        ("environment_id", "flag_key", "variant", "reason", "hour", "count", "last_at"),
        ("environment_id", "flag_key", "variant", "reason", "hour"),
        count="add",
        last_at="latest",
    )
    params = [(*row[:4], adapt(row[4]), row[5], adapt(row[6])) for row in rows]
    upsert(sql, params, refused=_refused)


def _refused(row: tuple, error: Exception) -> None:
    log.warning("dropped an exposure counter %r: %s", row[:4], error)
    metrics.record_dropped_exposures("refused")


def drain() -> int:
    """Flush this process, then move every count waiting in Redis into the database."""
    flushed = flush()
    if not settings.REDIS_URL:
        return flushed
    store = _redis()
    pending = cache.make_key(keys.EXPOSURES_PENDING)
    drained = 0
    for raw in store.smembers(pending):
        key = raw.decode()
        fields = store.eval(TAKE_HASH, 2, key, pending)
        counts = _parse_hash(key, fields)
        try:
            _to_database(counts)
        except Exception:
            _to_redis(counts)  # put them back for the next drain
            raise
        drained += len(counts)
    return drained


def _parse_hash(key: str, fields: list[bytes]) -> dict[Key, int]:
    """A drained hash's counters; a field that is not `flag\\tvariant\\treason` -> a count
    (written before names were checked, or by something else) is dropped, not the hash."""
    environment_id, hour = (int(part) for part in key.rsplit(":", 2)[-2:])
    counts, dropped = {}, 0
    for field, value in zip(fields[::2], fields[1::2], strict=False):
        parts = field.decode(errors="replace").split(SEPARATOR)
        if len(parts) != 3 or not value.isdigit():
            dropped += 1
            log.warning("dropped a malformed exposure counter %r of %s", field[:200], key)
            continue
        flag_key, variant, reason = parts
        counts[(environment_id, flag_key, variant, reason, hour)] = int(value)
    if dropped:
        metrics.record_dropped_exposures("malformed", dropped)
    return counts


# --- Reads (the admin's charts and the stale-flag list) -----------------------------------


def exposure_series(environment_id: int, flag_key: str, since: datetime) -> list[dict[str, Any]]:
    """Evaluations per hour and variant since `since`, oldest first."""
    rows = (
        ExposureCount.objects.filter(
            environment_id=environment_id, flag_key=flag_key, hour__gte=since
        )
        .values("hour", "variant")
        .annotate(total=Sum("count"))
        .order_by("hour", "variant")
    )
    return [dict(row) for row in rows]


def last_evaluated(environment_id: int, flag_key: str) -> datetime | None:
    rows = ExposureCount.objects.filter(environment_id=environment_id, flag_key=flag_key)
    return rows.aggregate(last=Max("last_at"))["last"]


def stale_flags(project, days: int | None = None, now: datetime | None = None) -> list[dict]:
    """Live flags never evaluated (or not for `days` days), or serving one variant to everyone
    for `days` days; only flags created at least `days` days ago.

    "One variant to everyone" means: evaluated since at least `days` days ago, and in each
    environment where it was evaluated during those days every evaluation got one variant.
    """
    return stale_flags_by_project([project], days, now)[project.pk]


def stale_flags_by_project(
    projects: Iterable, days: int | None = None, now: datetime | None = None
) -> dict[int, list[dict]]:
    """`stale_flags` of each project (by primary key), in three queries for any number."""
    days = days if days is not None else settings.STALE_FLAG_DAYS
    now = now or datetime.now(UTC)
    since = now - timedelta(days=days)
    ids = [project.pk for project in projects]
    counts = ExposureCount.objects.filter(environment__project_id__in=ids)
    first_seen = {
        (row["environment__project_id"], row["flag_key"]): row["first"]
        for row in counts.values("environment__project_id", "flag_key").annotate(first=Min("hour"))
    }
    variants = (
        counts.filter(hour__gte=since - timedelta(seconds=HOUR))
        .values("environment__project_id", "flag_key", "environment_id")
        .annotate(variants=Count("variant", distinct=True))
    )
    mixed = {
        (row["environment__project_id"], row["flag_key"]) for row in variants if row["variants"] > 1
    }
    recent = {(row["environment__project_id"], row["flag_key"]) for row in variants}
    stale: dict[int, list[dict]] = {pk: [] for pk in ids}
    # A flag younger than the window has not had the time to be stale, whatever its counts.
    flags = Flag.objects.filter(project_id__in=ids, archived=False, created_at__lte=since)
    for flag in flags.order_by("key"):
        key = (flag.project_id, flag.key)
        if key not in first_seen:
            stale[flag.project_id].append({"flag": flag, "why": "never evaluated"})
        elif key not in recent:
            stale[flag.project_id].append({"flag": flag, "why": f"not evaluated for {days} days"})
        elif first_seen[key] <= since and key not in mixed:
            why = f"one variant to everyone for {days} days"
            stale[flag.project_id].append({"flag": flag, "why": why})
    return stale
