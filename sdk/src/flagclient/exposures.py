"""Exposure counts: evaluations per flag, variant and reason, posted to the server in batches.

Counting adds one to a dict of the evaluating thread's own, without a lock (only that thread
writes it; the totals only grow, and the reporter takes the difference since its last
look). When a thread ends, what it counted moves to one shared tally and its dict is
dropped, so short-lived threads leave nothing behind. Only flags of the document are
counted: a key that names no flag (a typo, a caller's input) would be refused by the server
and could grow the counters without end.

A thread posts the counts every interval (and at each hour boundary, since the server keeps
hourly totals) to `POST /api/v1/sdk/exposures`, at most `BATCH` counters per request.
Counts not yet accepted wait in one counter per (flag, variant, reason, hour): a failed
post and the counts that follow merge into the same counters, which are capped at
`MAX_PENDING` and `MAX_AGE_SECONDS`. Nothing is ever sent per evaluation, and nothing here
blocks an evaluation: posts have a deadline and run on the reporter's thread, and
`close()` gives the last post only what is left of its own bound.

The same thread posts to `POST /api/v1/sdk/events` what `track` queued (events) and
what `expose` noted (a unit's first exposure to a rollout split's variant, deduplicated in
a bounded set), at most `BATCH` of each per request. Both wait, bounded by
`MAX_PENDING_EVENTS` and `MAX_PENDING_UNITS` (the oldest event goes first), until a post
is accepted; a failed post and what follows go out together in the next.
"""

from __future__ import annotations

import collections
import itertools
import logging
import threading
import time
import weakref
from collections import Counter
from typing import Any

from flagclient.engine import ErrorCode, EvaluationResult
from flagclient.stream import BUSY, REFUSED
from flagclient.transport import Session

log = logging.getLogger("flagclient")

HOUR = 3600
BATCH = 1000  # the server's limit per request
MAX_COUNT = 1_000_000_000  # the server's limit per counter
MAX_PENDING = 50_000
# The server refuses counts for hours older than a week; leave a margin.
MAX_AGE_SECONDS = 6 * 24 * 3600
MAX_RETRY_AFTER = 3600.0  # counts wait for days; a longer Retry-After is a mistake
MAX_PENDING_EVENTS = 10_000
MAX_PENDING_UNITS = 10_000
MAX_SEEN_UNITS = 100_000  # first exposures this client remembers having noted

_NOT_FOUND = ErrorCode.FLAG_NOT_FOUND

Counts = dict[tuple[str, str | None, str], int]
Pending = dict[tuple[str, str | None, str, int], int]


class _Tally:
    """One thread's counts, and how much of each the reporter has taken."""

    __slots__ = ("counts", "taken", "__weakref__")

    def __init__(self) -> None:
        self.counts: Counts = {}
        self.taken: Counts = {}

    def untaken(self) -> Counts:
        counts, taken = self.counts.copy(), self.taken  # a copy of a dict is atomic
        delta = {}
        for key, total in counts.items():
            if total != taken.get(key, 0):
                delta[key] = total - taken.get(key, 0)
                taken[key] = total
        return delta


class _ThreadEnd:
    """Lives in a thread's local storage; its finalizer runs when the thread ends."""

    __slots__ = ("__weakref__",)


class ExposureReporter:
    def __init__(
        self,
        *,
        url: str,
        server_key: str,
        interval: float,
        timeout: float,
        stats: Counter[str] | None = None,
    ) -> None:
        self.url = f"{url}/api/v1/sdk/exposures"
        self.events_url = f"{url}/api/v1/sdk/events"
        self.interval = interval
        self.stats: Counter[str] = Counter() if stats is None else stats
        self._server_key = server_key
        self._timeout = timeout
        self._reset()

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._local = threading.local()
        self._tallies: set[_Tally] = set()
        # Tallies of threads that ended, appended by finalizers (no lock: a finalizer may
        # run anywhere, even in a forked child before its locks are renewed).
        self._ended: collections.deque[_Tally] = collections.deque()
        self._retired: Counts = {}
        self._pending: Pending = {}
        self._hour = _hour_now()
        self._not_before = 0.0
        self._refused = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._session: Session | None = None
        self._tracked: collections.deque[dict[str, Any]] = collections.deque()
        self._units_lock = threading.Lock()
        self._units: dict[tuple[str, str, str], float] = {}
        self._seen_units: set[tuple[str, str, str]] = set()

    # --- counting (the evaluation path) ---------------------------------------------------

    def count(self, result: EvaluationResult) -> None:
        if result.error_code == _NOT_FOUND:
            return
        try:
            counts = self._local.counts
        except AttributeError:
            counts = self._new_tally()
        key = (result.flag_key, result.variant, result.reason)
        counts[key] = counts.get(key, 0) + 1

    def _new_tally(self) -> Counts:
        tally, end = _Tally(), _ThreadEnd()
        weakref.finalize(end, self._ended.append, tally).atexit = False
        self._local.counts, self._local.end = tally.counts, end
        with self._lock:
            self._retire_ended()  # threads come and go: keep their leftovers small
            self._tallies.add(tally)
        return tally.counts

    def _retire_ended(self) -> None:
        """Move what ended threads counted into one tally (called with the lock held)."""
        while self._ended:
            tally = self._ended.popleft()
            self._tallies.discard(tally)
            _merge(self._retired, tally.untaken())

    def _take(self) -> Counts:
        """What every thread counted since the last take."""
        with self._lock:
            self._retire_ended()
            taken, self._retired = self._retired, {}
            for tally in self._tallies:
                _merge(taken, tally.untaken())
        return taken

    # --- events and first exposures (the caller's thread; never blocks) ------------------

    def track(self, item: dict[str, Any]) -> None:
        """Queue one checked event (`{"event", "targetingKey", "value"?, "timestamp"}`)."""
        tracked = self._tracked
        tracked.append(item)
        while len(tracked) > MAX_PENDING_EVENTS:
            try:
                tracked.popleft()
            except IndexError:  # the reporter took them meanwhile
                break
            self.stats["tracked_dropped"] += 1

    def expose(self, flag_key: str, variant: str, unit: str) -> None:
        """Note a unit's first exposure to a variant (once per client, as far as it knows)."""
        key = (flag_key, variant, unit)
        seen = self._seen_units
        if key in seen:
            return
        with self._units_lock:
            if len(seen) >= MAX_SEEN_UNITS:
                seen.clear()  # bounded: a unit noted again is merely posted again
            seen.add(key)
            if len(self._units) >= MAX_PENDING_UNITS:
                self.stats["unit_exposures_dropped"] += 1
                return
            self._units.setdefault(key, time.time())

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None and not self._refused:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="flagclient-exposures", daemon=True
            )
            self._thread.start()

    def close(self, deadline: float) -> None:
        """Stop the thread and post what is left, by `deadline` (monotonic) at the latest."""
        self._stop.set()
        thread = self._thread
        running = thread is not None and thread is not threading.current_thread()
        if running and thread is not None:
            # A post in flight gets half the time left to be answered: aborted, its events
            # would be posted again below though the server may have taken them.
            thread.join(max(0.0, deadline - time.monotonic()) / 2)
        session, self._session = self._session, None
        if session is not None:
            session.abort()  # a post still in flight fails at once
        if running and thread is not None and thread.is_alive():
            thread.join(max(0.0, deadline - time.monotonic()))
        if session is not None:
            session.close()
        self.flush(deadline)
        session, self._session = self._session, None
        if session is not None:
            session.close()

    def halt(self) -> None:
        """Stop posting for good (the server refused the key); counts are dropped."""
        self._refused = True
        self._stop.set()
        if self._session is not None:
            self._session.abort()

    def forget_after_fork(self) -> None:
        """The parent posts what it counted; the child starts from nothing."""
        self._reset()

    # --- posting --------------------------------------------------------------------------

    def flush(self, deadline: float | None = None) -> int:
        """Post every count now (by `deadline`, monotonic); how many counters were accepted."""
        wait = -1 if deadline is None else max(0.0, deadline - time.monotonic())
        if not self._flush_lock.acquire(timeout=wait):
            return 0
        try:
            return self._flush(deadline)
        finally:
            self._flush_lock.release()

    def _run(self) -> None:
        while not self._stop.is_set():
            until_hour = self._hour + HOUR - time.time()
            self._stop.wait(max(0.0, min(self.interval, until_hour)))
            if self._stop.is_set():
                return
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - reporting must never stop for good
                log.exception("flagclient: posting exposure counts failed")

    def _flush(self, deadline: float | None) -> int:
        counts = self._take()
        hour, self._hour = self._hour, _hour_now()
        for (flag, variant, reason), n in counts.items():
            key = (flag, variant, reason, hour)
            self._pending[key] = self._pending.get(key, 0) + n
        self._bound()
        if self._refused or time.monotonic() < self._not_before:
            return 0
        accepted = 0
        while self._pending:
            keys = list(itertools.islice(self._pending, BATCH))
            sent = {key: min(self._pending[key], MAX_COUNT) for key in keys}
            body = {"exposures": [_item(key, n) for key, n in sent.items()]}
            posted = self._post(self.url, body, deadline)
            if posted is None:
                return accepted  # the server is away or busy: the events wait as well
            if posted:
                self.stats["exposures_posted"] += sum(sent.values())
            for key, n in sent.items():
                left = self._pending.pop(key) - n
                if left > 0:
                    self._pending[key] = left
            accepted += len(sent)
        return accepted + self._flush_events(deadline)

    def _flush_events(self, deadline: float | None) -> int:
        """Post the queued events and first exposures; how many were accepted."""
        accepted = 0
        while (self._tracked or self._units) and not self._refused:
            events = self._take_events()
            with self._units_lock:
                keys = list(itertools.islice(self._units, BATCH))
                units = {key: self._units.pop(key) for key in keys}
            body: dict[str, Any] = {}
            if events:
                body["events"] = events
            if units:
                body["firstExposures"] = [
                    {"flag": flag, "variant": variant, "targetingKey": unit, "timestamp": at}
                    for (flag, variant, unit), at in units.items()
                ]
            if not body:
                break
            posted = self._post(self.events_url, body, deadline)
            if posted is None:  # kept for the next flush, ahead of what came meanwhile
                self._tracked.extendleft(reversed(events))
                with self._units_lock:
                    self._units = {**units, **self._units}
                break
            if posted:
                self.stats["tracked_posted"] += len(events)
                self.stats["unit_exposures_posted"] += len(units)
            accepted += len(events) + len(units)
        return accepted

    def _take_events(self) -> list[dict[str, Any]]:
        """Up to BATCH queued events, those too old for the server dropped."""
        oldest = time.time() - MAX_AGE_SECONDS
        events: list[dict[str, Any]] = []
        tracked = self._tracked
        while tracked and len(events) < BATCH:
            try:
                item = tracked.popleft()
            except IndexError:
                break
            if item["timestamp"] < oldest:
                self.stats["tracked_dropped"] += 1
                continue
            events.append(item)
        return events

    def _bound(self) -> None:
        """Drop counters too old for the server, then the oldest past MAX_PENDING."""
        oldest = time.time() - MAX_AGE_SECONDS
        for key in [key for key in self._pending if key[3] < oldest or not _postable(key)]:
            self.stats["exposures_dropped"] += self._pending.pop(key)
        while len(self._pending) > MAX_PENDING:
            self.stats["exposures_dropped"] += self._pending.pop(next(iter(self._pending)))

    def _post(self, url: str, body: dict[str, Any], deadline: float | None) -> bool | None:
        """True once accepted, False if refused as invalid (dropped, not retried for ever),
        None if it is to be sent again."""
        budget = self._timeout
        if deadline is not None:
            budget = min(budget, deadline - time.monotonic())
        if budget <= 0:
            return None
        if self._session is None:
            self._session = Session(self._server_key, url)
        try:
            answer = self._session.request("POST", url, json=body, deadline=budget, max_bytes=65536)
        except Exception as exc:  # noqa: BLE001 - whatever happens, keep the counts
            log.warning("flagclient: could not post to %s: %s", url, exc)
            return None
        if 200 <= answer.status < 300:
            return True
        if answer.status == 400:
            log.warning("flagclient: %s refused a batch: %s", url, answer.body[:200])
            return False
        if answer.status in REFUSED:
            log.error("flagclient: the server refused the key for %s (%s)", url, answer.status)
            self._refused = True
            self._pending.clear()
            self._tracked.clear()
            with self._units_lock:
                self._units.clear()
            return None
        if answer.status in BUSY:
            pause = answer.retry_after()
            if pause is not None:
                self._not_before = time.monotonic() + min(pause, MAX_RETRY_AFTER)
        log.warning("flagclient: could not post to %s: %s", url, answer.status)
        return None


def _merge(into: Counts, counts: Counts) -> None:
    for key, n in counts.items():
        into[key] = into.get(key, 0) + n


def _postable(key: tuple[str, str | None, str, int]) -> bool:
    """A key the server accepts: a flag key it could have sent us, encodable as JSON."""
    flag, variant, reason, _ = key
    try:
        (flag + (variant or "") + reason).encode("utf-8")
    except (TypeError, UnicodeEncodeError):
        return False
    return 0 < len(flag) <= 100


def _item(key: tuple[str, str | None, str, int], count: int) -> dict[str, Any]:
    flag, variant, reason, hour = key
    return {
        "flag": flag,
        "variant": variant or None,
        "reason": reason,
        "count": count,
        "hour": hour,
    }


def _hour_now() -> int:
    return int(time.time()) // HOUR * HOUR
