"""The evaluation fast path: an ASGI router in front of Django for the evaluation endpoints.

Django's request machinery (its request object, fourteen middleware, the URL resolver, a
thread hop from the event loop) costs far more than an evaluation. This router answers
the evaluation endpoints in the event loop instead, through the same functions Django's
views adapt (evaluation.answers), and wraps each answer as Django's middleware would: the
rate limit per key (flagsite.throttling), the security headers, `Vary: origin`, the
request id, the request log line and the metrics sample (flagsite.requestlog), and the
answers to an outage or a bug (flagsite.failures).

An answer is computed in the event loop only while everything it needs is in this
process's memory. Any store call on the way (a credential or version to re-check, the
per-minute key touch, the rate limit's sync) raises WouldBlock before it changes anything,
and the request is redone from the start in a thread (asgiref's `sync_to_async`).

A browser's request (an `Origin` header) and its preflight are answered here too, with the
CORS headers corsheaders' own middleware computes (`CorsMiddleware.add_response_headers`,
given a stand-in for Django's request), so the rules and settings are corsheaders' alone.

Everything else goes to Django unchanged: other paths, HEAD, a percent-encoded path, a
host Django would refuse, a plain-HTTP request when HTTPS redirects are on. See
docs/deployment.md.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from types import SimpleNamespace
from typing import Any

from asgiref.sync import sync_to_async
from corsheaders.middleware import CorsMiddleware
from django.conf import settings
from django.core.exceptions import SynchronousOnlyOperation
from django.core.signals import request_finished, request_started
from django.http import HttpResponse
from django.http.request import split_domain_port, validate_host

from evaluation import answers
from evaluation.answers import MAX_BODY_BYTES, Answer, Request
from flagsite import failures, requestlog, throttling

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

# path -> (route name, as Django's URL names them; the answer)
_FIXED: dict[str, tuple[str, Callable[[Request], Answer]]] = {
    "/api/v1/evaluate": ("evaluate-flags", answers.evaluate_flags),
    "/ofrep/v1/evaluate/flags": ("ofrep-flags", answers.ofrep_flags),
    "/api/v1/sdk/flags": ("sdk-flags", answers.sdk_flags),
}
# prefix -> (route name, the answer given the flag key that ends the path, its argument)
_KEYED: tuple[tuple[str, str, Callable[..., Answer], str], ...] = (
    ("/ofrep/v1/evaluate/flags/", "ofrep-flag", answers.ofrep_flag, "key"),
    ("/api/v1/evaluate/", "evaluate-flag", answers.evaluate_flag, "flag_key"),
)
# What Django's default for a response without a type is (the 304s).
_DEFAULT_TYPE = b"text/html; charset=utf-8"


def route(path: str) -> tuple[str, Callable[[Request], Answer]] | None:
    """The route name and answer for a path this router serves, or None (Django's)."""
    fixed = _FIXED.get(path)
    if fixed is not None:
        return fixed
    for prefix, name, answer, argument in _KEYED:
        if path.startswith(prefix):
            key = path[len(prefix) :]
            if not key or "/" in key:
                return None  # Django's JSON 404 for a path naming no flag
            return name, partial(answer, **{argument: key})
    return None


class FastPath:
    """ASGI application: the evaluation endpoints here, every other request to `fallback`."""

    def __init__(self, fallback: ASGIApp) -> None:
        """Reads the settings once: a settings change takes a restart, as for Django's
        middleware, which reads them when it is built."""
        self.fallback = fallback
        self.limiter = throttling.evaluation_limiter()
        self.cors_paths = re.compile(getattr(settings, "CORS_URLS_REGEX", r"^.*$"))
        self.envelopes = {secure: _envelope(secure) for secure in (False, True)}
        self.ssl_redirect = bool(settings.SECURE_SSL_REDIRECT)
        self.proxy_ssl = _proxy_ssl_header()
        self.hosts: dict[str, bool] = {}
        # corsheaders' answer per (method, origin, private-network ask): every path served
        # here matches CORS_URLS_REGEX, and its settings are read once, as for the hosts.
        self.cors: dict[tuple[str, str, str], list[tuple[bytes, bytes]]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        served = route(scope["path"]) if scope["type"] == "http" else None
        if served is None:
            await self.fallback(scope, receive, send)
            return
        headers = _headers(scope)
        if not self._ours(scope, headers):
            await self.fallback(scope, receive, send)
            return
        started = time.perf_counter()
        name, answer = served
        method: str = scope["method"]
        if method == "OPTIONS":
            await self._preflight(scope, headers, send, name, started)
            return
        body = await _body(receive, headers) if method == "POST" else b""
        request = Request(method, headers, body)
        request_id = requestlog.request_id(headers.get("x-request-id", ""))
        path: str = scope["path"]
        admitted = False
        try:
            with failures.on_event_loop():
                refusal = throttling.refusal(self.limiter, path, headers)
                admitted = True
                reply = refusal or self._answer(path, request, answer, request_id, admitted=True)
        except (failures.WouldBlock, SynchronousOnlyOperation):
            # Redone from the step that would have waited: the key is counted once.
            reply = await sync_to_async(self._in_thread, thread_sensitive=True)(
                path, request, answer, request_id, admitted=admitted
            )
        status = reply.status if isinstance(reply, Answer) else reply.status_code
        envelope = self.envelopes[self._secure(scope, headers)]
        if "origin" in headers:
            envelope = [*self._cors(method, path, headers), *envelope]
        await _send(send, reply, envelope, request_id)
        requestlog.record(
            route=name,
            method=method,
            path=path,
            status=status,
            seconds=time.perf_counter() - started,
            request_id=request_id,
        )

    async def _preflight(
        self, scope: Scope, headers: dict[str, str], send: Send, name: str, started: float
    ) -> None:
        """corsheaders' empty answer to a preflight, which Django gives before the rate limit
        and the inner middleware (so with the security headers but no X-Frame-Options)."""
        request_id = requestlog.request_id(headers.get("x-request-id", ""))
        path: str = scope["path"]
        envelope = [
            *self._cors("OPTIONS", path, headers),
            *(
                h
                for h in self.envelopes[self._secure(scope, headers)]
                if h[0] != b"x-frame-options"
            ),
        ]
        await _send(send, Answer(200, b"", content_type=None), envelope, request_id)
        requestlog.record(
            route=name,
            method="OPTIONS",
            path=path,
            status=200,
            seconds=time.perf_counter() - started,
            request_id=request_id,
        )

    def _cors(self, method: str, path: str, headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
        key = (
            method,
            headers.get("origin", ""),
            headers.get("access-control-request-private-network", ""),
        )
        known = self.cors.get(key)
        if known is None:
            if len(self.cors) > 1000:
                self.cors.clear()  # bounded, whatever origins clients send
            known = self.cors[key] = _cors_headers(method, path, headers)
        return known

    def _ours(self, scope: Scope, headers: dict[str, str]) -> bool:
        """Whether this router may answer: else Django does, with everything it would do."""
        method = scope["method"]
        preflight = method == "OPTIONS" and "access-control-request-method" in headers
        if method not in ("POST", "GET") and not preflight:
            return False  # HEAD, another method: Django's 405
        if b"%" in scope.get("raw_path", b"") or not self.cors_paths.match(scope["path"]):
            return False
        if self.ssl_redirect and not self._secure(scope, headers):
            return False
        host = headers.get("host", "")
        allowed = self.hosts.get(host)
        if allowed is None:
            if len(self.hosts) > 1000:
                self.hosts.clear()  # bounded, whatever hosts clients send
            allowed = self.hosts[host] = _host_allowed(headers)
        return allowed

    def _secure(self, scope: Scope, headers: dict[str, str]) -> bool:
        """Django's `request.is_secure()`: the proxy's header when trusted, else the scheme."""
        if self.proxy_ssl is not None:
            name, secure_value = self.proxy_ssl
            value = headers.get(name)
            if value is not None:
                return value.split(",", 1)[0].strip() == secure_value
        return scope.get("scheme") == "https"

    def _in_thread(self, *args: Any, **kwargs: Any) -> Answer | HttpResponse:
        """`_answer` with a request's signals around it, as Django's handler sends them: they
        close a database connection that is too old or broken (after an outage, say)."""
        request_started.send(sender=self.__class__)
        try:
            return self._answer(*args, **kwargs)
        finally:
            request_finished.send(sender=self.__class__)

    def _answer(
        self,
        path: str,
        request: Request,
        answer: Callable[[Request], Answer],
        request_id: str,
        *,
        admitted: bool,
    ) -> Answer | HttpResponse:
        if not admitted:
            refusal = throttling.refusal(self.limiter, path, request.headers)
            if refusal is not None:
                return refusal
        try:
            return answer(request)
        except (failures.WouldBlock, SynchronousOnlyOperation):
            raise
        except Exception as error:
            response = failures.exception_response(path, request_id, error)
            if response is None:  # never under /api/ and /ofrep/
                raise
            return response


# Only its header logic is used: the answer it would wrap is this router's.
_CORS = CorsMiddleware(lambda request: HttpResponse())


def _cors_headers(method: str, path: str, headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    """The Access-Control-* headers corsheaders gives this request (none for an origin it
    does not allow). Its `Vary: origin` is in every answer's envelope already."""
    request = SimpleNamespace(method=method, path_info=path, headers=headers)
    response = HttpResponse()
    _CORS.add_response_headers(request, response)  # type: ignore[arg-type]  # duck-typed
    return [
        (name.lower().encode(), value.encode("latin-1"))
        for name, value in response.items()
        if name.lower().startswith("access-control-")
    ]


def _headers(scope: Scope) -> dict[str, str]:
    """Lower-case names; a repeated header is joined with commas (as the WSGI door does)."""
    raw = scope["headers"]
    # ASGI servers give the names in lower case; the commonest request repeats none.
    headers = {name.decode("latin-1"): value.decode("latin-1") for name, value in raw}
    names = "".join(headers)
    if len(headers) == len(raw) and names == names.lower():
        return headers
    headers = {}
    for raw_name, raw_value in raw:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return headers


def _host_allowed(headers: dict[str, str]) -> bool:
    if settings.USE_X_FORWARDED_HOST and "x-forwarded-host" in headers:
        return False
    host = headers.get("host")
    if not host:
        return False
    domain, _ = split_domain_port(host)
    allowed = settings.ALLOWED_HOSTS
    if settings.DEBUG and not allowed:
        allowed = [".localhost", "127.0.0.1", "[::1]"]
    return bool(domain) and validate_host(domain, allowed)


def _proxy_ssl_header() -> tuple[str, str] | None:
    """SECURE_PROXY_SSL_HEADER as (a lower-case header name, the value that means HTTPS)."""
    proxy = settings.SECURE_PROXY_SSL_HEADER
    if proxy is None:
        return None
    name, secure_value = proxy
    return name.removeprefix("HTTP_").replace("_", "-").lower(), secure_value


def _envelope(secure: bool) -> list[tuple[bytes, bytes]]:
    """The headers Django's middleware adds to an evaluation answer without an Origin:
    SecurityMiddleware's, XFrameOptionsMiddleware's, and corsheaders' `Vary`."""
    headers = []
    if secure and settings.SECURE_HSTS_SECONDS:
        value = f"max-age={settings.SECURE_HSTS_SECONDS}"
        if settings.SECURE_HSTS_INCLUDE_SUBDOMAINS:
            value += "; includeSubDomains"
        if settings.SECURE_HSTS_PRELOAD:
            value += "; preload"
        headers.append((b"strict-transport-security", value.encode()))
    if settings.SECURE_CONTENT_TYPE_NOSNIFF:
        headers.append((b"x-content-type-options", b"nosniff"))
    policy = settings.SECURE_REFERRER_POLICY
    if policy:
        parts = policy.split(",") if isinstance(policy, str) else policy
        headers.append((b"referrer-policy", ",".join(part.strip() for part in parts).encode()))
    if settings.SECURE_CROSS_ORIGIN_OPENER_POLICY:
        headers.append(
            (b"cross-origin-opener-policy", settings.SECURE_CROSS_ORIGIN_OPENER_POLICY.encode())
        )
    headers.append((b"vary", b"origin"))
    headers.append(
        (b"x-frame-options", getattr(settings, "X_FRAME_OPTIONS", "DENY").upper().encode())
    )
    return headers


async def _body(receive: Receive, headers: dict[str, str]) -> bytes:
    """The body, cut at MAX_BODY_BYTES + 1 (the answer is then a 413), as Django's door."""
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        return b"x" * (MAX_BODY_BYTES + 1)
    chunks = []
    size = 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if size > MAX_BODY_BYTES or not message.get("more_body", False):
            break
    body = b"".join(chunks)
    return body[: MAX_BODY_BYTES + 1]


async def _send(
    send: Send, reply: Answer | HttpResponse, envelope: list[tuple[bytes, bytes]], request_id: str
) -> None:
    if isinstance(reply, Answer):
        status, body = reply.status, reply.body
        content_type = reply.content_type.encode() if reply.content_type else _DEFAULT_TYPE
        headers = [(b"content-type", content_type)]
        headers.extend(
            (name.lower().encode(), value.encode("latin-1")) for name, value in reply.headers
        )
    else:
        status, body = reply.status_code, reply.content
        headers = [
            (name.lower().encode(), value.encode("latin-1")) for name, value in reply.items()
        ]
    headers.append((b"content-length", str(len(body)).encode()))
    headers.extend(envelope)
    headers.append((b"x-request-id", request_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
