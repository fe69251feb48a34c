"""Test-only: the service that embeds the SDK, as the fault tests watch it.

`Caller` is a thread of that service evaluating flags as fast as it can while a test
breaks the server; it records what no caller should ever see (an exception, a value of the
wrong type, a call that blocked). `wait_for` polls a condition with a bound.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from flagclient import FlagClient

US = {"targetingKey": "user-1", "country": "US"}
# A call slower than this blocked on something (the machine is loaded: be generous).
BLOCKED = 0.5


def wait_for(predicate: Callable[[], object], timeout: float) -> float:
    """Seconds until `predicate()` held; fails after `timeout`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(0.01)
    return time.monotonic() - started


def sdk_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("flagclient") and t.is_alive()]


class Caller(threading.Thread):
    def __init__(self, client: FlagClient) -> None:
        super().__init__(name="service", daemon=True)
        self.client = client
        self.problems: list[object] = []
        self.calls = 0
        self.slowest = 0.0
        self._done = threading.Event()

    def run(self) -> None:
        client = self.client
        while not self._done.is_set():
            started = time.perf_counter()
            try:
                value = client.value("new-checkout", US, default=False)
                details = client.details("banner-text", US, default="?")
                everything = client.all(US)
                if value not in (True, False) or not isinstance(details.value, str):
                    self.problems.append((value, details))
                if not isinstance(everything, dict):
                    self.problems.append(everything)
            except BaseException as exc:  # noqa: BLE001 - exactly what must never happen
                self.problems.append(exc)
            self.slowest = max(self.slowest, time.perf_counter() - started)
            self.calls += 1
            time.sleep(0.0005)

    def __enter__(self) -> Caller:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self.join()
        assert self.problems == []
        assert self.calls > 0
        assert self.slowest < BLOCKED, f"an evaluation took {self.slowest:.3f} s"
