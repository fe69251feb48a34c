"""The stream thread: follow `GET /api/v1/stream` and tell the updater what it announces.

The stream never carries documents, only "version N exists" (OFREP's refetchEvaluation);
the updater decides when to fetch. Whatever the server sends, this thread holds at most
`MAX_EVENT_BYTES` of it: a longer line or event drops the connection, which is then
reconnected after a back-off like any other loss. The back-off doubles from the first to
the longest `reconnect_delay` (with jitter), never below the server's `retry:` nor its
`Retry-After` (each capped at the longest delay), and starts over only after a connection
stayed up for `stream_healthy_after` seconds.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flagclient.transport import Session, retry_after

if TYPE_CHECKING:
    import httpx

    from flagclient.updates import Updater, UpdaterOptions

log = logging.getLogger("flagclient")

MAX_EVENT_BYTES = 64 * 1024  # our events are ~200 bytes; a line or event past this is hostile
REFUSED = (401, 403)
BUSY = (429, 503)


class StreamDropped(Exception):
    """The connection is given up (too long a line, silence, not an event stream...)."""


@dataclass(frozen=True)
class Event:
    type: str
    data: str


class EventParser:
    """Server-Sent Events from bytes, holding at most `max_bytes` of an unfinished event.

    The WHATWG rules: lines end in CRLF, LF or CR; `:` starts a comment; `data` lines
    join with newlines; a blank line dispatches the event; `retry` sets the reconnection
    time.
    """

    def __init__(self, max_bytes: int = MAX_EVENT_BYTES) -> None:
        self.max_bytes = max_bytes
        self.retry: float | None = None  # seconds, from the last `retry:` field
        self.lines = 0
        self._buffer = bytearray()
        self._skip_newline = False  # the last chunk ended in CR: a following LF is its pair
        self._data: list[str] = []
        self._size = 0
        self._type = ""

    def feed(self, chunk: bytes) -> Iterator[Event]:
        if self._skip_newline and chunk[:1] == b"\n":
            chunk = chunk[1:]
        self._skip_newline = False
        self._buffer += chunk
        start = 0
        buffer = self._buffer
        while True:
            end = _line_end(buffer, start)
            if end < 0:
                break
            line = bytes(buffer[start:end])
            if buffer[end] == 0x0D:  # CR: CRLF counts once
                if end + 1 < len(buffer):
                    start = end + 2 if buffer[end + 1] == 0x0A else end + 1
                else:
                    self._skip_newline, start = True, end + 1
            else:
                start = end + 1
            event = self._line(line)
            if event is not None:
                yield event
        del buffer[:start]
        if len(buffer) + self._size > self.max_bytes:
            raise StreamDropped(f"a line or event longer than {self.max_bytes:,} bytes")

    def _line(self, raw: bytes) -> Event | None:
        self.lines += 1
        if not raw:
            return self._dispatch()
        if raw[:1] == b":":
            return None
        name, _, value = raw.decode("utf-8", "replace").partition(":")
        value = value[1:] if value.startswith(" ") else value
        if name == "data":
            self._size += len(raw)
            if self._size > self.max_bytes:
                raise StreamDropped(f"an event longer than {self.max_bytes:,} bytes")
            self._data.append(value)
        elif name == "event":
            self._type = value
        elif name == "retry" and value.isascii() and value.isdigit():
            self.retry = int(value) / 1000
        return None

    def _dispatch(self) -> Event | None:
        data, kind = self._data, self._type
        self._data, self._size, self._type = [], 0, ""
        if not data:
            return None
        return Event(kind or "message", "\n".join(data))


def _line_end(buffer: bytearray, start: int) -> int:
    newline, carriage = buffer.find(b"\n", start), buffer.find(b"\r", start)
    if newline < 0:
        return carriage
    if carriage < 0:
        return newline
    return min(newline, carriage)


class Malformed(ValueError):
    pass


def announced_version(event: Event) -> int | None:
    """The version a refetchEvaluation event announces (None if it names none).

    Raises Malformed for anything else: other event types, data that is not a JSON object
    of type refetchEvaluation, a version that is not a whole number.
    """
    if event.type != "message":
        raise Malformed(f"unknown event type {event.type[:40]!r}")
    try:
        data = json.loads(event.data)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        raise Malformed("data is not JSON") from None
    if not isinstance(data, dict) or data.get("type") != "refetchEvaluation":
        raise Malformed("not a refetchEvaluation object")
    version = data.get("version")
    if version is None:
        return None
    if version.__class__ is not int or version < 0:
        raise Malformed("version is not a whole number")
    return version


class StreamFollower:
    """The stream thread of one client."""

    def __init__(self, updater: Updater, options: UpdaterOptions) -> None:
        self.updater = updater
        self.options = options
        self.stats = updater.stats
        self._stop = threading.Event()
        self._retry_hint = 0.0  # the server's `retry:`, in seconds
        self._session = Session(options.server_key, options.stream_url)
        self._thread = threading.Thread(target=self._run, name="flagclient-stream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._session.abort()

    def join(self, timeout: float) -> None:
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(max(0.0, timeout))
        self._session.close()

    def _run(self) -> None:
        first, longest = self.options.reconnect_delay
        delay = first
        while not self._stop.is_set():
            try:
                connected_for, at_least = self._follow()
            except Exception:  # noqa: BLE001 - a bug here must not stop the updates for good
                log.exception("flagclient: the stream thread failed; reconnecting")
                connected_for, at_least = None, longest
            if self._stop.is_set():
                return
            if connected_for is not None and connected_for >= self.options.stream_healthy_after:
                delay = first  # a healthy connection: the next loss starts the back-off over
            hint = min(self._retry_hint, longest)
            self._stop.wait(max(delay * random.uniform(0.5, 1.0), hint, at_least))
            delay = min(delay * 2, longest)

    def _follow(self) -> tuple[float | None, float]:
        """One connection: (seconds it was up, or None if it never was; the least pause)."""
        options = self.options
        headers = {"Accept": "text/event-stream"}
        version = self.updater.client.version
        if version is not None:
            headers["Last-Event-ID"] = str(version)
        connected_at: float | None = None
        try:
            with self._session.stream(
                options.stream_url,
                headers=headers,
                connect=options.timeout,
                read=options.stream_read_timeout,
            ) as response:
                at_least = self._check(response.status_code, response.headers)
                if at_least is not None:
                    return None, at_least
                connected_at = time.monotonic()
                self.stats["stream_connections"] += 1
                self.updater.stream_connected()
                self._read(response)
        except StreamDropped as exc:
            self.stats["streams_dropped"] += 1
            log.warning("flagclient: dropping the stream: %s", exc)
        except Exception as exc:  # noqa: BLE001 - any failure means: reconnect later
            if not self._stop.is_set():
                log.info("flagclient: stream closed: %s", exc)
        finally:
            if connected_at is not None:
                self.updater.stream_lost()
        if connected_at is None:
            return None, 0.0
        return time.monotonic() - connected_at, 0.0

    def _check(self, status: int, headers: httpx.Headers) -> float | None:
        """None if the stream is open; else the least pause before trying again."""
        if status == 200 and "text/event-stream" in headers.get("Content-Type", ""):
            return None
        if status in REFUSED:
            self.updater.refused(status, "stream")
            self._stop.set()
            return 0.0
        longest = self.options.reconnect_delay[1]
        log.info("flagclient: the stream answered %s (%s)", status, headers.get("Content-Type"))
        if status in BUSY:
            return min(retry_after(headers) or 0.0, longest)
        return 0.0

    def _read(self, response: httpx.Response) -> None:
        parser = EventParser()
        malformed_seen = False
        silence = self.options.stream_read_timeout
        last_line, lines = time.monotonic(), 0
        for chunk in response.iter_bytes():
            if self._stop.is_set():
                return
            for event in parser.feed(chunk):
                malformed_seen = self._handle(event, malformed_seen)
            if parser.retry is not None:
                self._retry_hint = parser.retry
            now = time.monotonic()
            if parser.lines != lines:
                last_line, lines = now, parser.lines
            elif now - last_line > silence:  # bytes trickle in, but never a whole line
                raise StreamDropped(f"no complete line in {silence:g} s")

    def _handle(self, event: Event, malformed_seen: bool) -> bool:
        """Pass a valid event to the updater; count a malformed one (logged once a stream)."""
        self.stats["events"] += 1
        try:
            version = announced_version(event)
        except Malformed as exc:
            self.stats["malformed_events"] += 1
            if not malformed_seen:
                log.warning("flagclient: ignoring a malformed stream event: %s", exc)
            return True
        self.updater.announce(version)
        return malformed_seen
