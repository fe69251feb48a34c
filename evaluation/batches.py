"""Batches in process memory that a background thread of each process flushes to the stores.

Exposure counts (evaluation.exposures) and events and first unit exposures
(evaluation.events) are gathered the same way: the request path only merges into a dict
under a lock, a thread flushes the dict every `EXPOSURE_FLUSH_SECONDS` (at once when it
grows past its limit), and a flush that fails gives the items back to wait for the next.
What else they share: the check that a name can be stored (as a Redis hash field and in
its column), the atomic take of a Redis key for a drain, and upserts that write a batch
in one statement and, should the database refuse the batch for its data, row by row.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Generic, TypeVar

from django.conf import settings
from django.db import DataError, IntegrityError, connection, transaction

from flagsite.failures import store_of

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")

SEPARATOR = "\t"


# Every batch of this process, for the flush before it exits (flush_before_exit).
_every: list[Batch] = []


class Batch(Generic[K, V]):
    """Items merged by key in process memory until `flush` moves them out."""

    def __init__(
        self,
        name: str,
        *,
        flush: Callable[[], object],
        merge: Callable[[V, V], V],
        limit: int,
    ) -> None:
        self.name = name
        self.items: dict[K, V] = {}
        self.lock = threading.Lock()
        self.limit = limit
        self._flush = flush
        self._merge = merge
        self._flusher: threading.Thread | None = None
        self._wake = threading.Event()
        # A forked worker starts empty (its parent's items are its parent's to flush).
        os.register_at_fork(after_in_child=self._forget_after_fork)
        _every.append(self)

    def _forget_after_fork(self) -> None:
        self.items, self.lock, self._flusher, self._wake = (
            {},
            threading.Lock(),
            None,
            threading.Event(),
        )

    def add(self, key: K, value: V) -> None:
        self.add_many(((key, value),))

    def add_many(self, pairs: Iterable[tuple[K, V]]) -> None:
        merge = self._merge
        with self.lock:
            items = self.items
            for key, value in pairs:
                old = items.get(key)
                items[key] = value if old is None else merge(old, value)
            size = len(items)
        self.started(size)

    def started(self, size: int) -> None:
        """Start the flusher if it is not running; wake it when the batch is full."""
        if self._flusher is None:
            self._start()
        if size >= self.limit:
            self._wake.set()

    def take(self) -> dict[K, V]:
        with self.lock:
            taken, self.items = self.items, {}
        return taken

    def give_back(self, items: dict[K, V]) -> None:
        merge = self._merge
        with self.lock:
            for key, value in items.items():
                old = self.items.get(key)
                self.items[key] = value if old is None else merge(old, value)

    def _start(self) -> None:
        seconds = getattr(settings, "EXPOSURE_FLUSH_SECONDS", 10)
        with self.lock:
            if self._flusher is not None or seconds <= 0:
                return
            self._flusher = threading.Thread(
                target=self._flush_forever,
                args=(seconds,),
                name=f"{self.name}-flusher",
                daemon=True,
            )
            self._flusher.start()

    def _flush_forever(self, seconds: float) -> None:
        while True:
            self._wake.wait(seconds)
            self._wake.clear()
            try:
                self._flush()
            except Exception as error:  # the next pass retries; the items stay in memory
                if store_of(error) is None:
                    log.exception("could not flush the %s batch", self.name)
                else:  # an outage: its own line says so once (flagsite.failures), no traceback
                    log.debug("the %s batch waits for the store: %s", self.name, error)
            finally:
                connection.close()


def flush_before_exit(timeout: float) -> int:
    """Flush every batch holding items, once, within `timeout` seconds: what a process that
    stops gracefully took since its last flush is kept, not lost. The number of items
    flushed; what could not be flushed in time (a store away or slow) is logged and lost
    with the process, as on a crash."""
    flushes: list[Callable[[], object]] = []
    for batch in _every:
        if batch.items and batch._flush not in flushes:
            flushes.append(batch._flush)
    if not flushes:
        return 0
    flushed: list[int] = []

    def run() -> None:
        try:
            for flush in flushes:
                try:
                    done = flush()
                    flushed.append(done if isinstance(done, int) else 0)
                except Exception as error:  # the others are still worth flushing
                    log.warning("could not flush a batch before exiting: %s", error)
        finally:
            connection.close()

    flusher = threading.Thread(target=run, name="exit-flusher", daemon=True)
    flusher.start()
    flusher.join(timeout)
    left = sum(len(batch.items) for batch in _every)
    if flusher.is_alive() or left:
        log.warning(
            "exiting with %s batched items not flushed (%s s were not enough, or a store is "
            "away): they are lost",
            left,
            timeout,
        )
    else:
        log.info("flushed %s batched items before exiting", sum(flushed))
    return sum(flushed)


def text_problem(name: str, text: object, limit: int) -> str | None:
    """Why `text` cannot be stored as a name (a Redis field part and a column), or None."""
    if not isinstance(text, str) or len(text) > limit:
        return f"{name} is not a string of at most {limit} characters"
    if SEPARATOR in text or any(character in text for character in "\x00\r\n"):
        return f"{name} holds a control character"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return f"{name} is not valid Unicode"
    return None


# Read a key and delete it in one step, so each item is drained by one drainer only.
TAKE_HASH = """
local fields = redis.call('HGETALL', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], KEYS[1])
return fields
"""


def redis():
    from django_redis import get_redis_connection

    return get_redis_connection("default")


def upsert_statement(
    table: str, columns: Sequence[str], unique: Sequence[str], **merge: str
) -> str:
    """`INSERT ... ON CONFLICT (unique) DO UPDATE`, each column of `merge` by its rule:
    "add" (the stored value plus the new), "earliest" or "latest" (of the two)."""
    table = connection.ops.quote_name(table)
    rules = {
        "add": "{t}.{c} + EXCLUDED.{c}",
        "earliest": "CASE WHEN EXCLUDED.{c} < {t}.{c} THEN EXCLUDED.{c} ELSE {t}.{c} END",
        "latest": "CASE WHEN EXCLUDED.{c} > {t}.{c} THEN EXCLUDED.{c} ELSE {t}.{c} END",
    }
    updates = ", ".join(f"{c} = {rules[rule].format(t=table, c=c)}" for c, rule in merge.items())
    return (
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
        f"ON CONFLICT ({', '.join(unique)}) DO UPDATE SET {updates}"
    )


def upsert(sql: str, params: list[tuple], *, refused: Callable[[tuple, Exception], None]) -> None:
    """Run `sql` for every row in one transaction; raises only if the database is away.

    Should the batch be refused for its data, each row is written on its own and each row
    the database refuses is handed to `refused` (to log and count), not the batch.
    """
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.executemany(sql, params)
        return
    except (DataError, IntegrityError):
        pass
    with transaction.atomic():
        for row in params:
            try:
                with transaction.atomic(), connection.cursor() as cursor:
                    cursor.execute(sql, row)
            except (DataError, IntegrityError) as error:
                refused(row, error)
