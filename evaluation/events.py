"""Events and first unit exposures, in batches: the rows experiments join (docs/experiments.md).

A unit is a context's targetingKey. Two kinds of rows are written, never one per request:
- a first unit exposure (flags.UnitExposure): the first time a unit was served a variant
  of a flag by a rollout split (reason SPLIT), per environment, flag and variant;
- a unit's events of a day (flags.UnitEventDay): per environment, event name, unit and
  UTC day, the number of events, of those with a value, the values' sum and squares' sum,
  and the first and last event time.

The request path only merges into two dicts in process memory (evaluation.batches); a unit
exposure already recorded by this process is skipped before that (a bounded set), so a
unit evaluated a thousand times costs one dict look-up per split result after the first.
Every `EXPOSURE_FLUSH_SECONDS` a background thread moves both batches out: to Redis when
it is configured, else straight into the database (one upsert statement per table). The
scheduler (`run_scheduler`, `manage.py flush_exposures`) drains Redis into the database in
chunks of `DRAIN_CHUNK` entries, each written before the next is taken, so Redis is never
held for longer than a chunk's script (milliseconds); flushes write Redis in chunks too.
Per environment, at most `EVENTS_MAX_BACKLOG` entries wait in Redis: each flush measures
the backlog, and while it is at the bound the events endpoint answers 503 (`backlog_full`)
and the server's own first exposures are dropped and counted.

Redis keys (evaluation.keys, under the cache's KEY_PREFIX):
  `units:{environment_id}:{day}`   sorted set, member "flag\\tvariant\\tunit", score = the
                                   first time seen (ZADD LT keeps the earliest)
  `events:{environment_id}:{day}`  hash, fields "event\\tunit\\t{c,n,s,q,f,l}": count,
                                   valued count, sum, squares' sum, first and last time
  `units:pending`, `events:pending` sets of the keys above not yet drained

One bad item never stops the others: a targetingKey or name the store cannot hold is
dropped where it is met, logged and counted (`flags_events_dropped_total`). Only a store
that is away fails a flush or a drain, and then nothing is lost: the items wait for the
next. What a restart loses is what a process held in memory, and a drainer killed between
taking a chunk and writing it loses that chunk (docs/experiments.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import connection, transaction

from evaluation import batches, keys
from evaluation.batches import SEPARATOR, Batch, redis, text_problem
from evaluation.engine import EvaluationResult, Reason
from flags.ingested import ingested_bump
from flags.models import Environment, IngestedData, UnitEventDay, UnitExposure
from flagsite import metrics

log = logging.getLogger(__name__)

EXPOSURES, EVENTS = IngestedData.Kind.EXPOSURES, IngestedData.Kind.EVENTS

DAY = 86400
MAX_UNIT = 256  # characters of a targetingKey kept as a unit
MAX_EVENT = 100  # characters of an event name
MAX_ITEMS = 50_000  # past this many distinct items a batch is flushed at once
MAX_SEEN = 100_000  # first exposures this process remembers having recorded
# Past this many entries waiting in this process's memory (its flushes lag the posts), the
# events endpoint answers 503 until a flush has taken them: what a crash of the process can
# lose, and its memory, stay bounded.
MAX_HELD = 4 * MAX_ITEMS
_LIMITS = {"flag": 100, "variant": 64, "event": MAX_EVENT, "targetingKey": MAX_UNIT}

UnitKey = tuple[int, str, str, str, int]  # environment id, flag key, variant, unit, day
EventKey = tuple[int, str, str, int]  # environment id, event, unit, day


@dataclass(frozen=True, slots=True)
class Tally:
    """A unit's events of one name and day: how many, the values' sums, first and last."""

    count: int
    valued: int
    total: float
    squares: float
    first: float
    last: float

    @classmethod
    def of(cls, value: float | None, at: float) -> Tally:
        if value is None:
            return cls(1, 0, 0.0, 0.0, at, at)
        return cls(1, 1, value, value * value, at, at)

    def merged(self, other: Tally) -> Tally:
        return Tally(
            self.count + other.count,
            self.valued + other.valued,
            self.total + other.total,
            self.squares + other.squares,
            min(self.first, other.first),
            max(self.last, other.last),
        )


def _flush_batches() -> int:
    return flush()


_units: Batch[UnitKey, float] = Batch(
    "unit-exposure", flush=_flush_batches, merge=min, limit=MAX_ITEMS
)
_events: Batch[EventKey, Tally] = Batch(
    "event", flush=_flush_batches, merge=Tally.merged, limit=MAX_ITEMS
)
# (environment id, flag, variant, unit) recorded by this process; cleared when full.
_seen: set[tuple[int, str, str, str]] = set()
# Environments whose backlog in Redis this process last found at EVENTS_MAX_BACKLOG or past
# it (replaced whole by the flusher, read by requests).
_full: frozenset[int] = frozenset()


def unit_problem(unit: object) -> str | None:
    """Why a targetingKey cannot be kept as a unit (too long, a NUL, a lone surrogate...)."""
    if isinstance(unit, str) and not unit:
        return "targetingKey is empty"
    return text_problem("targetingKey", unit, MAX_UNIT)


def _drop(why: str, count: int = 1) -> None:
    metrics.record_dropped_events(why, count)


def backlog_full(environment_id: int) -> bool:
    """Whether the environment's events wait in Redis in such numbers that no more are taken
    (as this process last measured, at its latest flush), or this process holds MAX_HELD."""
    return environment_id in _full or len(_events.items) + len(_units.items) >= MAX_HELD


# --- Recording ----------------------------------------------------------------------------


def expose(environment_id: int, unit: object, results: Iterable[EvaluationResult]) -> None:
    """Record the unit's first exposure to each split result's variant; cheap on repeats."""
    seen = _seen
    fresh: list[tuple[int, str, str, str]] = []
    for result in results:
        if result.reason != Reason.SPLIT or result.variant is None:
            continue
        if unit.__class__ is not str:  # a number, or a list (which no set can hold)
            _drop("bad_targeting_key")
            return
        key = (environment_id, result.flag_key, result.variant, unit)
        if key in seen:
            continue
        if unit_problem(unit) is not None:
            _drop("bad_targeting_key")
            return
        fresh.append(key)
    if not fresh:
        return
    if environment_id in _full:  # an evaluation cannot be asked to come back later
        _drop("backlog_full", len(fresh))
        return
    if len(seen) + len(fresh) > MAX_SEEN:
        seen.clear()  # bounded: a unit seen again is merely recorded again (the earliest wins)
    seen.update(fresh)
    now = time.time()
    day = int(now) // DAY * DAY
    _units.add_many(((*key, day), now) for key in fresh)


def expose_at(environment_id: int, flag_key: str, variant: str, unit: str, at: float) -> None:
    """Record a first exposure made elsewhere (an SDK evaluating in process), at `at`."""
    key = (environment_id, flag_key, variant, unit)
    if key in _seen:
        return
    if len(_seen) >= MAX_SEEN:
        _seen.clear()
    _seen.add(key)
    _units.add((*key, int(at) // DAY * DAY), at)


def track(environment_id: int, event: str, unit: str, value: float | None, at: float) -> None:
    """Add one event of `unit` at `at` (epoch seconds) to its day's tally."""
    _events.add((environment_id, event, unit, int(at) // DAY * DAY), Tally.of(value, at))


# --- Flushing -----------------------------------------------------------------------------


def _unit_problem(key: UnitKey) -> str | None:
    _, flag_key, variant, unit, _ = key
    return (
        text_problem("flag", flag_key, _LIMITS["flag"])
        or text_problem("variant", variant, _LIMITS["variant"])
        or unit_problem(unit)
    )


def _event_problem(key: EventKey) -> str | None:
    _, event, unit, _ = key
    return text_problem("event", event, MAX_EVENT) or unit_problem(unit)


def _storable(items: dict[Any, Any], problem: Callable[[Any], str | None]) -> dict[Any, Any]:
    """The items that can be stored; the others are logged, counted and dropped."""
    kept = {}
    for key, value in items.items():
        why = problem(key)
        if why is None:
            kept[key] = value
            continue
        log.warning("dropped an event or unit exposure %r: %s", key[1:3], why)
        _drop("unstorable")
    return kept


def _storable_units(units: dict[UnitKey, float]) -> dict[UnitKey, float]:
    return _storable(units, _unit_problem)


def _storable_events(events: dict[EventKey, Tally]) -> dict[EventKey, Tally]:
    return _storable(events, _event_problem)


def flush() -> int:
    """Move this process's batches to Redis (or the database); the number of items."""
    global _full
    units, events = _units.take(), _events.take()
    if not units and not events and not _full:
        return 0
    taken = len(units) + len(events)
    if settings.REDIS_URL:
        try:
            _to_redis(units, events)
        except _Unwritten as unwritten:
            # A chunk that timed out may still be applied by Redis: it alone may count twice.
            log.warning(
                "Redis unavailable, writing %s to the database: %s", unwritten, unwritten.__cause__
            )
            units, events = unwritten.units, unwritten.events
        else:
            try:
                _measure_backlog({key[0] for key in units} | {key[0] for key in events} | _full)
            except Exception as error:  # written already: the next flush measures again
                log.warning("could not measure the events backlog in Redis: %s", error)
            return taken
    _full = frozenset()  # they go to the database: there is no backlog to wait behind
    try:
        _to_database(units, events)
    except Exception:
        _units.give_back(units)
        _events.give_back(events)
        raise
    return taken


# Merge tallies into an events hash: ARGV holds groups of field prefix, count, valued, sum,
# squares, first, last. The times are kept as the smallest and largest seen.
_ADD_TALLIES = """
for i = 1, #ARGV, 7 do
  local f = ARGV[i]
  redis.call('HINCRBY', KEYS[1], f .. 'c', ARGV[i + 1])
  redis.call('HINCRBY', KEYS[1], f .. 'n', ARGV[i + 2])
  redis.call('HINCRBYFLOAT', KEYS[1], f .. 's', ARGV[i + 3])
  redis.call('HINCRBYFLOAT', KEYS[1], f .. 'q', ARGV[i + 4])
  local first = redis.call('HGET', KEYS[1], f .. 'f')
  if not first or tonumber(ARGV[i + 5]) < tonumber(first) then
    redis.call('HSET', KEYS[1], f .. 'f', ARGV[i + 5])
  end
  local last = redis.call('HGET', KEYS[1], f .. 'l')
  if not last or tonumber(ARGV[i + 6]) > tonumber(last) then
    redis.call('HSET', KEYS[1], f .. 'l', ARGV[i + 6])
  end
end
redis.call('SADD', KEYS[2], KEYS[1])
"""

# A drain takes a key's entries in chunks of at most this many (first exposures, or tallies
# of 6 fields each): one script call then blocks Redis for milliseconds, not seconds, and
# each chunk is in the database before the next is taken.
DRAIN_CHUNK = 1_000
# A flush writes to Redis this many entries of each kind per round trip: one script of
# 50,000 tallies took longer than the 0.5 s socket timeout (and held Redis meanwhile), and
# the flush then wrote them to the database too, so they counted twice once drained.
REDIS_CHUNK = 1_000

# Take (read and remove) at most ARGV[1] first exposures; once the set is empty it leaves
# the pending set, in the same step, so a flush after it puts the key back there.
_TAKE_UNITS = """
local members = redis.call('ZPOPMIN', KEYS[1], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], KEYS[1]) end
return members
"""

# Take at most ARGV[1] tallies whole, from HSCAN cursor ARGV[2] on (the next call goes on
# from the cursor returned first: from 0 each time, HSCAN would walk the emptied part of
# the table again and again); HSCAN finds fields, each one's tally ("event\tunit\t")
# is taken with its six fields together. A field of no tally (not ours) is taken alone, for
# the parser to drop, so that nothing stays behind for ever.
_TAKE_TALLIES = """
local limit = tonumber(ARGV[1])
local taken, seen, tallies, cursor = {}, {}, 0, ARGV[2]
local function take(fields)
  local values = redis.call('HMGET', KEYS[1], unpack(fields))
  local gone = {}
  for i, field in ipairs(fields) do
    seen[field] = true
    if values[i] then
      taken[#taken + 1] = field
      taken[#taken + 1] = values[i]
      gone[#gone + 1] = field
    end
  end
  if #gone > 0 then
    redis.call('HDEL', KEYS[1], unpack(gone))
    tallies = tallies + 1
  end
end
repeat
  local page = redis.call('HSCAN', KEYS[1], cursor, 'COUNT', limit)
  cursor = page[1]
  local fields = page[2]
  for i = 1, #fields, 2 do
    local field = fields[i]
    if not seen[field] then
      local prefix, last = string.sub(field, 1, -2), string.sub(field, -1)
      if last ~= '' and string.find('cnsqfl', last, 1, true) then
        local names = {}
        for name in string.gmatch('cnsqfl', '.') do names[#names + 1] = prefix .. name end
        take(names)
      else
        take({field})
      end
    end
    if tallies >= limit then break end
  end
until cursor == '0' or tallies >= limit
if redis.call('EXISTS', KEYS[1]) == 0 then redis.call('SREM', KEYS[2], KEYS[1]) end
table.insert(taken, 1, cursor)
return taken
"""


class _Unwritten(Exception):
    """A flush to Redis failed part way: these items (the chunk that failed and the ones
    after it) are not known to be there. The chunks before it are."""

    def __init__(self, units: dict[UnitKey, float], events: dict[EventKey, Tally]) -> None:
        super().__init__(f"{len(units) + len(events)} items not written to Redis")
        self.units = units
        self.events = events


def _to_redis(units: dict[UnitKey, float], events: dict[EventKey, Tally]) -> None:
    """Write the batches in chunks of REDIS_CHUNK entries, one round trip each, so that no
    script holds Redis for long and a chunk is answered well within the socket timeout."""
    store = redis()
    unit_items = list(_storable_units(units).items())
    event_items = list(_storable_events(events).items())
    for start in range(0, max(len(unit_items), len(event_items)), REDIS_CHUNK):
        chunk = slice(start, start + REDIS_CHUNK)
        try:
            _chunk_to_redis(store, unit_items[chunk], event_items[chunk])
        except Exception as error:
            raise _Unwritten(dict(unit_items[start:]), dict(event_items[start:])) from error


def _chunk_to_redis(
    store: Any, units: list[tuple[UnitKey, float]], events: list[tuple[EventKey, Tally]]
) -> None:
    pipe = store.pipeline(transaction=False)
    members: dict[str, dict[str, float]] = {}
    for (environment_id, flag_key, variant, unit, day), at in units:
        key = cache.make_key(keys.units(environment_id, day))
        members.setdefault(key, {})[SEPARATOR.join((flag_key, variant, unit))] = at
    units_pending = cache.make_key(keys.UNITS_PENDING)
    for key, scores in members.items():
        pipe.zadd(key, scores, lt=True)
        pipe.sadd(units_pending, key)
    grouped: dict[str, list] = {}
    for (environment_id, event, unit, day), tally in events:
        key = cache.make_key(keys.events(environment_id, day))
        grouped.setdefault(key, []).extend(
            (
                f"{event}{SEPARATOR}{unit}{SEPARATOR}",
                tally.count,
                tally.valued,
                repr(tally.total),
                repr(tally.squares),
                repr(tally.first),
                repr(tally.last),
            )
        )
    events_pending = cache.make_key(keys.EVENTS_PENDING)
    for key, arguments in grouped.items():
        pipe.eval(_ADD_TALLIES, 2, key, events_pending, *arguments)
    pipe.execute()


def backlog(store: Any, environment_ids: Iterable[int]) -> dict[int, int]:
    """Entries waiting in Redis per environment: first exposures and tallies, of every day."""
    wanted = set(environment_ids)
    sizes = dict.fromkeys(wanted, 0)
    if not wanted:
        return sizes
    pipe = store.pipeline(transaction=False)
    pipe.smembers(cache.make_key(keys.UNITS_PENDING))
    pipe.smembers(cache.make_key(keys.EVENTS_PENDING))
    unit_keys, event_keys = pipe.execute()
    owners: list[tuple[int, int]] = []  # environment, fields per entry
    pipe = store.pipeline(transaction=False)
    for raws, per, size in ((unit_keys, 1, pipe.zcard), (event_keys, 6, pipe.hlen)):
        for raw in raws:
            environment_id = _owner(raw.decode(errors="replace"))
            if environment_id in wanted:
                size(raw)
                owners.append((environment_id, per))
    for (environment_id, per), count in zip(owners, pipe.execute(), strict=True):
        sizes[environment_id] += count // per
    return sizes


def _owner(key: str) -> int | None:
    try:
        return _key_parts(key)[0]
    except ValueError:
        return None


def _measure_backlog(environment_ids: set[int]) -> None:
    """Mark the environments whose backlog reached the bound, unmark those back under it."""
    global _full
    limit = settings.EVENTS_MAX_BACKLOG
    sizes = backlog(redis(), environment_ids)
    full = {environment_id for environment_id, size in sizes.items() if size >= limit}
    for environment_id in sorted(full - _full):
        log.warning(
            "events backlog of environment %s is full (%d waiting in Redis, at most %d): "
            "its events are refused with 503 until the drain catches up",
            environment_id,
            sizes[environment_id],
            limit,
            extra={"environment": environment_id, "backlog": sizes[environment_id]},
        )
    for environment_id in sorted(_full - full):
        log.warning(
            "events backlog of environment %s is below its bound again (%d waiting)",
            environment_id,
            sizes.get(environment_id, 0),
            extra={"environment": environment_id, "backlog": sizes.get(environment_id, 0)},
        )
    _full = frozenset(full)


def _to_database(units: dict[UnitKey, float], events: dict[EventKey, Tally]) -> None:
    """Upsert both batches in one transaction; raises only if the database is away."""
    units, events = _storable_units(units), _storable_events(events)
    wanted = {key[0] for key in units} | {key[0] for key in events}
    existing = set(Environment.objects.filter(pk__in=wanted).values_list("pk", flat=True))
    units = {key: at for key, at in units.items() if key[0] in existing}
    events = {key: tally for key, tally in events.items() if key[0] in existing}
    with transaction.atomic():
        _units_to_database(units)
        _events_to_database(events)
        # Last, so the versions' rows are locked only until commit (flags.ingested).
        ingested_bump(
            [(key[0], EXPOSURES, key[1], _time(at).date(), _time(at)) for key, at in units.items()]
            + [
                (key[0], EVENTS, key[1], _time(key[3]).date(), _time(tally.last))
                for key, tally in events.items()
            ]
        )


def _units_to_database(units: dict[UnitKey, float]) -> None:
    if not units:
        return
    adapt = connection.ops.adapt_datetimefield_value
    sql = batches.upsert_statement(
        UnitExposure._meta.db_table,
        ("environment_id", "flag_key", "variant", "unit", "first_seen"),
        ("environment_id", "flag_key", "variant", "unit"),
        first_seen="earliest",
    )
    # A fixed order keeps concurrent upserts of the same rows from deadlocking; a unit seen
    # on two days' keys keeps its earliest time.
    earliest: dict[tuple[int, str, str, str], float] = {}
    for (environment_id, flag_key, variant, unit, _), at in units.items():
        row = (environment_id, flag_key, variant, unit)
        earliest[row] = min(at, earliest.get(row, at))
    params = [(*row, adapt(_time(at))) for row, at in sorted(earliest.items())]
    batches.upsert(sql, params, refused=_refused)


def _events_to_database(events: dict[EventKey, Tally]) -> None:
    if not events:
        return
    adapt = connection.ops.adapt_datetimefield_value
    adapt_day = connection.ops.adapt_datefield_value
    sql = batches.upsert_statement(
        UnitEventDay._meta.db_table,
        ("environment_id", "event", "unit", "day", "count", "valued", "value_sum")
        + ("value_squares", "first_at", "last_at"),
        ("environment_id", "event", "unit", "day"),
        count="add",
        valued="add",
        value_sum="add",
        value_squares="add",
        first_at="earliest",
        last_at="latest",
    )
    params = []
    for key in sorted(events):
        environment_id, event, unit, day = key
        tally = events[key]
        params.append(
            (
                environment_id,
                event,
                unit,
                adapt_day(_time(day).date()),
                tally.count,
                tally.valued,
                tally.total,
                tally.squares,
                adapt(_time(tally.first)),
                adapt(_time(tally.last)),
            )
        )
    batches.upsert(sql, params, refused=_refused)


def _time(at: float) -> datetime:
    return datetime.fromtimestamp(at, UTC)


def _refused(row: tuple, error: Exception) -> None:
    log.warning("dropped an event or unit exposure %r: %s", row[1:3], error)
    _drop("refused")


# --- Draining (the scheduler) -------------------------------------------------------------


def drain() -> int:
    """Flush this process, then move what waits in Redis into the database, chunk by chunk.

    Each chunk is taken from Redis and written before the next is taken. A chunk the
    database refuses goes back to Redis and the drain stops (raising), so a database that
    is away loses nothing; a drainer killed between a take and its write loses that chunk
    alone. A drain moves at most what each key held when it began, so it ends even while
    new items arrive faster than the database takes them.
    """
    flushed = flush()
    if not settings.REDIS_URL:
        return flushed
    store = redis()
    drained = 0
    units_pending = cache.make_key(keys.UNITS_PENDING)
    for raw in store.smembers(units_pending):
        key = raw.decode()
        for taken in _unit_chunks(store, key, units_pending, store.zcard(key)):
            units = _parse_units(key, taken)
            _into_database(units, {})
            drained += len(units)
    events_pending = cache.make_key(keys.EVENTS_PENDING)
    for raw in store.smembers(events_pending):
        key = raw.decode()
        for taken in _tally_chunks(store, key, events_pending, store.hlen(key)):
            tallies = _parse_events(key, taken)
            _into_database({}, tallies)
            drained += len(tallies)
    return drained


def _unit_chunks(store: Any, key: str, pending: str, size: int) -> Iterator[list]:
    """Take `key`'s first exposures a chunk at a time until it is empty or `size` (what it
    held at the start) are taken; the caller writes each chunk before asking for the next."""
    while size > 0:
        taken = store.eval(_TAKE_UNITS, 2, key, pending, DRAIN_CHUNK)
        if not taken:
            return
        yield taken
        size -= len(taken) // 2


def _tally_chunks(store: Any, key: str, pending: str, size: int) -> Iterator[list]:
    """`_unit_chunks` for an events hash of `size` fields, going on from HSCAN's cursor."""
    cursor = b"0"
    while size > 0:
        cursor, *taken = store.eval(_TAKE_TALLIES, 2, key, pending, DRAIN_CHUNK, cursor)
        if taken:
            yield taken
            size -= len(taken) // 2
        elif cursor == b"0":  # a whole pass found nothing: empty
            return


def _into_database(units: dict[UnitKey, float], events: dict[EventKey, Tally]) -> None:
    try:
        _to_database(units, events)
    except Exception:
        try:
            _to_redis(units, events)  # put them back for the next drain
        except _Unwritten as unwritten:
            log.error(
                "lost %s: the database refused them and Redis did not take them back", unwritten
            )
            _drop("unqueued", len(unwritten.units) + len(unwritten.events))
        raise


def _key_parts(key: str) -> tuple[int, int]:
    environment_id, day = (int(part) for part in key.rsplit(":", 2)[-2:])
    return environment_id, day


def _parse_units(key: str, members: list) -> dict[UnitKey, float]:
    """A drained sorted set's first exposures; a malformed member is dropped, not the set."""
    environment_id, day = _key_parts(key)
    units: dict[UnitKey, float] = {}
    for member, score in zip(members[::2], members[1::2], strict=False):
        parts = member.decode(errors="replace").split(SEPARATOR)
        if len(parts) != 3:
            log.warning("dropped a malformed unit exposure %r of %s", member[:200], key)
            _drop("malformed")
            continue
        flag_key, variant, unit = parts
        units[(environment_id, flag_key, variant, unit, day)] = float(score)
    return units


_TALLY_FIELDS = "cnsqfl"


def _parse_events(key: str, fields: list[bytes]) -> dict[EventKey, Tally]:
    """A drained hash's tallies; a malformed or incomplete one is dropped, not the hash."""
    environment_id, day = _key_parts(key)
    gathered: dict[tuple[str, str], dict[str, bytes]] = {}
    malformed = 0
    for field, value in zip(fields[::2], fields[1::2], strict=False):
        parts = field.decode(errors="replace").split(SEPARATOR)
        if len(parts) != 3 or len(parts[2]) != 1 or parts[2] not in _TALLY_FIELDS:
            malformed += 1
            continue
        gathered.setdefault((parts[0], parts[1]), {})[parts[2]] = value
    events: dict[EventKey, Tally] = {}
    for (event, unit), values in gathered.items():
        try:
            c, n, s, q, f, last = (values[name] for name in _TALLY_FIELDS)
            tally = Tally(int(c), int(n), float(s), float(q), float(f), float(last))
        except (KeyError, ValueError):
            malformed += 1
            continue
        events[(environment_id, event, unit, day)] = tally
    if malformed:
        log.warning("dropped %d malformed event fields of %s", malformed, key)
        _drop("malformed", malformed)
    return events
