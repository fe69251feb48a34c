"""The flag client: one environment's compiled snapshot, evaluated in process, kept current.

Evaluation reads `self._snapshot` once per call and never takes a lock: the updater thread
compiles a new document off to the side and swaps the attribute in one assignment, so a
reader sees the old snapshot or the new one, never a mixture. Nothing on the evaluation
path raises; a problem becomes the caller's default with a reason and an error code.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flagclient.engine import ErrorCode, EvaluationResult, Reason, Snapshot, compile_document

log = logging.getLogger("flagclient")

PROVIDER_NOT_READY = "PROVIDER_NOT_READY"
# A value forced by `override` (tests): OpenFeature's reason for a value nobody evaluated.
OVERRIDE_REASON = "STATIC"

# The flag type a default implies: `value("x", ctx, default=False)` expects a boolean flag.
_EXPECTED_TYPE = {bool: "boolean", str: "string", int: "number", float: "number", dict: "json"}
_expected = _EXPECTED_TYPE.get

# (event: "ready" | "changed" | "stale" | "error", flag keys)
Listener = Callable[[str, list[str]], None]

_clients: weakref.WeakSet[FlagClient] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for client in list(_clients):
        client._forget_threads()


os.register_at_fork(after_in_child=_after_fork_in_child)


class FlagClient:
    """Evaluates one environment's flags in process; see docs/sdk.md.

    `url` is the flag server's base URL, `server_key` a server key of the environment.
    With `streaming` the client follows `GET /api/v1/stream` and refetches when an event
    announces a new version, reconnecting with back-off; while the stream is down (or with
    `streaming=False`) it polls the document every `poll_interval` seconds, and every
    `stream_poll_interval` seconds while it is up. Each request has a total deadline of
    `timeout` seconds; a document larger than `max_document_bytes` is refused.
    `bootstrap_path` names a file the client writes each new document to and starts from
    when the server cannot be reached. `report_exposures` posts aggregated evaluation
    counts, and each unit's first exposure to a rollout split, every `exposure_interval`
    seconds; `track` queues events for the same thread to post. `offline` makes no
    network calls at all: the bootstrap file and overrides only.
    """

    def __init__(
        self,
        url: str = "",
        server_key: str = "",
        *,
        streaming: bool = True,
        stream_url: str | None = None,
        poll_interval: float = 30.0,
        stream_poll_interval: float = 300.0,
        reconnect_delay: tuple[float, float] = (0.5, 30.0),
        stream_healthy_after: float = 60.0,
        timeout: float = 5.0,
        stream_read_timeout: float = 45.0,
        max_document_bytes: int = 10 * 1024 * 1024,
        bootstrap_path: str | os.PathLike[str] | None = None,
        report_exposures: bool = False,
        exposure_interval: float = 60.0,
        offline: bool = False,
        start: bool = True,
    ) -> None:
        from flagclient.updates import Updater, UpdaterOptions

        _check_seconds(
            poll_interval=poll_interval,
            stream_poll_interval=stream_poll_interval,
            stream_healthy_after=stream_healthy_after,
            timeout=timeout,
            stream_read_timeout=stream_read_timeout,
            exposure_interval=exposure_interval,
        )
        reconnect_delay = _check_delays(reconnect_delay)
        if max_document_bytes.__class__ is not int or max_document_bytes <= 0:
            raise ValueError("max_document_bytes: a positive whole number of bytes")
        self.url = url.rstrip("/")
        self.offline = offline
        self.bootstrap_path = Path(bootstrap_path) if bootstrap_path else None
        self._snapshot: Snapshot | None = None
        # The snapshot while nothing else is on the evaluation path (no overrides, no
        # counting, no restart pending), else None: `value` then checks one attribute.
        self._fast: Snapshot | None = None
        self._state_lock = threading.Lock()
        self._overrides: dict[str, EvaluationResult] = {}
        self._listeners: list[Listener] = []
        self._stats: Counter[str] = Counter()
        self._ready = threading.Event()  # a snapshot is served (or none will ever come)
        self._current = threading.Event()  # the server confirmed it (or never will)
        self._stale = False
        self._phase = "none"  # what listeners were last told: none | ready | stale
        self._announce_next = False
        self._error: str | None = None
        self._running = False
        self._closed = False
        self._lock = threading.Lock()  # start/close and listener bookkeeping, never evaluation
        self._options = UpdaterOptions(
            url=self.url,
            server_key=server_key,
            streaming=streaming,
            stream_url=stream_url or f"{self.url}/api/v1/stream",
            poll_interval=poll_interval,
            stream_poll_interval=stream_poll_interval,
            reconnect_delay=reconnect_delay,
            stream_healthy_after=stream_healthy_after,
            timeout=timeout,
            stream_read_timeout=stream_read_timeout,
            max_document_bytes=max_document_bytes,
        )
        self._updater_class = Updater
        self._updater: Updater | None = None
        self._exposures = None
        self._report_exposures = report_exposures and not offline
        if not offline:  # `track` posts through it too, whether or not exposures are counted
            from flagclient.exposures import ExposureReporter

            self._exposures = ExposureReporter(
                url=self.url,
                server_key=server_key,
                interval=exposure_interval,
                timeout=timeout,
                stats=self._stats,
            )
        self._count = self._counter()
        self._set()
        _clients.add(self)
        self._load_bootstrap()
        if start:
            self.start()

    # --- evaluation (never raises) --------------------------------------------------------

    def value(
        self, flag_key: str, context: Mapping[str, Any] | None = None, default: Any = None
    ) -> Any:
        """The flag's value for `context`, or `default` if it cannot be evaluated."""
        try:
            snapshot = self._fast
            if snapshot is not None:  # a document, no overrides, no counting: the usual case
                result = snapshot.evaluate(
                    flag_key, {} if context is None else context, _expected(default.__class__)
                )
                return default if result.error_code is not None else result.value
            return self._details(flag_key, context, default, None).value
        except Exception:  # noqa: BLE001 - the evaluation path answers, whatever happens
            return default

    def details(
        self,
        flag_key: str,
        context: Mapping[str, Any] | None = None,
        default: Any = None,
        expected_type: str | None = None,
    ) -> EvaluationResult:
        """Value, variant, reason and error code; on an error `value` is `default`.

        `expected_type` ("boolean", "string", "number", "json") defaults to the type of
        `default`; a flag of another type answers TYPE_MISMATCH.
        """
        try:
            snapshot = self._fast
            if snapshot is None:
                return self._details(flag_key, context, default, expected_type)
            result = snapshot.evaluate(
                flag_key,
                {} if context is None else context,
                expected_type or _expected(default.__class__),
            )
            if result.error_code is None:
                return result
            return _error(flag_key, default, result.error_code, result.error_details)
        except Exception as exc:  # noqa: BLE001
            return _error(flag_key, default, ErrorCode.GENERAL, f"{type(exc).__name__}: {exc}")

    def _details(
        self,
        flag_key: str,
        context: Mapping[str, Any] | None,
        default: Any,
        expected_type: str | None,
    ) -> EvaluationResult:
        override = self._overrides.get(flag_key) if self._overrides else None
        if override is not None:
            return override
        snapshot = self._snapshot
        if snapshot is None:
            self._restart_if_forked()
            return _error(flag_key, default, PROVIDER_NOT_READY, "no flag document yet")
        if expected_type is None:
            expected_type = _expected(default.__class__)
        result = snapshot.evaluate(flag_key, {} if context is None else context, expected_type)
        if self._count is not None:
            self._count(result)
            if result.reason == Reason.SPLIT and context:
                self._expose(result, context)
        if result.error_code is not None:
            return _error(flag_key, default, result.error_code, result.error_details)
        return result

    def all(self, context: Mapping[str, Any] | None = None) -> dict[str, EvaluationResult]:
        """Every live flag's result for `context` ({} before the first document)."""
        try:
            snapshot = self._snapshot
            results = {} if snapshot is None else snapshot.evaluate_all(context or {})
            if self._count is not None:
                for result in results.values():
                    self._count(result)
                    if result.reason == Reason.SPLIT and context:
                        self._expose(result, context)
            results.update(self._overrides)
            return results
        except Exception:  # noqa: BLE001
            log.exception("flagclient: evaluating every flag failed")
            return {}

    def _expose(self, result: EvaluationResult, context: Mapping[str, Any]) -> None:
        """Note the context's unit as exposed to a split's variant (posted once, batched)."""
        unit = context.get("targetingKey")
        if self._exposures is not None and result.variant and _storable(unit, MAX_UNIT):
            self._exposures.expose(result.flag_key, result.variant, str(unit))

    # --- events ---------------------------------------------------------------------------

    def track(
        self,
        event: str,
        context: Mapping[str, Any] | None = None,
        value: float | None = None,
    ) -> bool:
        """Queue an event of the context's unit (its targetingKey), with an optional number
        (a price, a duration), for `POST /api/v1/sdk/events`; posted in batches by the
        exposure thread, so this never blocks and never raises. False, counted in
        `stats["tracked_dropped"]`, for an event the server would refuse: a name of 1 to
        100 characters and a targetingKey of 1 to 256 (no NUL, tab or line break, valid
        Unicode), a finite value of at most 1e12; or when offline, closed or refused."""
        try:
            reporter = self._exposures
            unit = None if context is None else context.get("targetingKey")
            if reporter is None or self._closed or self._error:
                return False
            if not _storable(event, MAX_EVENT) or not _storable(unit, MAX_UNIT):
                self._stats["tracked_dropped"] += 1
                return False
            item: dict[str, Any] = {"event": event, "targetingKey": unit, "timestamp": time.time()}
            if value is not None:
                if value.__class__ is bool or not abs(value) <= MAX_VALUE:  # NaN fails too
                    self._stats["tracked_dropped"] += 1
                    return False
                item["value"] = float(value)
            reporter.track(item)
            if self._running:
                reporter.start()  # idempotent; again in a forked child
            return True
        except Exception:  # noqa: BLE001 - tracking never breaks the caller
            self._stats["tracked_dropped"] += 1
            return False

    # --- state ----------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """Whether a document (downloaded or bootstrapped) is being served."""
        return self._snapshot is not None

    @property
    def stale(self) -> bool:
        """Whether the values may be old: the last request for the document failed, the
        bootstrap file has not been confirmed yet, or the server refused the key."""
        return self._stale

    @property
    def error(self) -> str | None:
        """Why the client stopped talking to the server for good (a refused key), or None."""
        return self._error

    @property
    def stats(self) -> dict[str, int]:
        """Counts of what happened on the network: document_requests, document_failures,
        documents_too_large, bad_documents, versions_gone_back, stream_connections,
        streams_dropped, events, malformed_events, exposures_posted, exposures_dropped,
        tracked_posted, tracked_dropped, unit_exposures_posted, unit_exposures_dropped."""
        return dict(self._stats)

    @property
    def version(self) -> int | None:
        snapshot = self._snapshot
        return None if snapshot is None else snapshot.version

    @property
    def snapshot(self) -> Snapshot | None:
        return self._snapshot

    def wait_until_ready(self, timeout: float | None = None) -> bool:
        """Block until a document is served or `timeout` passes; returns `ready`."""
        self._ready.wait(timeout)
        return self.ready

    def _wait_until_confirmed(self, timeout: float | None) -> bool:
        """Block until the server confirmed a document (or never will); whether it did."""
        self._current.wait(timeout)
        return self._phase == "ready"

    def add_listener(self, listener: Listener) -> None:
        """Call `listener(event, flag_keys)` on "ready", "changed", "stale" and "error".

        Listeners run on the client's threads; keep them short. "ready" follows the first
        document the server confirms and every recovery after "stale", once each; "error"
        says the server refused the key (see `error`).
        """
        with self._lock:
            self._listeners = [*self._listeners, listener]

    def remove_listener(self, listener: Listener) -> None:
        with self._lock:
            self._listeners = [known for known in self._listeners if known is not listener]

    # --- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background threads (idempotent; again in a forked child)."""
        with self._lock:
            if self._closed or self.offline or self._updater is not None or self._error:
                return
            self._running = True
            self._updater = self._updater_class(self, self._options)
            self._updater.start()
            if self._report_exposures and self._exposures is not None:
                self._exposures.start()

    def close(self, timeout: float = 2.0) -> None:
        """Stop the background threads and post the last exposure counts, within `timeout`
        seconds; never raises. Evaluation keeps working on the last snapshot."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._closed, self._running = True, False
            updater, self._updater = self._updater, None
        try:
            if updater is not None:
                updater.stop(deadline)
            if self._exposures is not None:
                self._exposures.close(deadline)
        except Exception:  # noqa: BLE001 - closing must not break the caller's shutdown
            log.exception("flagclient: closing failed")
        finally:
            self._ready.set()  # nobody waits for a document that will not come
            self._current.set()

    def __enter__(self) -> FlagClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _restart_if_forked(self) -> None:
        if self._running and self._updater is None:
            self.start()

    def _forget_threads(self) -> None:
        """In a forked child: the parent's threads did not come along; restart on first use.

        The evaluation path already calls `self._count` when it is set, so pointing it at a
        function that restarts the threads costs the evaluations nothing.
        """
        self._lock, self._state_lock = threading.Lock(), threading.Lock()
        self._updater = None
        if self._exposures is not None:
            self._exposures.forget_after_fork()
        if self._running:
            self._set(count=self._restart_then_count)

    def _counter(self) -> Callable[[EvaluationResult], None] | None:
        return self._exposures.count if self._report_exposures and self._exposures else None

    def _restart_then_count(self, result: EvaluationResult) -> None:
        self._set(count=self._counter())
        self.start()
        if self._count is not None:
            self._count(result)

    # --- overrides (tests) ----------------------------------------------------------------

    @contextmanager
    def override(self, flag_key: str, value: Any) -> Iterator[None]:
        """Serve `value` for `flag_key` inside the block (reason STATIC), ignoring the document."""
        previous = self._overrides.get(flag_key)
        variant = ("on" if value else "off") if value.__class__ is bool else None
        result = EvaluationResult(flag_key, value, variant, OVERRIDE_REASON)
        self._set(overrides={**self._overrides, flag_key: result})
        try:
            yield
        finally:
            overrides = dict(self._overrides)
            if previous is None:
                overrides.pop(flag_key, None)
            else:
                overrides[flag_key] = previous
            self._set(overrides=overrides)

    # --- called by the updater ------------------------------------------------------------

    def _install(self, snapshot: Snapshot, document: bytes | None = None) -> None:
        """Serve `snapshot` (the updater decided it should be); save its `document` bytes."""
        current = self._snapshot
        self._set(snapshot=snapshot)
        if document is not None:
            self._save_bootstrap(document)
        self._ready.set()
        if current is not None:
            changed = _changed_flags(current.document, snapshot.document)
            if changed or snapshot.version != current.version:
                self._emit("changed", changed)

    def _attempted(self, *, ok: bool) -> None:
        """A request for the document succeeded or failed: tell listeners what changed."""
        self._stale = not ok
        if self._error is not None:
            return
        snapshot = self._snapshot
        phase = "none" if snapshot is None else "stale" if self._stale else "ready"
        previous, self._phase = self._phase, phase
        announce, self._announce_next = self._announce_next, False
        if phase == "ready":
            self._current.set()
        if phase == previous and not announce:
            return
        if phase == "ready":
            first = snapshot is not None and previous == "none"
            self._emit("ready", list(snapshot.flag_keys) if snapshot is not None and first else [])
        elif phase == "stale":
            self._emit("stale", [])

    def _refused(self, message: str) -> None:
        """The server refused the key: stop counting, wake the waiters, say it once."""
        self._error, self._stale = message, True
        if self._exposures is not None:
            self._exposures.halt()
            self._set(count=None)
        self._ready.set()
        self._current.set()
        self._emit("error", [])

    def _announce_next_attempt(self) -> None:
        """Tell listeners the outcome of the next request even if it changes nothing (the
        OpenFeature provider reports its state once the SDK has marked it READY)."""
        self._announce_next = True

    def _set(self, **state: Any) -> None:
        """Change `_snapshot`, `_overrides` or `_count`, keeping `_fast` in step with them."""
        with self._state_lock:
            for name, value in state.items():
                setattr(self, f"_{name}", value)
            plain = not self._overrides and self._count is None
            self._fast = self._snapshot if plain else None

    def _emit(self, event: str, flag_keys: list[str]) -> None:
        for listener in self._listeners:
            try:
                listener(event, flag_keys)
            except Exception:  # noqa: BLE001 - a listener's bug must not stop the updates
                log.exception("flagclient: a %s listener failed", event)

    # --- bootstrap file -------------------------------------------------------------------

    def _load_bootstrap(self) -> None:
        path = self.bootstrap_path
        if path is None or not path.exists():
            return
        try:
            if path.stat().st_size > self._options.max_document_bytes:
                raise ValueError("larger than max_document_bytes")
            self._set(snapshot=compile_document(json.loads(path.read_bytes())))
        except Exception:  # noqa: BLE001 - a damaged file is ignored, not fatal
            log.warning("flagclient: ignoring unreadable bootstrap file %s", path, exc_info=True)
            return
        self._ready.set()
        self._stale = not self.offline  # old until the server confirms it
        self._phase = "stale" if self._stale else "ready"

    def _save_bootstrap(self, document: bytes) -> None:
        path = self.bootstrap_path
        if path is None:
            return
        try:
            partial = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            partial.write_bytes(document)
            os.chmod(partial, 0o600)
            os.replace(partial, path)  # readers see the old file or the new, never half
        except OSError:
            log.warning("flagclient: could not write bootstrap file %s", path, exc_info=True)


MAX_EVENT = 100  # the server's limits (docs/experiments.md)
MAX_UNIT = 256
MAX_VALUE = 1e12


def _storable(text: Any, limit: int) -> bool:
    """A name the server keeps: 1 to `limit` characters, no control separator, UTF-8."""
    if text.__class__ is not str or not 0 < len(text) <= limit:
        return False
    if "\x00" in text or "\t" in text or "\r" in text or "\n" in text:
        return False
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _error(flag_key: str, default: Any, code: str, details: str | None) -> EvaluationResult:
    return EvaluationResult(flag_key, default, None, Reason.ERROR, None, code, details)


def _check_seconds(**values: Any) -> None:
    for name, value in values.items():
        if value.__class__ not in (int, float) or not 0 < value < float("inf"):
            raise ValueError(f"{name}: a positive number of seconds")


def _check_delays(delays: Any) -> tuple[float, float]:
    try:
        first, longest = delays
        _check_seconds(reconnect_delay=first)
        _check_seconds(reconnect_delay=longest)
    except (TypeError, ValueError):
        raise ValueError("reconnect_delay: (first, longest), positive seconds") from None
    if first > longest:
        raise ValueError("reconnect_delay: the first delay is longer than the longest")
    return float(first), float(longest)


def _changed_flags(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Keys of flags whose definition differs; every flag when the segments changed."""
    old_flags, new_flags = old.get("flags") or {}, new.get("flags") or {}
    keys = list(dict.fromkeys([*old_flags, *new_flags]))
    if (old.get("segments") or {}) != (new.get("segments") or {}):
        return keys
    return [key for key in keys if old_flags.get(key) != new_flags.get(key)]
