"""The cache that login lockouts and API rate limits count in: shared, or local while it is away.

Counts belong in the shared cache (Redis) so that they hold across workers and instances.
When Redis is unreachable, a limit that raised would turn every login and every management
request into a 500, and a limit that let everything through would open the door to a login
flood exactly when the operator is busy. So each operation falls back to this process's own
memory: limits still hold per process until Redis returns, and the log gets one line when the
shared cache goes away and one when it comes back.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from django.core.cache import caches
from django.core.cache.backends.base import DEFAULT_TIMEOUT, BaseCache
from django.core.cache.backends.locmem import LocMemCache

log = logging.getLogger(__name__)

# After a failure the shared cache is left alone this long, so a dead Redis costs one
# connection timeout per interval, not one per login attempt.
RETRY_SECONDS = 5.0


class _SharedCacheState:
    """Whether the shared cache is failing, for the whole process.

    Django makes one cache object per thread, so this state lives beside them, not in them:
    one log line per process and change of state, however many threads notice.
    """

    def __init__(self) -> None:
        self.failed_at: float | None = None
        self.lock = threading.Lock()


_state = _SharedCacheState()


class FallbackCache(BaseCache):
    """Delegates to the cache alias named in LOCATION; to process memory while it fails."""

    def __init__(self, location: str, params: dict[str, Any]) -> None:
        super().__init__(params)
        self._primary_alias = location or "default"
        # Every LocMemCache of one name shares its memory: one set of counts per process.
        self._local = LocMemCache("flags-limits-fallback", params)

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        failed_at = _state.failed_at
        if failed_at is None or time.monotonic() - failed_at >= RETRY_SECONDS:
            try:
                result = getattr(caches[self._primary_alias], name)(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - any failure of the shared cache
                self._note_failure(error)
            else:
                self._note_success()
                return result
        return getattr(self._local, name)(*args, **kwargs)

    def _note_failure(self, error: Exception) -> None:
        with _state.lock:
            if _state.failed_at is None:
                log.warning(
                    "shared cache unavailable for login and rate limits, counting per process: %s",
                    type(error).__name__,
                )
            _state.failed_at = time.monotonic()

    def _note_success(self) -> None:
        if _state.failed_at is None:
            return
        with _state.lock:
            if _state.failed_at is not None:
                log.info("shared cache available again for login and rate limits")
                _state.failed_at = None

    def get(self, key: str, default: Any = None, version: int | None = None) -> Any:
        return self._call("get", key, default=default, version=version)

    def set(
        self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> None:
        self._call("set", key, value, timeout=timeout, version=version)

    def add(
        self, key: str, value: Any, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None
    ) -> bool:
        return self._call("add", key, value, timeout=timeout, version=version)

    def incr(self, key: str, delta: int = 1, version: int | None = None) -> int:
        return self._call("incr", key, delta=delta, version=version)

    def touch(self, key: str, timeout: Any = DEFAULT_TIMEOUT, version: int | None = None) -> bool:
        return self._call("touch", key, timeout=timeout, version=version)

    def delete(self, key: str, version: int | None = None) -> bool:
        return self._call("delete", key, version=version)

    def has_key(self, key: str, version: int | None = None) -> bool:
        return self._call("has_key", key, version=version)

    def clear(self) -> None:
        # Only the local counts: clearing the shared cache would flush every key it holds.
        self._local.clear()
