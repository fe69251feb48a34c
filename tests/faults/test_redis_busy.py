"""SDK ingestion while Redis is busy: a script (or a long command) past Redis's
`busy-reply-threshold` makes it answer every other client `BUSY` until it ends.

A redis-server of the test's own is made busy by a script that spins for a few seconds,
while threads post events and exposure counts and fetch the SDK document of one production
instance (gunicorn, 2 uvicorn workers). Every answer is counted: each is a 2xx, or a 503
JSON naming the cache with a Retry-After; none is a 500.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

import httpx
import pytest
import redis as redis_client

from tests.servers import Cluster, PrivateRedis

pytestmark = pytest.mark.server
logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request buries the rest

WORKERS = 2
BUSY_SECONDS = 3.0
# Spins on the server's clock: nothing else is served until it returns.
SPIN = """
local start = redis.call('TIME')
while true do
  local now = redis.call('TIME')
  if (now[1] - start[1]) + (now[2] - start[2]) / 1e6 > tonumber(ARGV[1]) then return 1 end
end
"""


@pytest.fixture(scope="module")
def redis():
    with PrivateRedis() as server:
        yield server


@pytest.fixture(scope="module")
def cluster(redis):
    with Cluster(
        instances=1,
        redis_url=redis.url,
        workers=WORKERS,
        production=True,
        extra_env={"LOG_LEVEL": "WARNING"},
    ) as running:
        running.wait_for_workers(0, WORKERS)
        yield running


def _requests(url: str, key: str, kind: int, n: int) -> tuple[str, str, dict]:
    if kind == 0:
        body = {"events": [{"event": "purchase", "targetingKey": f"u{n}", "value": 1}]}
        return "POST", f"{url}/api/v1/sdk/events", body
    if kind == 1:
        count = {"flag": "new-checkout", "variant": "on", "reason": "STATIC", "count": 1}
        return "POST", f"{url}/api/v1/sdk/exposures", {"exposures": [count]}
    return "GET", f"{url}/api/v1/sdk/flags", {}


class Posters:
    """Threads sending events, exposure counts and document fetches; every answer kept."""

    def __init__(self, url: str, key: str) -> None:
        self.answers: list[tuple[float, str, int, httpx.Response | None]] = []
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._run, args=(url, key, kind)) for kind in range(3)
        ]

    def _run(self, url: str, key: str, kind: int) -> None:
        with httpx.Client(timeout=15, headers={"X-API-Key": key}) as client:
            n = 0
            while not self._stop.is_set():
                method, path, body = _requests(url, key, kind, n)
                started = time.monotonic()
                try:
                    response = client.request(method, path, json=body or None)
                except httpx.HTTPError:
                    response = None
                self.answers.append((started, path.rsplit("/", 1)[-1], kind, response))
                n += 1
                self._stop.wait(0.02)

    def __enter__(self) -> Posters:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)


def test_sdk_ingestion_answers_2xx_or_503_while_redis_is_busy_never_500(cluster, redis):
    store = redis_client.Redis.from_url(redis.url, socket_timeout=60)
    # Redis answers BUSY after this long; production's default (5 s) would only make it slower.
    store.config_set("busy-reply-threshold", 500)
    with Posters(cluster.url(0), cluster.seed["server_key"]) as posters:
        time.sleep(1.5)
        busy_from = time.monotonic()
        assert store.eval(SPIN, 0, BUSY_SECONDS) == 1
        busy_to = time.monotonic()
        time.sleep(2)
    store.close()

    statuses = Counter(
        (name, response.status_code if response else 0) for _, name, _, response in posters.answers
    )
    print(dict(statuses))  # shown with -s
    during = [a for a in posters.answers if busy_from <= a[0] < busy_to]
    assert {a[2] for a in during} == {0, 1, 2}, statuses  # every kind was sent meanwhile
    assert len(posters.answers) > 100, statuses
    assert all(status in (200, 202, 503) for _, status in statuses), statuses
    for _, _, _, response in posters.answers:
        if response is not None and response.status_code == 503:
            assert response.json()["store"] == "cache"
            assert int(response.headers["Retry-After"]) >= 1
    log = cluster.log(cluster.ports[0])
    assert "Traceback" not in log, log[-3000:]
    assert "BUSY" in log  # it was met (the store's down line names it), and answered
