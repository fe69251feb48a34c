"""The client's background thread: download the document, follow the stream, else poll.

One thread does everything, so there is never more than one request for the document in
flight and snapshots are installed in the order they were fetched. The stream only says
"something changed, here is the new version"; the document itself always comes from
`GET /api/v1/sdk/flags` with `If-None-Match`, so a missed or repeated event costs one
cheap 304 at most.
"""

from __future__ import annotations

import json
import logging
import random
import socket
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import httpx

if TYPE_CHECKING:
    from flagclient.client import FlagClient

log = logging.getLogger("flagclient")

USER_AGENT = "flagclient/0.1"
# After an event, the instance answering the refetch may not have seen the change yet
# (instances learn of it by pub/sub): retry a few times before waiting for the next poll.
CATCH_UP_DELAYS = (0.05, 0.1, 0.2, 0.4, 0.8)


@dataclass(frozen=True)
class UpdaterOptions:
    url: str
    server_key: str
    streaming: bool
    stream_url: str
    poll_interval: float
    reconnect_delay: tuple[float, float]
    timeout: float
    stream_read_timeout: float


class StreamUnavailable(Exception):
    """The stream answered, but not with events (404 on an old server, 401, 5xx ...)."""


class Updater:
    def __init__(self, client: FlagClient, options: UpdaterOptions) -> None:
        self.client = client
        self.options = options
        self._stop = threading.Event()
        self._etag: str | None = None
        self._next_poll = 0.0
        self._retry_hint: float | None = None
        self._stream_response: httpx.Response | None = None
        self._http = httpx.Client(
            headers={"Authorization": f"Bearer {options.server_key}", "User-Agent": USER_AGENT},
            timeout=options.timeout,
        )
        self._thread = threading.Thread(target=self._run, name="flagclient", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._interrupt_stream()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)
        self._http.close()

    # --- the loop -------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._refresh()
            delay = self.options.reconnect_delay[0]
            while not self._stop.is_set():
                if not self.options.streaming:
                    self._wait_polling(self.options.poll_interval)
                    continue
                connected = self._listen()
                if self._stop.is_set():
                    return
                if connected:
                    delay = self.options.reconnect_delay[0]  # the stream worked: start over
                self._refresh()  # the stream is down: do not wait for the poll to catch up
                pause = max(delay * random.uniform(0.5, 1.0), self._retry_hint or 0.0)
                self._wait_polling(pause)
                delay = min(delay * 2, self.options.reconnect_delay[1])
        except Exception:  # noqa: BLE001 - a bug here must not take the host process down
            log.exception("flagclient: the update thread stopped")

    def _wait_polling(self, seconds: float) -> None:
        """Sleep `seconds`, polling the document whenever the poll interval comes round."""
        until = time.monotonic() + seconds
        while not self._stop.is_set():
            now = time.monotonic()
            if now >= self._next_poll:
                self._refresh()
                continue
            if now >= until:
                return
            self._stop.wait(min(until, self._next_poll) - now)

    # --- the document ---------------------------------------------------------------------

    def _refresh(self, at_least: int | None = None) -> bool:
        """Fetch the document if changed (ETag); True if the server answered."""
        self._next_poll = time.monotonic() + self.options.poll_interval
        try:
            headers = {"If-None-Match": self._etag} if self._etag else {}
            response = self._http.get(f"{self.options.url}/api/v1/sdk/flags", headers=headers)
            if response.status_code != 304:
                response.raise_for_status()
                if self.client._install(response.json()):
                    self._etag = response.headers.get("ETag")
        except Exception as exc:  # noqa: BLE001 - any failure: keep the last snapshot
            log.warning("flagclient: could not fetch the flag document: %s", exc)
            self.client._mark(stale=True)
            return False
        self.client._mark(stale=False)
        return True

    def _catch_up(self, version: int) -> None:
        for pause in CATCH_UP_DELAYS:
            if not self._refresh() or (self.client.version or 0) >= version:
                return
            if self._stop.wait(pause):
                return

    # --- the stream -----------------------------------------------------------------------

    def _listen(self) -> bool:
        """Follow the stream until it ends or fails; True if it was connected at all."""
        options = self.options
        timeout = httpx.Timeout(options.timeout, read=options.stream_read_timeout)
        headers = {"Accept": "text/event-stream"}
        if self.client.version is not None:
            headers["Last-Event-ID"] = str(self.client.version)
        connected = False
        try:
            with self._http.stream(
                "GET", options.stream_url, headers=headers, timeout=timeout
            ) as response:
                if response.status_code != 200:
                    raise StreamUnavailable(f"the stream answered {response.status_code}")
                self._stream_response = response
                connected = True
                self._catch_up(0)  # changes made while we were not listening
                for event in self._events(response):
                    version = event.get("version")
                    if isinstance(version, int) and version > (self.client.version or -1):
                        self._catch_up(version)
        except Exception as exc:  # noqa: BLE001 - any failure means: reconnect later
            if not self._stop.is_set():
                log.info("flagclient: stream closed: %s", exc)
        finally:
            self._stream_response = None
        return connected

    def _events(self, response: httpx.Response):
        data: list[str] = []
        for line in response.iter_lines():
            if self._stop.is_set():
                return
            if line.startswith(":"):
                continue
            if not line:
                if data:
                    yield _parse(data)
                data = []
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "data":
                data.append(value)
            elif field == "retry" and value.isdigit():
                self._retry_hint = int(value) / 1000

    def _interrupt_stream(self) -> None:
        """Wake a read blocked on the stream (closing a socket from another thread may not)."""
        response = self._stream_response
        if response is None:
            return
        try:
            stream = response.extensions.get("network_stream")
            sock = stream.get_extra_info("socket") if stream is not None else None
            if sock is not None:
                sock.shutdown(socket.SHUT_RDWR)
        except (OSError, AttributeError):
            pass


def _parse(data: list[str]) -> dict:
    try:
        event = json.loads("\n".join(data))
    except ValueError:
        return {}
    return event if isinstance(event, dict) else {}
