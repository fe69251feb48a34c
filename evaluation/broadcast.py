"""Change notifications across processes: Redis pub/sub out, per-process fan-out to streams.

A committed change raises the environment's version (evaluation.cache) and is published on
the Redis channel `{CACHE_PREFIX}:changes`. Every server process runs one `Broadcaster` in
its event loop: it listens on that channel, marks the process's compiled snapshot stale and
wakes the event streams of that environment. As a safety net, and as the only path when
Redis is absent or down, it also re-reads the version of every environment with open
streams every `POLL_SECONDS` (fast) or `SAFETY_POLL_SECONDS` (while pub/sub is healthy).
Versions only ever move forward, so a notification that arrives twice or late is harmless.

On shutdown (flagsite.gunicorn's worker, before it waits for connections to finish)
`close_streams` asks every open stream to end, so a restart is not held up by them and
their clients reconnect, with `Last-Event-ID`, to a process that is staying.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time

from asgiref.sync import sync_to_async
from django.conf import settings

from evaluation import cache, keys
from flagsite.failures import StoreUnavailable

log = logging.getLogger(__name__)

# What a stream's queue receives when the process shuts down: end the stream now.
CLOSE: tuple[int, float | None] = (-1, None)
POLL_SECONDS = 1.0
SAFETY_POLL_SECONDS = 10.0
RECONNECT_SECONDS = (0.2, 0.5, 1.0, 2.0, 5.0)


def environments_changed(versions: dict[int, int]) -> None:
    """After a commit: raise the cached versions, then tell every process and stream."""
    cache.environments_changed(versions)
    publish(versions)


def publish(versions: dict[int, int]) -> None:
    """After a commit (any thread): tell every process, this one included."""
    changed_at = time.time()
    if settings.REDIS_URL:
        from django_redis import get_redis_connection

        try:
            connection = get_redis_connection("default")
            for environment_id, version in versions.items():
                message = {"environment": environment_id, "version": version, "at": changed_at}
                connection.publish(keys.changes_channel(), json.dumps(message))
        except Exception as error:  # the pollers pick the change up instead
            log.warning("could not publish a change: %s", error)
    broadcaster = Broadcaster.current
    if broadcaster is not None:
        for environment_id, version in versions.items():
            broadcaster.announce_threadsafe(environment_id, version, changed_at)


class Broadcaster:
    """One per process: who listens to which environment, and what they last heard."""

    current: Broadcaster | None = None
    _start_lock = threading.Lock()

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        # Each queue receives (version, epoch seconds of the change, or None when polled).
        self.subscribers: dict[int, set[asyncio.Queue[tuple[int, float | None]]]] = {}
        self.known: dict[int, int] = {}
        self.pubsub_healthy = False
        self.closing = False
        self.tasks: list[asyncio.Task] = []

    # --- lifecycle ----------------------------------------------------------------------

    @classmethod
    def ensure_started(cls) -> Broadcaster:
        """The running loop's broadcaster, started on first use."""
        loop = asyncio.get_running_loop()
        with cls._start_lock:
            if cls.current is None or cls.current.loop is not loop:
                cls.current = cls(loop)
                cls.current.start()
        return cls.current

    def start(self) -> None:
        if settings.REDIS_URL:
            self.tasks.append(self.loop.create_task(self._listen()))
        self.tasks.append(self.loop.create_task(self._poll()))

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if Broadcaster.current is self:
            Broadcaster.current = None

    # --- subscriptions ------------------------------------------------------------------

    def subscribe(self, environment_id: int, version: int) -> asyncio.Queue:
        queue: asyncio.Queue[tuple[int, float | None]] = asyncio.Queue()
        self.subscribers.setdefault(environment_id, set()).add(queue)
        known = self.known.get(environment_id, 0)
        if known > version:
            # Heard of before this process serves it (its snapshot is being compiled): that
            # announcement will not come again, so this stream gets it now.
            queue.put_nowait((known, None))
        self.known[environment_id] = max(known, version)
        if self.closing:
            queue.put_nowait(CLOSE)
        return queue

    def unsubscribe(self, environment_id: int, queue: asyncio.Queue) -> None:
        queues = self.subscribers.get(environment_id)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self.subscribers[environment_id]

    def open_streams(self) -> int:
        return sum(len(queues) for queues in self.subscribers.values())

    def close_streams(self) -> int:
        """Shutting down: ask every open stream (and any opened from now on) to end."""
        self.closing = True
        queues = [queue for group in self.subscribers.values() for queue in group]
        for queue in queues:
            queue.put_nowait(CLOSE)
        return len(queues)

    # --- announcements ------------------------------------------------------------------

    def announce(self, environment_id: int, version: int, at: float | None = None) -> None:
        cache.mark_stale(environment_id)
        cache.refresh_soon(environment_id)
        if version <= self.known.get(environment_id, 0):
            return
        self.known[environment_id] = version
        for queue in self.subscribers.get(environment_id, ()):
            queue.put_nowait((version, at))

    def announce_threadsafe(self, environment_id: int, version: int, at: float) -> None:
        with contextlib.suppress(RuntimeError):  # the loop has closed
            self.loop.call_soon_threadsafe(self.announce, environment_id, version, at)

    # --- sources of announcements -------------------------------------------------------

    async def _listen(self) -> None:
        import redis.asyncio as redis

        attempt = 0
        while True:
            client = redis.Redis.from_url(settings.REDIS_URL, socket_connect_timeout=1)
            try:
                async with client.pubsub() as pubsub:
                    await pubsub.subscribe(keys.changes_channel())
                    if not self.pubsub_healthy:
                        log.info("listening for changes on Redis")
                    self.pubsub_healthy, attempt = True, 0
                    # Changes made while disconnected are caught up by the next poll.
                    await self._poll_once()
                    async for message in pubsub.listen():
                        if message.get("type") == "message":
                            self._announce_message(message["data"])
            except asyncio.CancelledError:
                raise
            except Exception as error:
                if self.pubsub_healthy:
                    log.warning("lost Redis pub/sub, polling every %ss: %s", POLL_SECONDS, error)
                self.pubsub_healthy = False
            finally:
                await client.aclose()
            await asyncio.sleep(RECONNECT_SECONDS[min(attempt, len(RECONNECT_SECONDS) - 1)])
            attempt += 1

    def _announce_message(self, data: bytes | str) -> None:
        try:
            change = json.loads(data)
            self.announce(int(change["environment"]), int(change["version"]), change.get("at"))
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed change message")

    async def _poll(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(POLL_SECONDS)
            if self.pubsub_healthy and time.monotonic() - last < SAFETY_POLL_SECONDS:
                continue
            last = time.monotonic()
            try:
                await self._poll_once()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("could not poll environment versions")

    async def _poll_once(self) -> None:
        for environment_id in list(self.subscribers):
            try:
                version = await sync_to_async(cache.current_version)(environment_id)
            except StoreUnavailable:  # logged once by flagsite.failures; the next poll retries
                continue
            if version is not None:
                self.announce(environment_id, version)
