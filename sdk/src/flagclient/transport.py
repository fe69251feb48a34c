"""HTTP for the client's threads: a deadline on every request, a size cap, and an off switch.

httpx bounds each read, not a whole request, so a server sending one byte a second holds a
request for as long as it likes. Here the connection pool runs on a network backend (the
extension point httpcore documents) whose every connect, read and write waits at most what
is left of the current request's deadline; `abort()` shuts down every socket the session
has open, so stopping a thread never waits on the network.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import urllib.request
import weakref
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote, urlsplit

import httpcore
import httpx

USER_AGENT = "flagclient/0.1"


class TooLarge(Exception):
    """The body is larger than the caller's cap."""


@dataclass(frozen=True)
class Answer:
    """A complete response: status, headers and the whole body (within the cap)."""

    status: int
    headers: httpx.Headers
    body: bytes

    def retry_after(self, now: float | None = None) -> float | None:
        """`Retry-After` in seconds from now (delta-seconds or an HTTP date), if present."""
        return retry_after(self.headers, now)


def retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    raw = (headers.get("Retry-After") or "").strip()
    if not raw:
        return None
    if raw.isdigit():
        return float(raw)
    try:
        when = parsedate_to_datetime(raw).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class _Deadlines:
    """The deadline of the request each thread is making, and the session's off switch."""

    def __init__(self) -> None:
        self._local = threading.local()
        self.aborted = False

    def set(self, seconds: float | None) -> None:
        self._local.deadline = None if seconds is None else time.monotonic() + seconds

    def budget(self, timeout: float | None, error: type[Exception]) -> float | None:
        """`timeout`, cut to what is left of the deadline; `error` once nothing is left."""
        if self.aborted:
            raise error("the client is closing")
        deadline: float | None = getattr(self._local, "deadline", None)
        if deadline is None:
            return timeout
        left = deadline - time.monotonic()
        if left <= 0:
            raise error("the request's deadline passed")
        return left if timeout is None else min(timeout, left)


class _Stream(httpcore.NetworkStream):
    def __init__(self, inner: httpcore.NetworkStream, backend: _Backend) -> None:
        self._inner = inner
        self._backend = backend
        self._deadlines = backend.deadlines
        backend.track(self)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._deadlines.budget(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._deadlines.budget(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self, ssl_context: Any, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.NetworkStream:
        budget = self._deadlines.budget(timeout, httpcore.ConnectTimeout)
        return _Stream(self._inner.start_tls(ssl_context, server_hostname, budget), self._backend)

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)

    def shutdown(self) -> None:
        """Wake a read blocked on this socket (closing it from another thread may not)."""
        with contextlib.suppress(OSError, AttributeError):
            sock = self._inner.get_extra_info("socket")
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)


class _Backend(httpcore.NetworkBackend):
    def __init__(self) -> None:
        self.deadlines = _Deadlines()
        self._streams: weakref.WeakSet[_Stream] = weakref.WeakSet()
        self._lock = threading.Lock()

    def track(self, stream: _Stream) -> None:
        with self._lock:
            self._streams.add(stream)

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        budget = self.deadlines.budget(timeout, httpcore.ConnectTimeout)
        inner = httpcore.SyncBackend().connect_tcp(
            host, port, budget, local_address=local_address, socket_options=socket_options
        )
        stream = _Stream(inner, self)
        if self.deadlines.aborted:  # aborted while connecting: do not start talking
            stream.close()
            raise httpcore.ConnectError("the client is closing")
        return stream

    def abort(self) -> None:
        self.deadlines.aborted = True
        with self._lock:
            streams = list(self._streams)
        for stream in streams:
            stream.shutdown()


_ERRORS: tuple[tuple[type[Exception], type[httpx.TransportError]], ...] = (
    (httpcore.ConnectTimeout, httpx.ConnectTimeout),
    (httpcore.ReadTimeout, httpx.ReadTimeout),
    (httpcore.WriteTimeout, httpx.WriteTimeout),
    (httpcore.TimeoutException, httpx.TimeoutException),
    (httpcore.ConnectError, httpx.ConnectError),
    (httpcore.NetworkError, httpx.NetworkError),
    (httpcore.ProtocolError, httpx.ProtocolError),
    (httpcore.UnsupportedProtocol, httpx.UnsupportedProtocol),
)


@contextlib.contextmanager
def _httpx_errors() -> Iterator[None]:
    """httpcore's exceptions as httpx's, as httpx's own transport does."""
    try:
        yield
    except Exception as exc:
        for source, target in _ERRORS:
            if isinstance(exc, source):
                raise target(str(exc) or type(exc).__name__) from exc
        raise


class _Body(httpx.SyncByteStream):
    def __init__(self, stream: Iterable[bytes]) -> None:
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        with _httpx_errors():
            yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            with _httpx_errors():
                close()


class _Transport(httpx.BaseTransport):
    """httpx's default transport on the deadline backend, through `proxy` if one is set."""

    def __init__(self, backend: _Backend, proxy: str | None) -> None:
        pool: dict[str, Any] = {
            "ssl_context": httpx.create_ssl_context(),
            "max_connections": 4,
            "max_keepalive_connections": 2,
            "keepalive_expiry": 30.0,
            "network_backend": backend,
        }
        if proxy is None:
            self._pool: httpcore.ConnectionPool = httpcore.ConnectionPool(**pool)
            return
        parts = urlsplit(proxy)
        auth = (unquote(parts.username), unquote(parts.password or "")) if parts.username else None
        bare = parts._replace(netloc=parts.netloc.rpartition("@")[2]).geturl()
        self._pool = httpcore.HTTPProxy(proxy_url=bare, proxy_auth=auth, **pool)

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        core_request = httpcore.Request(
            method=request.method,
            url=httpcore.URL(
                scheme=request.url.raw_scheme,
                host=request.url.raw_host,
                port=request.url.port,
                target=request.url.raw_path,
            ),
            headers=request.headers.raw,
            content=request.stream,
            extensions=request.extensions,
        )
        with _httpx_errors():
            response = self._pool.handle_request(core_request)
        return httpx.Response(
            status_code=response.status,
            headers=response.headers,
            stream=_Body(response.stream),  # type: ignore[arg-type]
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._pool.close()


class Session:
    """One thread's HTTP client: requests with a total deadline, and `abort()`."""

    def __init__(self, server_key: str, url: str) -> None:
        self._backend = _Backend()
        self._client = httpx.Client(
            transport=_Transport(self._backend, proxy_for(url)),
            headers={"Authorization": f"Bearer {server_key}", "User-Agent": USER_AGENT},
        )

    def request(
        self,
        method: str,
        url: str,
        *,
        deadline: float,
        max_bytes: int,
        headers: Mapping[str, str] | None = None,
        json: Any = None,
    ) -> Answer:
        """The whole response within `deadline` seconds, from connect to last byte.

        Raises TooLarge past `max_bytes` of (decoded) body, and httpx's errors otherwise.
        """
        self._backend.deadlines.set(deadline)
        try:
            with self._client.stream(
                method, url, headers=headers, json=json, timeout=deadline
            ) as response:
                return Answer(response.status_code, response.headers, _body(response, max_bytes))
        finally:
            self._backend.deadlines.set(None)

    @contextlib.contextmanager
    def stream(
        self, url: str, *, headers: Mapping[str, str], connect: float, read: float
    ) -> Iterator[httpx.Response]:
        """A streaming GET: `connect` seconds until the headers, then `read` per read."""
        self._backend.deadlines.set(connect)
        try:
            with self._client.stream(
                "GET", url, headers=headers, timeout=httpx.Timeout(connect, read=read)
            ) as response:
                self._backend.deadlines.set(None)
                yield response
        finally:
            self._backend.deadlines.set(None)

    def abort(self) -> None:
        """Fail every request in flight at once, and every later one."""
        self._backend.abort()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def proxy_for(url: str) -> str | None:
    """The proxy `HTTP_PROXY` / `HTTPS_PROXY` name for `url`, unless `NO_PROXY` exempts it
    (what httpx does by itself with its own transport)."""
    parts = urlsplit(url)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if not proxy or not parts.hostname or urllib.request.proxy_bypass(parts.hostname):
        return None
    return proxy if "://" in proxy else f"http://{proxy}"


def _body(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("Content-Length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise TooLarge(f"{int(declared):,} bytes announced, the limit is {max_bytes:,}")
    body = bytearray()
    for chunk in response.iter_bytes():
        body += chunk
        if len(body) > max_bytes:
            raise TooLarge(f"more than {max_bytes:,} bytes, the limit")
    return bytes(body)
