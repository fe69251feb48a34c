"""Compiled snapshots per environment, kept current through the shared cache.

Its keys, `env:{id}:version` and `env:{id}:doc:{version}`, are built by evaluation.keys,
with every other key of the shared cache.

A change bumps the version in the database in the change's transaction; after the commit
the service calls `broadcast.environments_changed`, which raises the cached version here
and publishes the change. Each process keeps compiled snapshots in memory and asks the
cache for the version at most every `VERSION_CHECK_SECONDS`; while it is unchanged no
query reaches the database. When the shared cache fails, the process keeps serving its
last snapshot and checks the version in the database instead, at the same bounded
interval. When the database fails too (or the version cannot be read at all), it keeps
serving its last snapshot: a snapshot is only ever replaced by a newer one. Only a process
that holds no snapshot of the environment, and cannot build one from the cache, answers
StoreUnavailable. Store failures are logged once per state change by flagsite.failures,
not per request.

A new version is compiled with the old snapshot (reusing what it compiled of the flags the
version left unchanged) from a document built with the old document's entries (see
evaluation.documents). In a server process the `Refresher` thread does it, told by
evaluation.broadcast, or by a request whose snapshot is due for a version check: there the
refresher asks the stores too, so no request waits for one while its process holds a
snapshot of the environment, and every request is answered from the old snapshot until the
new one is in place. Elsewhere (management commands, tests) the request that is due asks
the stores itself, and the one that finds a new version compiles it while the others are
answered from the old snapshot. The process that made a change compiles it as the change
commits (`environments_changed`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections

from evaluation import keys
from evaluation.documents import build_document, clear_fragments, holds_fragments
from evaluation.engine import Snapshot, compile_document
from flags.models import Environment
from flagsite import metrics
from flagsite.failures import CACHE, DATABASE, StoreUnavailable, reaching

log = logging.getLogger(__name__)

VERSION_CHECK_SECONDS = 0.25
# Without Redis each process has its own cache: the version is re-read from the database
# this often so that every process sees a change within a second.
LOCAL_VERSION_TTL = 0.5
DOCUMENT_TTL = 24 * 3600

_SET_IF_GREATER = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then redis.call('SET', KEYS[1], ARGV[1]) return 1 end
return 0
"""


def uses_redis() -> bool:
    return bool(settings.REDIS_URL)


@dataclass
class _Entry:
    snapshot: Snapshot
    checked_at: float  # when the version was last asked for (or given up on, in an outage)
    confirmed_at: float  # when a store last said this snapshot is the current version
    label: str = ""  # project/environment, as the snapshot age metric names it


_entries: dict[int, _Entry] = {}
_lock = threading.Lock()
# (environment, version) documents that failed to compile, so each is logged once.
_broken: set[tuple[int, int]] = set()


def _database_version(environment_id: int) -> int | None:
    with reaching(DATABASE):
        rows = Environment.objects.filter(pk=environment_id).values_list("version", flat=True)
        return rows.first()


def _raise_cached_version(environment_id: int, version: int) -> None:
    key = cache.make_key(keys.version(environment_id))
    with contextlib.suppress(StoreUnavailable), reaching(CACHE):
        if uses_redis():
            from django_redis import get_redis_connection

            get_redis_connection("default").eval(_SET_IF_GREATER, 1, key, version)
            return
        current = cache.get(keys.version(environment_id))
        if current is None or version > current:
            cache.set(keys.version(environment_id), version, LOCAL_VERSION_TTL)


def _cached_version(environment_id: int) -> int | None:
    try:
        with reaching(CACHE):  # a dead Redis must not stop evaluation
            version = cache.get(keys.version(environment_id))
    except StoreUnavailable:
        return None
    return int(version) if version is not None else None


def current_version(environment_id: int) -> int | None:
    """The environment's version from the shared cache, else from the database.

    None if the environment does not exist; StoreUnavailable if neither store can tell.
    """
    version = _cached_version(environment_id)
    if version is not None:
        return version
    version = _database_version(environment_id)
    if version is not None:
        _raise_cached_version(environment_id, version)
    return version


def served_version(environment_id: int) -> int:
    """The version this process answers with: its snapshot's (which may be compiling a newer
    one meanwhile), or the current version if it holds none (its first request compiles
    that one). What a stream opens at: every newer version it then hears of is announced."""
    entry = _entries.get(environment_id)
    if entry is not None:
        return entry.snapshot.version
    return current_version(environment_id) or 0


def _load_document(environment_id: int, version: int) -> tuple[dict, bool]:
    """The document of `version` (or newer), and whether it was built here (so it is not in
    the shared cache yet).

    A process that built the environment's previous document builds the next from the
    database: it reads only the changed flags' rows and keeps the other entries (the same
    objects, which the compile reuses without comparing), where the shared cache's copy would
    have to be unpickled whole. Otherwise (a process starting, or the database away) the
    shared cache's copy is taken when there is one.
    """
    if holds_fragments(environment_id):
        with contextlib.suppress(StoreUnavailable), reaching(DATABASE):
            return build_document(environment_id), True
    document = None
    with contextlib.suppress(StoreUnavailable), reaching(CACHE):
        document = cache.get(keys.document(environment_id, version))
    if document is not None:
        return document, False
    with reaching(DATABASE):
        return build_document(environment_id), True


def _share_document(environment_id: int, document: dict) -> None:
    """Leave a document built here in the shared cache, for processes that start while the
    database is away (after the new snapshot is served: it is not on the way of a change)."""
    key = keys.document(environment_id, document["version"])
    with contextlib.suppress(StoreUnavailable), reaching(CACHE):
        if not cache.has_key(key):
            cache.set(key, document, DOCUMENT_TTL)


def snapshot(environment_id: int) -> Snapshot | None:
    """The compiled snapshot to evaluate with; None if the environment does not exist.

    Counted in `flags_snapshot_cache_total`: a hit serves a snapshot this process holds, a
    miss loads and compiles a version; `flags_snapshot_age_seconds` says how long ago a
    store last confirmed the snapshot served is current (it grows through an outage).
    """
    entry = _entries.get(environment_id)
    current = _snapshot(environment_id, entry, time.monotonic())
    served = _entries.get(environment_id)
    if current is None or served is None:
        return current
    metrics.record_cache(served is entry)
    if not served.label:
        served.label = _label(current)
    metrics.set_snapshot_age(served.label, time.monotonic() - served.confirmed_at)
    return current


def _label(current: Snapshot) -> str:
    return f"{current.document.get('project')}/{current.document.get('environment')}"


def _snapshot(environment_id: int, entry: _Entry | None, now: float) -> Snapshot | None:
    if entry is not None and now - entry.checked_at < VERSION_CHECK_SECONDS:
        return entry.snapshot
    if entry is not None and refresh_soon(environment_id):
        # In a server process the refresher asks the stores, and compiles what is new, while
        # the requests are answered from the snapshot held: no request waits for a store.
        entry.checked_at = now
        return entry.snapshot
    try:
        version = current_version(environment_id)
    except StoreUnavailable:
        if entry is None:
            raise
        entry.checked_at = now  # the last good snapshot, checked again after the interval
        return entry.snapshot
    if version is None:
        return entry.snapshot if entry else None
    if entry is not None and entry.snapshot.version >= version:
        entry.checked_at = entry.confirmed_at = now
        return entry.snapshot
    return _refresh(environment_id, version, now)


def _refresh(environment_id: int, version: int, now: float) -> Snapshot:
    held = _entries.get(environment_id)
    if held is None:
        with _lock:
            return _compile_newer(environment_id, version, now)
    if not _lock.acquire(blocking=False):
        # A newer version is being compiled (by another request): answer from the snapshot
        # held until it is in place, rather than wait for it.
        return held.snapshot
    try:
        return _compile_newer(environment_id, version, now)
    finally:
        _lock.release()


def _compile_newer(environment_id: int, version: int, now: float) -> Snapshot:
    """Under `_lock`: the snapshot of `version` (or newer) compiled, unless one is held."""
    entry = _entries.get(environment_id)
    if entry is not None and entry.snapshot.version >= version:
        return entry.snapshot
    try:
        # The flags and segments the new version left as they were are reused from the
        # snapshot it replaces: a toggle compiles one flag, however many there are.
        previous = entry.snapshot if entry is not None else None
        document, built = _load_document(environment_id, version)
        fresh = compile_document(document, previous=previous)
    except StoreUnavailable:
        if entry is None:
            raise
        entry.checked_at = now
        return entry.snapshot
    except Exception:
        if entry is None:
            raise
        if (environment_id, version) not in _broken:
            _broken.add((environment_id, version))
            log.exception("could not load version %s of environment %s", version, environment_id)
        entry.checked_at = now
        return entry.snapshot
    # Never step back: a slower reader must not replace a newer snapshot.
    if entry is None or fresh.version >= entry.snapshot.version:
        _entries[environment_id] = _Entry(fresh, now, now)
    if built:
        _share_document(environment_id, document)
    return _entries[environment_id].snapshot


def refresh(environment_id: int) -> None:
    """Compile the environment's current version now, if this process holds an older
    snapshot of it (requests meanwhile are answered from that one)."""
    if environment_id not in _entries:
        return
    try:
        version = current_version(environment_id)
    except StoreUnavailable:
        return
    entry = _entries.get(environment_id)
    if version is None or entry is None:
        return
    if entry.snapshot.version >= version:
        entry.confirmed_at = time.monotonic()
        return
    with _lock:
        _compile_newer(environment_id, version, time.monotonic())


class Refresher:
    """One thread per server process that compiles the new versions it hears of (from
    evaluation.broadcast, or a request that found the version moved on), so that no request
    waits for a compile while the process holds a snapshot of the environment."""

    current: Refresher | None = None
    _start_lock = threading.Lock()

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.pending: set[int] = set()
        self.stopping = False
        self.wake = threading.Condition()
        self.thread = threading.Thread(target=self._run, name="snapshot-refresher", daemon=True)
        self.thread.start()

    @classmethod
    def ensure_started(cls) -> Refresher:
        """The process's refresher, started on first use (and again in a forked child)."""
        with cls._start_lock:
            if cls.current is None or cls.current.pid != os.getpid():
                cls.current = cls()
        return cls.current

    def request(self, environment_id: int) -> None:
        with self.wake:
            self.pending.add(environment_id)
            self.wake.notify()

    def stop(self) -> None:
        """End the thread (after the refresh under way); requests compile again themselves."""
        with Refresher._start_lock:
            if Refresher.current is self:
                Refresher.current = None
        with self.wake:
            self.stopping = True
            self.wake.notify()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            with self.wake:
                while not self.pending and not self.stopping:
                    self.wake.wait()
                if self.stopping:
                    return
                environment_ids = sorted(self.pending)
                self.pending.clear()
            for environment_id in environment_ids:
                try:
                    refresh(environment_id)
                except Exception:  # noqa: BLE001 - the thread must outlive any one refresh
                    log.exception("could not refresh environment %s", environment_id)
                finally:
                    close_old_connections()


def refresh_soon(environment_id: int) -> bool:
    """Have the process's refresher check the environment's version and compile a new one,
    if it runs (a server process: started with the ASGI lifespan) and this process holds a
    snapshot of the environment; whether it will."""
    refresher = Refresher.current
    if refresher is None or refresher.pid != os.getpid() or environment_id not in _entries:
        return False
    refresher.request(environment_id)
    return True


def document(environment_id: int) -> dict | None:
    """The current flag document (what server-side SDKs download)."""
    current = snapshot(environment_id)
    return current.document if current is not None else None


def environments_changed(versions: dict[int, int]) -> None:
    """After a commit: raise the shared versions and compile this process's snapshots of
    them anew, so the change is served here before the write returns; meanwhile requests
    are answered from the old ones (`broadcast.environments_changed` then tells every
    process and stream)."""
    for environment_id, version in versions.items():
        _raise_cached_version(environment_id, version)
        mark_stale(environment_id)
        refresh(environment_id)


def mark_stale(environment_id: int) -> None:
    """Make the next evaluation in this process check the environment's version."""
    entry = _entries.get(environment_id)
    if entry is not None:
        entry.checked_at = float("-inf")


def clear_local() -> None:
    """Forget every compiled snapshot of this process (tests, and after a fork)."""
    with _lock:
        _entries.clear()
        _broken.clear()
        clear_fragments()
