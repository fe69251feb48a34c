"""Exposure counts: evaluations per flag, variant and reason, posted to the server in batches.

Counting adds one to a dict of the evaluating thread's own, without a lock (only that thread
writes it; the totals only grow, and the flusher takes the difference since its last
look). A thread posts the counts every interval (and at each hour boundary, since the
server keeps hourly totals) to `POST /api/v1/sdk/exposures`, at most `BATCH` counters per
request. Counts that cannot be posted are kept and retried,
up to `MAX_PENDING` counters; nothing is ever sent per evaluation.
"""

from __future__ import annotations

import logging
import threading
import time

import httpx

from flagclient.engine import EvaluationResult

log = logging.getLogger("flagclient")

HOUR = 3600
BATCH = 1000  # the server's limit per request
MAX_PENDING = 50_000
# The server refuses counts for hours older than a week; leave a margin.
MAX_AGE_SECONDS = 6 * 24 * 3600

Counts = dict[tuple[str, str | None, str], int]


class ExposureReporter:
    def __init__(self, *, url: str, server_key: str, interval: float, timeout: float) -> None:
        self.url = f"{url}/api/v1/sdk/exposures"
        self.interval = interval
        self._headers = {"Authorization": f"Bearer {server_key}"}
        self._timeout = timeout
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._local = threading.local()
        self._tallies: list[tuple[Counts, Counts]] = []  # (a thread's totals, totals taken)
        self._hour = _hour_now()
        self._pending: list[list[dict]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def count(self, result: EvaluationResult) -> None:
        try:
            tally = self._local.tally
        except AttributeError:
            tally = self._new_tally()
        key = (result.flag_key, result.variant, result.reason)
        tally[key] = tally.get(key, 0) + 1

    def _new_tally(self) -> Counts:
        tally: Counts = {}
        self._local.tally = tally
        with self._lock:
            self._tallies.append((tally, {}))
        return tally

    def _take(self) -> Counts:
        """What every thread counted since the last take."""
        with self._lock:
            tallies = list(self._tallies)
        taken: Counts = {}
        for tally, sent in tallies:
            for key, total in tally.copy().items():  # a copy of a dict is atomic
                delta = total - sent.get(key, 0)
                if delta:
                    taken[key] = taken.get(key, 0) + delta
                    sent[key] = total
        return taken

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="flagclient-exposures")
            self._thread.daemon = True
            self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(self._timeout * 2)
        self.flush()

    def forget_after_fork(self) -> None:
        """The parent posts what it counted; the child starts from nothing."""
        self._lock, self._flush_lock = threading.Lock(), threading.Lock()
        self._local, self._tallies = threading.local(), []
        self._pending, self._thread = [], None
        self._stop = threading.Event()

    def flush(self) -> int:
        """Post every count now; returns how many counters the server accepted."""
        with self._flush_lock:
            return self._flush()

    def _flush(self) -> int:
        counts = self._take()
        hour, self._hour = self._hour, _hour_now()
        items = [
            {"flag": flag, "variant": variant or None, "reason": reason, "count": n, "hour": hour}
            for (flag, variant, reason), n in counts.items()
        ]
        # One pending entry per request, so a failure never re-sends an accepted batch.
        self._pending.extend(items[start : start + BATCH] for start in range(0, len(items), BATCH))
        accepted = 0
        while self._pending:
            batch = self._pending[0]
            if time.time() - batch[0]["hour"] > MAX_AGE_SECONDS:
                self._pending.pop(0)
                continue
            if not self._post(batch):
                break
            accepted += len(batch)
            self._pending.pop(0)
        while sum(len(batch) for batch in self._pending) > MAX_PENDING:
            self._pending.pop(0)
        return accepted

    def _run(self) -> None:
        while not self._stop.is_set():
            until_hour = self._hour + HOUR - time.time()
            self._stop.wait(max(0.0, min(self.interval, until_hour)))
            if not self._stop.is_set():
                self.flush()

    def _post(self, batch: list[dict]) -> bool:
        try:
            response = httpx.post(
                self.url, json={"exposures": batch}, headers=self._headers, timeout=self._timeout
            )
            if response.status_code == 400:
                log.warning("flagclient: exposures refused: %s", response.text[:200])
                return True  # a bad batch is dropped, not retried for ever
            response.raise_for_status()
        except httpx.HTTPError as exc:
            log.warning("flagclient: could not post exposure counts: %s", exc)
            return False
        return True


def _hour_now() -> int:
    return int(time.time()) // HOUR * HOUR
