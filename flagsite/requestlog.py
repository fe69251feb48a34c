"""One log line and one metrics sample per request, under a request id echoed back.

The middleware sits first in MIDDLEWARE so it times everything, and it runs natively in
both sync and async mode: under the ASGI workers a sync-only middleware would cost a
thread hop on every request. It logs the method, route, path (never the query string),
status and duration; it never logs headers, so tokens and API keys stay out of the logs.
"""

import logging
import re
import secrets
import time
from collections.abc import Callable

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.http import HttpRequest, HttpResponseBase

from flagsite import metrics

logger = logging.getLogger("flagsite.request")

# A caller's id is echoed back only if it is short and plain, so it cannot forge log lines.
_CALLER_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
# Probes and scrapes arrive every few seconds; they are logged at DEBUG only.
_QUIET_ROUTES = frozenset({"healthz", "readyz", "metrics"})


def request_id(given: str) -> str:
    """The caller's X-Request-ID if it is short and plain, else a new one."""
    if given and _CALLER_REQUEST_ID.fullmatch(given):
        return given
    return secrets.token_hex(16)  # 128 random bits, as a UUID's hex, without building one


def record(
    *, route: str, method: str, path: str, status: int, seconds: float, request_id: str
) -> None:
    """The metrics sample and log line of one answered request (also the fast path's)."""
    metrics.record_request(route, method, status, seconds)
    level = logging.DEBUG if route in _QUIET_ROUTES else logging.INFO
    if not logger.isEnabledFor(level):
        return
    logger.log(
        level,
        "%s %s %s %.1fms id=%s",
        method,
        path,
        status,
        seconds * 1000,
        request_id,
        extra={
            "request_id": request_id,
            "method": method,
            "route": route,
            "path": path,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
        },
    )


def _route(request: HttpRequest) -> str:
    match = request.resolver_match
    return match.view_name if match is not None else "unresolved"


class RequestLogMiddleware:
    sync_capable = True
    async_capable = True

    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest):
        if self.is_async:
            return self._acall(request)
        started = self._start(request)
        response = self.get_response(request)
        self._finish(request, response, started)
        return response

    async def _acall(self, request: HttpRequest) -> HttpResponseBase:
        started = self._start(request)
        response = await self.get_response(request)
        self._finish(request, response, started)
        return response

    def _start(self, request: HttpRequest) -> float:
        request.request_id = request_id(request.headers.get("X-Request-ID", ""))  # type: ignore[attr-defined]
        return time.perf_counter()

    def _finish(self, request: HttpRequest, response: HttpResponseBase, started: float) -> None:
        seconds = time.perf_counter() - started
        given_id: str = getattr(request, "request_id", "")
        response["X-Request-ID"] = given_id
        record(
            route=_route(request),
            method=request.method or "",
            path=request.path,
            status=response.status_code,
            seconds=seconds,
            request_id=given_id,
        )
