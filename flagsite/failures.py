"""How the service meets failure: a store that is away (503 naming it) or a bug (a JSON 500).

The stores are `database` (PostgreSQL, or SQLite) and `cache` (Redis). Each process keeps
what it last saw of each one and logs a single line when a store goes away and another
when it is back, instead of a traceback per request. Paths that have a fallback (the
evaluation path: last known credentials and snapshots) call a store through `reaching`,
which refuses at once, without a network round trip, for `RETRY_SECONDS` after a failure.

Every other request that meets a store that is away is answered 503 with
`{"error": "store_unavailable", "detail": ..., "store": "database"|"cache"}` (OFREP's
`errorCode`/`errorDetails` shape under /ofrep/, a short HTML page elsewhere) and a
`Retry-After`. Any other uncaught error under /api/ and /ofrep/ is a JSON 500 carrying the
request id; its traceback goes to the log once, never into the response. The admin keeps
Django's HTML error pages.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.db import InterfaceError, OperationalError, connection
from django.db.backends.signals import connection_created
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import server_error
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import (
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

log = logging.getLogger("flagsite.stores")
errors_log = logging.getLogger("flagsite.errors")

DATABASE = "database"
CACHE = "cache"
STORES = (DATABASE, CACHE)
# After a failure, paths with a fallback leave the store alone this long: an unreachable
# store then costs one attempt per second and process, not one per request.
RETRY_SECONDS = 1.0
# What a client is told to wait before retrying a request refused for an outage.
RETRY_AFTER_SECONDS = 1
API_PREFIXES = ("/api/", "/ofrep/")
# PostgreSQL errors that mean "the server is not there", not "this statement failed":
# connection exceptions (class 08), shutdowns and restarts, too many connections.
_AWAY_SQLSTATES = ("57P01", "57P02", "57P03", "53300")
# Redis answers these while it cannot serve anyone (not "this command was wrong"): a script
# or a command running past busy-reply-threshold (BUSY), a replica promoted away or a master
# down (READONLY, MASTERDOWN, CLUSTERDOWN, TRYAGAIN), memory full under noeviction (OOM).
_REDIS_AWAY = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    ClusterDownError,
    TryAgainError,
    OutOfMemoryError,
)


def _redis_away(error: BaseException) -> bool:
    if isinstance(error, _REDIS_AWAY):
        return True
    return isinstance(error, ResponseError) and str(error).startswith("BUSY ")


class StoreUnavailable(Exception):
    """A store the request needs is away; `store` is `database` or `cache`."""

    def __init__(self, store: str) -> None:
        super().__init__(f"the {store} is unavailable")
        self.store = store


@dataclass
class _State:
    down_since: float | None = None
    failed_at: float = float("-inf")


_states = {store: _State() for store in STORES}
_lock = threading.Lock()


# --- What counts as an outage ---------------------------------------------------------------


def store_of(error: BaseException | None) -> str | None:
    """The store this error says is away, or None when it is not an outage."""
    if error is None:
        return None
    if isinstance(error, StoreUnavailable):
        return error.store
    if isinstance(error, InterfaceError):
        return DATABASE
    if isinstance(error, OperationalError):
        return DATABASE if _connection_lost(error) else None
    if _redis_away(error):
        return CACHE
    if isinstance(error, ConnectionInterrupted):  # django-redis's wrapper of the ones above
        return CACHE if error.__cause__ is not None and _redis_away(error.__cause__) else None
    return None


def _connection_lost(error: OperationalError) -> bool:
    cause = error.__cause__
    if cause is None or not hasattr(cause, "sqlstate"):
        return True  # SQLite ("database is locked", no such file): nothing to retry on
    sqlstate = cause.sqlstate
    # A client-side failure (refused, reset, timed out) carries no SQLSTATE at all.
    return sqlstate is None or sqlstate.startswith("08") or sqlstate in _AWAY_SQLSTATES


# --- Each process's view of the stores ------------------------------------------------------


def _describe(error: BaseException) -> str:
    cause = error.__cause__ if isinstance(error, StoreUnavailable) and error.__cause__ else error
    text = f"{type(cause).__name__}: {cause}".strip().splitlines()
    return text[0] if text else type(cause).__name__


def note_down(store: str, error: BaseException) -> None:
    """A call to `store` failed: log it if the store was up until now."""
    now = time.monotonic()
    with _lock:
        state = _states[store]
        state.failed_at = now
        if state.down_since is not None:
            return
        state.down_since = now
    log.warning(
        "store down: the %s is unavailable (%s); evaluation serves what it last knew",
        store,
        _describe(error),
        extra={"store": store, "store_state": "down"},
    )


def note_up(store: str) -> None:
    """A call to `store` succeeded: log it if the store was down until now."""
    state = _states[store]
    if state.down_since is None:  # the common case, without taking the lock
        return
    with _lock:
        if state.down_since is None:
            return
        seconds = time.monotonic() - state.down_since
        state.down_since = None
        state.failed_at = float("-inf")  # back: no path need wait any longer
    log.warning(
        "store back: the %s is available again after %.1f s",
        store,
        seconds,
        extra={"store": store, "store_state": "up", "down_seconds": round(seconds, 1)},
    )


def is_down(store: str) -> bool:
    return _states[store].down_since is not None


def resting(store: str) -> bool:
    """Whether the store failed less than RETRY_SECONDS ago (so paths with a fallback wait)."""
    return time.monotonic() - _states[store].failed_at < RETRY_SECONDS


class WouldBlock(Exception):
    """A store call was about to run on the event loop: redo the request in a thread."""


# Set while the evaluation fast path (flagsite.asgi) runs a request in the event loop.
_on_event_loop = contextvars.ContextVar("on_event_loop", default=False)


@contextmanager
def on_event_loop() -> Iterator[None]:
    """Run code that must not wait for a store: any call to one raises WouldBlock first."""
    token = _on_event_loop.set(True)
    try:
        yield
    finally:
        _on_event_loop.reset(token)


def ensure_may_block() -> None:
    """WouldBlock when running on the event loop (before anything changes: the request is
    redone in a thread, from the start)."""
    if _on_event_loop.get():
        raise WouldBlock


@contextmanager
def reaching(store: str) -> Iterator[None]:
    """Call a store from a path with a fallback: StoreUnavailable at once while it rests.

    Errors that are not outages (a bad statement, a bug) pass through unchanged. On the
    event loop (`on_event_loop`) it raises WouldBlock instead of calling the store.
    """
    ensure_may_block()
    if resting(store):
        raise StoreUnavailable(store)
    try:
        yield
    except Exception as error:
        found = store_of(error)
        if found is None:
            raise
        note_down(found, error)
        if found == DATABASE:
            _drop_connection()
        raise StoreUnavailable(found) from error
    note_up(store)


def _drop_connection() -> None:
    """Forget this thread's broken connection, so the next attempt connects afresh.

    Django does so between requests, but not in the threads that serve no request (the
    change listener's version polls), which would otherwise keep failing once it is back.
    """
    with contextlib.suppress(Exception):
        connection.close()


def forget() -> None:
    """Forget what this process saw of the stores (tests)."""
    with _lock:
        for store in STORES:
            _states[store] = _State()


def _database_connected(sender, connection, **kwargs) -> None:
    note_up(DATABASE)


# A new connection after an outage is the first sign that the database is back.
connection_created.connect(_database_connected, dispatch_uid="flagsite.failures")


# --- Answers --------------------------------------------------------------------------------


def _is_api(request: HttpRequest) -> bool:
    return request.path.startswith(API_PREFIXES)


def unavailable(request: HttpRequest, store: str) -> HttpResponse:
    """503 naming the store: JSON under /api/ and /ofrep/, a short HTML page elsewhere."""
    return unavailable_at(request.path, store)


def unavailable_at(path: str, store: str) -> HttpResponse:
    """`unavailable` for a request known by its path (the evaluation fast path)."""
    detail = f"the {store} is unavailable; retry in a moment"
    if path.startswith("/ofrep/"):
        response: HttpResponse = JsonResponse(
            {"errorCode": "GENERAL", "errorDetails": detail, "store": store}, status=503
        )
    elif path.startswith(API_PREFIXES):
        response = JsonResponse(
            {"error": "store_unavailable", "detail": detail, "store": store}, status=503
        )
    else:
        response = HttpResponse(
            f"<!doctype html><title>Service unavailable</title>"
            f"<h1>Service unavailable</h1><p>The {store} is unavailable; retry in a moment.</p>",
            status=503,
        )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    response["Cache-Control"] = "no-store"
    return _logged(response)


def _logged(response: HttpResponse) -> HttpResponse:
    """Tell Django the response is logged already (by the request log and, for an outage,
    the state change), so it adds no ERROR line of its own per request."""
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def internal_error(request: HttpRequest) -> JsonResponse:
    return internal_error_at(request.path, getattr(request, "request_id", None))


def internal_error_at(path: str, request_id: str | None) -> JsonResponse:
    """`internal_error` for a request known by its path and id (the evaluation fast path)."""
    detail = "an unexpected error; it has been logged"
    if path.startswith("/ofrep/"):
        body = {"errorCode": "GENERAL", "errorDetails": detail}
    else:
        body = {"error": "internal_error", "detail": detail}
    if request_id:
        body["requestId"] = request_id
    return JsonResponse(body, status=500)


class FailureMiddleware:
    """Answers a view's store outage with 503, and any other error under the API with JSON."""

    sync_capable = True
    async_capable = False

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        return exception_response(request.path, getattr(request, "request_id", None), exception)


def exception_response(
    path: str, request_id: str | None, exception: Exception
) -> HttpResponse | None:
    """The answer to an error a view raised: 503 for an outage, a JSON 500 under the API,
    None elsewhere (the admin keeps Django's own 500 page and its logging)."""
    store = store_of(exception)
    if store is not None:
        note_down(store, exception)
        return unavailable_at(path, store)
    if not path.startswith(API_PREFIXES):
        return None
    errors_log.error(
        "Internal Server Error: %s",
        path,
        exc_info=(type(exception), exception, exception.__traceback__),
        extra={"request_id": request_id, "status": 500},
    )
    return _logged(internal_error_at(path, request_id))


def handler500(request: HttpRequest) -> HttpResponse:
    """Django's last resort (errors raised outside views, e.g. in a middleware)."""
    error = sys.exc_info()[1]
    store = store_of(error)
    if store is not None:
        note_down(store, error)  # type: ignore[arg-type]
        # Marked as logged: the state change above is the log line, not a traceback each time.
        return unavailable(request, store)
    if _is_api(request):
        return internal_error(request)  # Django logs its traceback once
    return server_error(request)
