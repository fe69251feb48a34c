"""Test-only: a flag server on loopback that misbehaves as each test tells it to.

`MisbehavingServer` answers the SDK's four endpoints with whatever function a test puts in
`server.document`, `server.stream`, `server.exposures` and `server.events` (each called as
`answer(server, request)`). The functions here write good answers, and every fault the SDK
must survive: bodies at one byte a second, lines that never end, garbage, floods, refusals
with `Retry-After`, connections that hang.
"""

from __future__ import annotations

import contextlib
import copy
import json
import queue
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from tests.sdk.documents import document
from tests.servers import free_port

DOCUMENT = "/api/v1/sdk/flags"
STREAM = "/api/v1/stream"
EXPOSURES = "/api/v1/sdk/exposures"
EVENTS = "/api/v1/sdk/events"

DROP = b"(close the stream)"

Answer = Callable[["MisbehavingServer", BaseHTTPRequestHandler], None]


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer

    def do_GET(self) -> None:
        self.server.owner.handle(self)

    do_POST = do_GET

    def log_message(self, *args: object) -> None:
        pass


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    owner: MisbehavingServer


class MisbehavingServer:
    def __init__(self, version: int = 7, port: int | None = None) -> None:
        self.doc = document(version)  # what `serve_document` serves
        self.document: Answer = serve_document
        self.stream: Answer = serve_stream
        self.exposures: Answer = accept_exposures
        self.events: Answer = accept_events
        self.tracked: list[dict] = []  # accepted events, in the order received
        self.first_exposures: list[dict] = []  # accepted first unit exposures
        self.event_posts = 0  # accepted posts to EVENTS
        self.heartbeat = 0.2  # seconds between comment lines on `serve_stream`
        self.port = port or free_port()
        self.hits: Counter[str] = Counter()
        self.times: defaultdict[str, list[float]] = defaultdict(list)
        self.received: Counter[tuple[str, str | None]] = Counter()  # accepted exposures
        self.posts: list[list[dict]] = []  # the exposure items of each accepted post
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._queues: list[queue.Queue[bytes]] = []
        self._sockets: set[socket.socket] = set()
        self._http: _HTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MisbehavingServer:
        self._http = _HTTPServer(("127.0.0.1", self.port), _Handler)
        self._http.owner = self
        threading.Thread(target=self._http.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        """Close the port and every open connection, as a crashed server would."""
        self.stopping.set()
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> MisbehavingServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        path = urlsplit(request.path).path
        with self._lock:
            self.hits[path] += 1
            self.times[path].append(time.monotonic())
            self._sockets.add(request.connection)
        answers = {
            DOCUMENT: self.document,
            STREAM: self.stream,
            EXPOSURES: self.exposures,
            EVENTS: self.events,
        }
        answer = answers.get(path, status(404))
        try:
            answer(self, request)
        except OSError:  # the client went away: that is its right
            request.close_connection = True

    def settle(self, quiet: float = 0.3, timeout: float = 5.0) -> int:
        """The number of requests once those already sent have arrived: a request a client
        sent just before it stopped may be accepted and read later (under load, much later).
        Waits until no request arrived for `quiet` seconds, `timeout` at most."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                total = sum(self.hits.values())
                latest = max(
                    (moments[-1] for moments in self.times.values() if moments), default=0.0
                )
            now = time.monotonic()
            if now - latest >= quiet or now >= deadline:
                return total
            time.sleep(min(quiet, 0.05))

    def publish(self, raw: bytes) -> None:
        """Send `raw` on every stream open with `serve_stream`."""
        with self._lock:
            for waiting in self._queues:
                waiting.put(raw)

    def drop_streams(self) -> None:
        """Close every stream open with `serve_stream` (a restart, a proxy timing out)."""
        self.publish(DROP)

    def change(self, version: int, *, announce: bool = True) -> None:
        """Serve the document at `version` (new-checkout flipped) and announce it."""
        changed = copy.deepcopy(self.doc)
        changed["version"] = version
        flag = changed["flags"]["new-checkout"]
        flag["enabled"] = not flag["enabled"]
        self.doc = changed
        if announce:
            self.publish(event(version))

    def hits_since(self, path: str, since: float) -> int:
        with self._lock:
            return sum(1 for moment in self.times[path] if moment >= since)

    def subscribe(self) -> queue.Queue[bytes]:
        waiting: queue.Queue[bytes] = queue.Queue()
        with self._lock:
            self._queues.append(waiting)
        return waiting

    def unsubscribe(self, waiting: queue.Queue[bytes]) -> None:
        with self._lock:
            self._queues.remove(waiting)


# --- writing answers ---------------------------------------------------------------------


def send(
    request: BaseHTTPRequestHandler,
    code: int,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
) -> None:
    request.send_response(code)
    for name, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
        request.send_header(name, value)
    request.end_headers()
    request.wfile.write(body)
    request.wfile.flush()


def event(version: int, **extra: object) -> bytes:
    data = {"type": "refetchEvaluation", "etag": f"1-{version}", "version": version, **extra}
    return f"id: {version}\nevent: message\ndata: {json.dumps(data)}\n\n".encode()


def _read_body(request: BaseHTTPRequestHandler) -> bytes:
    return request.rfile.read(int(request.headers.get("Content-Length") or 0))


# --- good answers ------------------------------------------------------------------------


def serve_document(server: MisbehavingServer, request: BaseHTTPRequestHandler) -> None:
    doc = server.doc
    etag = f'"1-{doc["version"]}"'
    if request.headers.get("If-None-Match") == etag:
        send(request, 304, headers={"ETag": etag})
        return
    body = json.dumps(doc).encode()
    send(request, 200, body, {"Content-Type": "application/json", "ETag": etag})


def open_stream(request: BaseHTTPRequestHandler, first: bytes = b"") -> None:
    request.close_connection = True
    request.send_response(200)
    request.send_header("Content-Type", "text/event-stream")
    request.send_header("Connection", "close")
    request.end_headers()
    request.wfile.write(first)
    request.wfile.flush()


def serve_stream(server: MisbehavingServer, request: BaseHTTPRequestHandler) -> None:
    """What `publish` sends, with a comment line every `server.heartbeat` seconds."""
    waiting = server.subscribe()
    try:
        open_stream(request, b": connected\n\n")
        while not server.stopping.is_set():
            try:
                raw = waiting.get(timeout=server.heartbeat)
            except queue.Empty:
                raw = b": heartbeat\n\n"
            if raw is DROP:
                return
            request.wfile.write(raw)
            request.wfile.flush()
    finally:
        server.unsubscribe(waiting)


def accept_exposures(server: MisbehavingServer, request: BaseHTTPRequestHandler) -> None:
    items = json.loads(_read_body(request))["exposures"]
    with server._lock:
        for item in items:
            server.received[(item["flag"], item["variant"])] += item["count"]
        server.posts.append(items)
    send(request, 202, b'{"accepted": %d}' % len(items), {"Content-Type": "application/json"})


def accept_events(server: MisbehavingServer, request: BaseHTTPRequestHandler) -> None:
    body = json.loads(_read_body(request))
    with server._lock:
        server.tracked.extend(body.get("events", []))
        server.first_exposures.extend(body.get("firstExposures", []))
        server.event_posts += 1
    send(request, 202, b'{"accepted": 1}', {"Content-Type": "application/json"})


# --- faults ------------------------------------------------------------------------------


def status(code: int, headers: dict[str, str] | None = None) -> Answer:
    """Answer `code` with a small JSON body (and `headers`, such as Retry-After)."""

    def answer(server: MisbehavingServer, request: BaseHTTPRequestHandler) -> None:
        _read_body(request)
        send(
            request,
            code,
            b'{"error": "nope"}',
            {"Content-Type": "application/json", **(headers or {})},
        )

    return answer


def hang(server: MisbehavingServer, request: BaseHTTPRequestHandler) -> None:
    """Read the request, answer nothing until the server stops."""
    _read_body(request)
    server.stopping.wait()


def trickle(bytes_per_second: float, *, headers_too: bool = False) -> Answer:
    """The document at `bytes_per_second`: the whole answer, or only its body."""

    def answer(server: MisbehavingServer, request: BaseHTTPRequestHandler) -> None:
        body = json.dumps(server.doc).encode()
        head = (
            f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        slow = head + body if headers_too else body
        if not headers_too:
            request.wfile.write(head)
            request.wfile.flush()
        for byte in slow:
            if server.stopping.wait(1 / bytes_per_second):
                return
            request.wfile.write(bytes([byte]))
            request.wfile.flush()

    return answer


def large_document(size: int, *, declared: bool) -> Answer:
    """A valid document of `size` bytes (padded metadata), with or without Content-Length."""

    def answer(server: MisbehavingServer, request: BaseHTTPRequestHandler) -> None:
        doc = copy.deepcopy(server.doc)
        doc["version"] += 1
        head, tail = json.dumps(doc).encode().rsplit(b"}", 1)
        prefix = head + b', "padding": "'
        suffix = b'"}' + tail
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        if declared:
            request.send_header("Content-Length", str(size))
        else:
            request.close_connection = True
            request.send_header("Connection", "close")
        request.end_headers()
        request.wfile.write(prefix)
        chunk = b"x" * 65536
        left = size - len(prefix) - len(suffix)
        while left > 0:
            request.wfile.write(chunk[:left])
            left -= len(chunk)
        request.wfile.write(suffix)
        request.wfile.flush()

    return answer


def endless_line(server: MisbehavingServer, request: BaseHTTPRequestHandler) -> None:
    """An event stream whose first line never ends."""
    open_stream(request, b"data: ")
    chunk = b"x" * 65536
    while not server.stopping.is_set():
        request.wfile.write(chunk)
        request.wfile.flush()


def endless_event(server: MisbehavingServer, request: BaseHTTPRequestHandler) -> None:
    """An event stream whose first event never ends: short data lines, never a blank one."""
    open_stream(request)
    line = b"data: " + b"y" * 1000 + b"\n"
    while not server.stopping.is_set():
        request.wfile.write(line * 64)
        request.wfile.flush()


def stream_of(raw: bytes, *, then: str = "close") -> Answer:
    """An event stream that sends `raw`, then closes (or, with then="hold", stays silent)."""

    def answer(server: MisbehavingServer, request: BaseHTTPRequestHandler) -> None:
        open_stream(request, raw)
        if then == "hold":
            server.stopping.wait()

    return answer


def silent_stream(server: MisbehavingServer, request: BaseHTTPRequestHandler) -> None:
    """Headers, then nothing at all."""
    open_stream(request)
    server.stopping.wait()


def dribble(server: MisbehavingServer, request: BaseHTTPRequestHandler) -> None:
    """An event stream that sends a byte every 50 ms and never finishes a line."""
    open_stream(request, b": ")
    while not server.stopping.wait(0.05):
        request.wfile.write(b"z")
        request.wfile.flush()
