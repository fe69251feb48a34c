"""Limits on how fast anyone may try: login lockouts, and each API key's evaluation rate.

Failed logins (the API's token endpoint and the admin's login page) are counted by
django-axes in the shared cache, per username and per address, so the count holds across
workers and instances; past the limit the next attempt is refused before any password is
hashed, until the cool-off passes. The management API's per-user rate is DRF's
`UserRateThrottle`, in the same cache.

Evaluation answers thousands of requests a second, so its per-key limit cannot cost a cache
round trip each: `KeyRateLimitMiddleware` counts each key locally and adds the local count
to the key's shared count for the current window at most every `EVALUATION_RATE_SYNC`
seconds; once the shared count passes the limit, the process refuses that key until the
window ends. A key may overshoot by what the instances served between two syncs.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.core.cache import BaseCache, cache, caches
from django.http import HttpRequest, HttpResponse, HttpResponseBase, JsonResponse
from rest_framework import throttling

from evaluation.credentials import presented_secret
from flagsite.failures import ensure_may_block

EVALUATION_PREFIXES = ("/api/v1/evaluate", "/api/v1/sdk/", "/api/v1/stream", "/ofrep/")


def _cool_off_seconds() -> int:
    return max(1, int(settings.AXES_COOLOFF_TIME.total_seconds()))


def lockout_response(request: HttpRequest, original_response=None, credentials=None):
    """What a locked-out login gets: 429 with Retry-After (JSON on the API)."""
    seconds = _cool_off_seconds()
    detail = f"too many failed logins: try again in {seconds} seconds"
    if request.path.startswith("/api/"):
        response: HttpResponse = JsonResponse(
            {"error": "throttled", "status": 429, "detail": detail}, status=429
        )
    else:
        response = HttpResponse(detail, status=429, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(seconds)
    return response


class UserRateThrottle(throttling.UserRateThrottle):
    """DRF's per-person rate, counted in the limits cache (per process while Redis is away)."""

    @property
    def cache(self) -> BaseCache:  # type: ignore[override]
        return caches["limits"]


class AnonRateThrottle(throttling.AnonRateThrottle):
    """DRF's per-address rate before login, counted like UserRateThrottle."""

    @property
    def cache(self) -> BaseCache:  # type: ignore[override]
        return caches["limits"]


# --- Evaluation: per key -------------------------------------------------------------------


@dataclass
class _Window:
    started: float
    local: int = 0  # served here since the last sync
    shared: int = 0  # the key's count across instances at the last sync
    synced: float = 0.0


class KeyRateLimiter:
    """Requests per key per window, counted here and summed in the shared cache."""

    def __init__(self, limit: int, window: float, sync_every: float) -> None:
        self.limit, self.window, self.sync_every = limit, window, sync_every
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def admit(self, digest: str, now: float | None = None) -> float:
        """0 to serve the request, else the seconds until the key may ask again."""
        now = time.monotonic() if now is None else now
        wall = time.time()
        start = wall - wall % self.window
        with self._lock:
            window = self._windows.get(digest)
            if window is None or window.started != start:
                if len(self._windows) > 100_000:
                    self._windows.clear()  # bounded: keys nobody uses any more go
                window = self._windows[digest] = _Window(started=start, synced=now)
            if window.shared + window.local >= self.limit:
                return max(1.0, start + self.window - wall)
            due = now - window.synced >= self.sync_every
            if due:
                ensure_may_block()  # the shared count is a cache call: never on the event loop
            window.local += 1
            pending = window.local if due else 0
            if due:
                window.local, window.synced = 0, now
        if pending:
            shared = self._add_shared(digest, start, pending)
            with self._lock:
                window.shared = max(window.shared, shared)
        return 0.0

    def _add_shared(self, digest: str, start: float, count: int) -> int:
        key = f"evaluation-rate:{digest[:32]}:{int(start)}"
        try:
            cache.add(key, 0, timeout=int(self.window) + 5)
            return int(cache.incr(key, count))
        except Exception:  # the shared cache is down: each process still limits itself
            return 0


def evaluation_limiter() -> KeyRateLimiter | None:
    """A limiter of the evaluation rate per key from the settings; None when unlimited."""
    if settings.EVALUATION_RATE_LIMIT <= 0:
        return None
    return KeyRateLimiter(
        settings.EVALUATION_RATE_LIMIT,
        float(settings.EVALUATION_RATE_WINDOW),
        float(settings.EVALUATION_RATE_SYNC),
    )


def refusal(
    limiter: KeyRateLimiter | None, path: str, headers: Mapping[str, str]
) -> HttpResponse | None:
    """The 429 for a request whose API key is past its rate; None to serve it.

    Also called by the evaluation fast path (flagsite.asgi), with its own limiter.
    """
    if limiter is None or not path.startswith(EVALUATION_PREFIXES):
        return None
    secret = presented_secret(headers)
    if not secret:
        return None  # the view answers 401
    digest = hashlib.sha256(secret.encode()).hexdigest()
    wait = limiter.admit(digest)
    if not wait:
        return None
    response = JsonResponse(
        {"errorCode": "GENERAL", "errorDetails": "rate limit of this API key exceeded"},
        status=429,
    )
    response["Retry-After"] = str(math.ceil(wait))
    return response


def _limiter() -> KeyRateLimiter | None:
    return evaluation_limiter()  # looked up when a middleware is built (tests replace it)


class KeyRateLimitMiddleware:
    """429 with Retry-After for an API key past its evaluation rate (EVALUATION_RATE_*)."""

    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.limiter = _limiter()
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def _refusal(self, request: HttpRequest) -> HttpResponseBase | None:
        return refusal(self.limiter, request.path, request.headers)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self._acall(request)
        return self._refusal(request) or self.get_response(request)

    async def _acall(self, request: HttpRequest):
        return self._refusal(request) or await self.get_response(request)
