"""A bounded load on a running cluster, and a record of every answer it got.

`Evaluations` runs a few threads that evaluate in turn through OFREP (single flag and
bulk), the native endpoint and the SDK document, each at a bounded rate; `Writes` creates
one flag after another through the management API. Both keep every outcome (when, status,
version or key) so a test or a benchmark can count what happened in any window.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

import httpx

# One INFO line per request would bury what a failing test has to say.
logging.getLogger("httpx").setLevel(logging.WARNING)

FLAG = "new-checkout"
CONTEXT = {"context": {"targetingKey": "user-1", "plan": "pro"}}


@dataclass(frozen=True, slots=True)
class Outcome:
    started: float  # time.monotonic() when the request was sent
    finished: float
    status: int  # 0: no HTTP answer at all (refused, reset, timed out)
    version: int | None = None  # evaluations: the snapshot version served
    detail: str = ""
    body: dict | None = None  # writes: the JSON answer

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


def _json(response: httpx.Response) -> dict | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


class _Loop:
    """A background thread doing one request after another, at most `rate` per second."""

    def __init__(self, rate: float) -> None:
        self.interval = 1.0 / rate
        self.outcomes: list[Outcome] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.thread.join(15)

    def _run(self) -> None:
        with httpx.Client(timeout=5) as client:
            turn = 0
            while not self._stop.is_set():
                started = time.monotonic()
                self.outcomes.append(self.once(client, turn))
                turn += 1
                self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def once(self, client: httpx.Client, turn: int) -> Outcome:
        raise NotImplementedError


class _Evaluator(_Loop):
    def __init__(self, urls: list[str], client_key: str, server_key: str, rate: float) -> None:
        super().__init__(rate)
        self.urls = urls
        self.client_key = {"Authorization": f"Bearer {client_key}"}
        self.server_key = {"X-API-Key": server_key}

    def once(self, client: httpx.Client, turn: int) -> Outcome:
        url = self.urls[turn % len(self.urls)]
        kind = turn % 4
        started = time.monotonic()
        try:
            if kind == 0:
                path = f"{url}/ofrep/v1/evaluate/flags/{FLAG}"
                response = client.post(path, json=CONTEXT, headers=self.client_key)
            elif kind == 1:
                path = f"{url}/ofrep/v1/evaluate/flags"
                response = client.post(path, json=CONTEXT, headers=self.client_key)
            elif kind == 2:
                path = f"{url}/api/v1/evaluate/{FLAG}"
                response = client.post(path, json=CONTEXT, headers=self.client_key)
            else:
                response = client.get(f"{url}/api/v1/sdk/flags", headers=self.server_key)
        except httpx.HTTPError as error:
            return Outcome(started, time.monotonic(), 0, detail=f"{type(error).__name__}")
        finished = time.monotonic()
        body = _json(response)
        detail = "" if response.is_success else response.text[:300]
        return Outcome(started, finished, response.status_code, _version(kind, body), detail)


def _version(kind: int, body: dict | None) -> int | None:
    if body is None:
        return None
    if kind in (0, 1):
        return body.get("metadata", {}).get("version")
    return body.get("version")


class Evaluations:
    """`threads` evaluators spread over the instances' URLs, `rate` requests/s each."""

    def __init__(
        self,
        urls: list[str],
        client_key: str,
        server_key: str,
        *,
        threads: int = 4,
        rate: float = 40,
    ) -> None:
        self.loops = [
            _Evaluator(urls[index % len(urls) :] + urls[: index % len(urls)], client_key,
                       server_key, rate)
            for index in range(threads)
        ]  # fmt: skip

    def __enter__(self) -> Evaluations:
        for loop in self.loops:
            loop.start()
        return self

    def __exit__(self, *exc) -> None:
        for loop in self.loops:
            loop.stop()

    @property
    def outcomes(self) -> list[Outcome]:
        return sorted((o for loop in self.loops for o in loop.outcomes), key=lambda o: o.started)

    def per_thread(self) -> list[list[Outcome]]:
        return [list(loop.outcomes) for loop in self.loops]


class Writes(_Loop):
    """Creates flags `{prefix}-0`, `{prefix}-1`, ... one after another, `rate` per second."""

    def __init__(self, url: str, token: str, prefix: str, rate: float = 4) -> None:
        super().__init__(rate)
        self.url = url
        self.headers = {"Authorization": f"Bearer {token}"}
        self.prefix = prefix
        self.paused = threading.Event()

    def once(self, client: httpx.Client, turn: int) -> Outcome:
        started = time.monotonic()
        if self.paused.is_set():
            return Outcome(started, started, -1)  # not sent
        key = f"{self.prefix}-{turn}"
        try:
            response = client.post(
                f"{self.url}/api/v1/projects/shop/flags", json={"key": key}, headers=self.headers
            )
        except httpx.HTTPError as error:
            return Outcome(started, time.monotonic(), 0, detail=type(error).__name__)
        body = _json(response)
        return Outcome(started, time.monotonic(), response.status_code, None, key, body)

    @property
    def sent(self) -> list[Outcome]:
        return [outcome for outcome in self.outcomes if outcome.status != -1]

    @property
    def acknowledged(self) -> set[str]:
        return {outcome.detail for outcome in self.sent if outcome.ok}


def stored_flags(url: str, token: str) -> set[str]:
    """Every flag key of the project `shop`, read back through the API."""
    keys: set[str] = set()
    offset = 0
    with httpx.Client(timeout=10, headers={"Authorization": f"Bearer {token}"}) as client:
        while True:
            response = client.get(
                f"{url}/api/v1/projects/shop/flags", params={"limit": 200, "offset": offset}
            )
            response.raise_for_status()
            page = response.json()
            keys |= {flag["key"] for flag in page["results"]}
            if not page.get("next"):
                return keys
            offset += 200


def environment_version(url: str, token: str, environment: str = "production") -> int:
    response = httpx.get(
        f"{url}/api/v1/projects/shop/environments",
        headers={"Authorization": f"Bearer {token}"},
        timeout=10,
    )
    response.raise_for_status()
    body = response.json()
    rows = body["results"] if isinstance(body, dict) else body
    return next(row["version"] for row in rows if row["key"] == environment)


def disruption_seconds(outcomes: list[Outcome]) -> float:
    """From the first failed request's start to the last one's end (0 when none failed)."""
    failed = [outcome for outcome in outcomes if not outcome.ok]
    if not failed:
        return 0.0
    return max(o.finished for o in failed) - min(o.started for o in failed)


def wait_until(predicate, timeout: float, step: float = 0.1) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if predicate():
            return time.monotonic() - started
        time.sleep(step)
    raise AssertionError(f"not within {timeout}s")
