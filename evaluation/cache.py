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
not per request. While one request compiles a new version (reusing what the old snapshot
compiled of the flags it left unchanged), the others are answered from the old snapshot.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache

from evaluation import keys
from evaluation.documents import build_document
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


def known_version(environment_id: int) -> int:
    """The current version or, while the stores are away, the one this process serves."""
    try:
        return current_version(environment_id) or 0
    except StoreUnavailable:
        entry = _entries.get(environment_id)
        if entry is None:
            raise
        return entry.snapshot.version


def _load_document(environment_id: int, version: int) -> dict:
    document = None
    with contextlib.suppress(StoreUnavailable), reaching(CACHE):
        document = cache.get(keys.document(environment_id, version))
    if document is not None:
        return document
    with reaching(DATABASE):
        document = build_document(environment_id)
    with contextlib.suppress(StoreUnavailable), reaching(CACHE):
        cache.set(keys.document(environment_id, document["version"]), document, DOCUMENT_TTL)
    return document


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
    metrics.set_snapshot_age(_label(current), time.monotonic() - served.confirmed_at)
    return current


def _label(current: Snapshot) -> str:
    return f"{current.document.get('project')}/{current.document.get('environment')}"


def _snapshot(environment_id: int, entry: _Entry | None, now: float) -> Snapshot | None:
    if entry is not None and now - entry.checked_at < VERSION_CHECK_SECONDS:
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
        fresh = compile_document(_load_document(environment_id, version), previous=previous)
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
    return _entries[environment_id].snapshot


def document(environment_id: int) -> dict | None:
    """The current flag document (what server-side SDKs download)."""
    current = snapshot(environment_id)
    return current.document if current is not None else None


def environments_changed(versions: dict[int, int]) -> None:
    """After a commit: raise the shared versions and mark this process's snapshots stale
    (`broadcast.environments_changed` then tells every process and stream)."""
    for environment_id, version in versions.items():
        _raise_cached_version(environment_id, version)
        mark_stale(environment_id)


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
