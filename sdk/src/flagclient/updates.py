"""The client's update thread: fetch the document when the stream announces one, else poll.

One thread fetches, so there is never more than one request for the document in flight
and snapshots are installed in the order they were fetched. The stream thread
(`flagclient.stream`) only says "version N exists"; the document always comes from
`GET /api/v1/sdk/flags` with `If-None-Match`, so a missed or repeated event costs one
cheap 304 at most, and a flood of events costs at most one fetch per `EVENT_FETCH_GAP`.

Every request has a total deadline (`timeout`) and a size cap (`max_document_bytes`); a
failure of any kind keeps the last good snapshot, makes `stale` true, and is retried
after a back-off that doubles up to the poll interval, never sooner than the server's
`Retry-After`. A refused key (401, 403) stops every request for good.

Versions: a higher version is installed at once. A lower one is, for a moment, normal (an
instance behind a load balancer that has not heard of a change yet), so it is not served
at first; if the server still answers lower after `LOWER_VERSION_GRACE` seconds, the
server is the truth (a database restored from a backup, a new server) and its document is
installed, going back in time.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flagclient.engine import Snapshot, compile_document
from flagclient.stream import BUSY, REFUSED, StreamFollower
from flagclient.transport import Answer, Session, TooLarge

if TYPE_CHECKING:
    from flagclient.client import FlagClient

log = logging.getLogger("flagclient")

# After an event, the instance answering the refetch may not have seen the change yet
# (instances learn of it by pub/sub): ask again a few times before leaving it to the poll.
CATCH_UP_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8)
# A lower version must persist this long (the whole catch-up window) to be believed.
LOWER_VERSION_GRACE = sum(CATCH_UP_DELAYS)
# Between two fetches caused by stream events: a flood of events is one fetch per gap.
EVENT_FETCH_GAP = 0.25
FIRST_RETRY = 0.5  # after a failed fetch; doubles up to the poll interval


@dataclass(frozen=True)
class UpdaterOptions:
    url: str
    server_key: str
    streaming: bool
    stream_url: str
    poll_interval: float
    stream_poll_interval: float
    reconnect_delay: tuple[float, float]
    stream_healthy_after: float
    timeout: float
    stream_read_timeout: float
    max_document_bytes: int


class Refused(Exception):
    """The server refused the key: 401 or 403."""


class Updater:
    def __init__(self, client: FlagClient, options: UpdaterOptions) -> None:
        self.client = client
        self.options = options
        self.stats: Counter[str] = client._stats
        self._changed = threading.Condition()
        self._stopped = False
        self._session = Session(options.server_key, options.url)
        self._etag: str | None = None
        self._next_poll = 0.0  # the first fetch is at once
        self._not_before = 0.0  # after a failure: its back-off, or the server's Retry-After
        self._failures = 0
        self._streaming = False
        # A fetch the stream asked for: since when, and the version it announced.
        self._wanted_since: float | None = None
        self._wanted_version: int | None = None
        self._last_event_fetch = float("-inf")
        self._catch_up = 0
        # Past the quick catch-up, still behind an announced version: (version, next pause).
        self._behind: tuple[int, float] | None = None
        self._recheck_at: float | None = None  # catch-up, or confirming a lower version
        self._lower_since: float | None = None
        self._refusal_lock = threading.Lock()
        self._stream = StreamFollower(self, options) if options.streaming else None
        self._thread = threading.Thread(target=self._run, name="flagclient", daemon=True)

    def start(self) -> None:
        self._thread.start()
        if self._stream is not None:
            self._stream.start()

    def stop(self, deadline: float) -> None:
        """Stop both threads, waiting for them until `deadline` (monotonic) at most."""
        with self._changed:
            self._stopped = True
            self._changed.notify_all()
        self._session.abort()
        if self._stream is not None:
            self._stream.stop()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._stream is not None:
            self._stream.join(deadline - time.monotonic())
        self._session.close()

    # --- told by the stream thread --------------------------------------------------------

    def stream_connected(self) -> None:
        """Changes made while we were not listening: fetch once; then poll rarely."""
        with self._changed:
            self._streaming = True  # the fetch below schedules the next poll accordingly
            self._want(None)
            self._changed.notify()

    def stream_lost(self) -> None:
        """Do not wait for the poll to catch up: fetch once now, then poll."""
        with self._changed:
            self._streaming = False
            self._next_poll = min(self._next_poll, time.monotonic())
            self._changed.notify()

    def announce(self, version: int | None) -> None:
        """An event: version `version` exists (None: something changed)."""
        if version is not None and version == self.client.version and self._lower_since is None:
            return  # what we serve already
        with self._changed:
            self._want(version)
            self._changed.notify()

    def refused(self, status: int, where: str) -> None:
        """The key was refused: say so once, and stop every request."""
        with self._refusal_lock:
            if self._stopped:
                return
            with self._changed:
                self._stopped = True
                self._changed.notify_all()
        self._session.abort()
        if self._stream is not None:
            self._stream.stop()
        message = (
            f"the flag server refused the server key ({status} on the {where}); no more "
            "requests will be made: check the key, then create the client again"
        )
        log.error("flagclient: %s", message)
        self.client._refused(message)

    def _want(self, version: int | None) -> None:
        if self._wanted_since is None:
            self._wanted_since = time.monotonic()
            self._wanted_version = version
            self._catch_up = 0
            if version is not None:
                self._behind = None  # the quick catch-up starts again for it
        elif version is not None:
            current = self._wanted_version
            self._wanted_version = version if current is None else max(current, version)

    # --- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._changed:
                while True:
                    if self._stopped:
                        return
                    wait = self._due() - time.monotonic()
                    if wait <= 0:
                        break
                    self._changed.wait(wait)
            try:
                self._fetch()
            except Exception:  # noqa: BLE001 - a bug here must not stop the updates for good
                log.exception("flagclient: the update thread failed; retrying")
                self._failed("an internal error")

    def _due(self) -> float:
        """When the next fetch is due (monotonic)."""
        due = self._next_poll
        if self._wanted_since is not None:
            due = min(due, max(self._wanted_since, self._last_event_fetch + EVENT_FETCH_GAP))
        if self._recheck_at is not None:
            due = min(due, self._recheck_at)
        return max(due, self._not_before)

    # --- the document ---------------------------------------------------------------------

    def _fetch(self) -> None:
        now = time.monotonic()
        with self._changed:
            if self._wanted_since is not None and self._wanted_since <= now:
                self._last_event_fetch = now
            self._recheck_at = None
            self._next_poll = now + self._interval()
        options = self.options
        headers = {"Accept": "application/json"}
        if self._etag:
            headers["If-None-Match"] = self._etag
        self.stats["document_requests"] += 1
        try:
            answer = self._session.request(
                "GET",
                f"{options.url}/api/v1/sdk/flags",
                headers=headers,
                deadline=options.timeout,
                max_bytes=options.max_document_bytes,
            )
        except TooLarge as exc:
            self.stats["documents_too_large"] += 1
            self._failed(f"the document is too large ({exc}; max_document_bytes)")
        except Exception as exc:  # noqa: BLE001 - any failure: keep the last snapshot
            if not self._stopped:
                self._failed(f"{type(exc).__name__}: {exc}")
        else:
            self._answered(answer)

    def _answered(self, answer: Answer) -> None:
        if answer.status == 304:  # the version served is the server's: nothing to doubt
            self._lower_since = None
            self._succeeded(self.client.version)
        elif answer.status in REFUSED:
            self.refused(answer.status, "document")
        elif answer.status != 200:
            pause = answer.retry_after() if answer.status in BUSY else None
            self._failed(f"the server answered {answer.status}", at_least=pause)
        else:
            self._install(answer)

    def _install(self, answer: Answer) -> None:
        try:
            # What the new version left unchanged is reused from the snapshot served.
            document = json.loads(answer.body)
            snapshot = compile_document(document, previous=self.client.snapshot)
        except Exception as exc:  # noqa: BLE001 - not JSON, not a document, too deep...
            self.stats["bad_documents"] += 1
            self._failed(f"not a flag document ({type(exc).__name__}: {exc})"[:300])
            return
        if self._accept(snapshot):
            self.client._install(snapshot, answer.body)
            self._etag = answer.headers.get("ETag")
        self._succeeded(snapshot.version)

    def _accept(self, snapshot: Snapshot) -> bool:
        """Whether to serve `snapshot`: not older than what is served, unless that persists."""
        current = self.client.version
        if current is None or snapshot.version >= current:
            self._lower_since = None
            return True
        now = time.monotonic()
        if self._lower_since is None:
            self._lower_since = now
            self._recheck_at = now + LOWER_VERSION_GRACE
            return False
        if now - self._lower_since < LOWER_VERSION_GRACE:
            self._recheck_at = self._lower_since + LOWER_VERSION_GRACE
            return False
        log.warning(
            "flagclient: the server went back from version %s to %s (a restored database?); "
            "serving its document",
            current,
            snapshot.version,
        )
        self.stats["versions_gone_back"] += 1
        self._lower_since = None
        return True

    def _succeeded(self, served: int | None) -> None:
        self._failures = 0
        with self._changed:
            wanted = self._wanted_version
            if self._wanted_since is not None:
                if wanted is None or served is None or served >= wanted:
                    self._wanted_since = None
                elif self._catch_up < len(CATCH_UP_DELAYS):
                    pause = CATCH_UP_DELAYS[self._catch_up]
                    self._catch_up += 1
                    self._recheck_in(pause)
                else:
                    # Still behind what the stream announced (the instance is busy compiling
                    # it, or missed it): ask again less and less often, up to the poll
                    # without a stream, rather than serve the old version until the
                    # stream's safety poll.
                    self._wanted_since = None
                    first = min(2 * CATCH_UP_DELAYS[-1], self.options.poll_interval)
                    self._behind = (wanted, first)
                    self._slow_catch_up(served)
            elif self._behind is not None:
                self._slow_catch_up(served)
        self.client._attempted(ok=True)

    def _recheck_in(self, pause: float) -> None:
        recheck = time.monotonic() + pause
        self._recheck_at = min(self._recheck_at or recheck, recheck)

    def _slow_catch_up(self, served: int | None) -> None:
        """Under `_changed`: the next fetch while behind an announced version, if still."""
        if self._behind is None:
            return
        version, pause = self._behind
        if served is not None and served >= version:
            self._behind = None
            return
        self._recheck_in(pause)
        self._behind = (version, min(2 * pause, self.options.poll_interval))

    def _failed(self, why: str, at_least: float | None = None) -> None:
        """Nothing is fetched again before a back-off (or the server's Retry-After) passes."""
        self.stats["document_failures"] += 1
        log.warning("flagclient: could not fetch the flag document: %s", why)
        longest = self.options.poll_interval
        pause = min(FIRST_RETRY * 2**self._failures, longest) * random.uniform(0.5, 1.0)
        pause = max(pause, min(at_least or 0.0, longest))
        self._failures = min(self._failures + 1, 30)
        retry_at = time.monotonic() + pause
        with self._changed:
            self._wanted_since = None  # the retry fetches whatever is newest
            self._not_before = retry_at
            self._next_poll = min(self._next_poll, retry_at)
        self.client._attempted(ok=False)

    def _interval(self) -> float:
        options = self.options
        return options.stream_poll_interval if self._streaming else options.poll_interval
