"""A graceful stop loses nothing a worker batched in memory.

Exposure counts, events and first exposures wait in each worker's memory until its next
flush (`EXPOSURE_FLUSH_SECONDS`). A worker that stops gracefully (SIGTERM to the server, or
SIGHUP's rolling replacement of the workers at a deploy) flushes them before it exits; only
a crash or SIGKILL loses them (docs/experiments.md). The flush interval here is ten
minutes, so every item stored was stored by the flush at exit.
"""

from __future__ import annotations

import json
import signal
import threading

import httpx
import pytest

from tests.faults.load import wait_until
from tests.servers import Cluster

pytestmark = pytest.mark.server

WORKERS = 2
POSTS = 120  # of each kind, before the rolling replacement and again before the stop

# The seed's flag on, served to half and half, so each evaluation of a new unit is a first
# exposure.
SPLIT = """
from flags import services
from flags.models import FlagConfig
config = FlagConfig.objects.get(flag__key="new-checkout", environment__key="production")
halves = [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}]
data = {"enabled": True, "defaultServe": {"rollout": {"variants": halves}}}
services.flag_config_update(config=config, data=data, actor=None, source="system")
"""

COUNTS = """
import json
from django.db.models import Sum
from flags.models import ExposureCount, UnitEventDay, UnitExposure
print(json.dumps({
    "exposures": ExposureCount.objects.aggregate(n=Sum("count"))["n"] or 0,
    "events": UnitEventDay.objects.aggregate(n=Sum("count"))["n"] or 0,
    "units": UnitEventDay.objects.values("unit").distinct().count(),
    "first_exposures": UnitExposure.objects.count(),
}))
"""


def _post_everything(url: str, keys: dict, start: int) -> int:
    """POSTS exposure counts, events and evaluations (each a first exposure) from four
    connections, so both workers take some; the number of requests answered 2xx."""
    accepted = []

    def send(kind: int) -> None:
        with httpx.Client(base_url=url, timeout=10, headers={"X-API-Key": keys["server_key"]}) as c:
            for n in range(start, start + POSTS):
                if kind == 0:
                    count = {
                        "flag": "new-checkout",
                        "variant": "on",
                        "reason": "SPLIT",
                        "count": 1,
                    }
                    answer = c.post("/api/v1/sdk/exposures", json={"exposures": [count]})
                elif kind == 1:
                    event = {"event": "purchase", "targetingKey": f"u{n}", "value": 2}
                    answer = c.post("/api/v1/sdk/events", json={"events": [event]})
                else:
                    answer = c.post(
                        "/ofrep/v1/evaluate/flags/new-checkout",
                        json={"context": {"targetingKey": f"u{n}"}},
                    )
                # Each exposure count and event accepted, not dropped.
                accepted.append(answer.status_code < 300 and not answer.json().get("dropped"))

    threads = [threading.Thread(target=send, args=(kind,)) for kind in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert all(accepted) and len(accepted) == 3 * POSTS
    return len(accepted)


def test_rolling_replacement_and_sigterm_flush_what_the_workers_batched():
    with Cluster(
        instances=1,
        workers=WORKERS,
        production=True,
        extra_env={"EXPOSURE_FLUSH_SECONDS": "600", "LOG_LEVEL": "INFO"},
    ) as cluster:
        cluster.manage("shell", "-c", SPLIT)
        old = cluster.wait_for_workers(0, WORKERS)
        url = cluster.url(0)
        _post_everything(url, cluster.seed, 0)
        cluster.signal(0, signal.SIGHUP)  # new workers start; the old ones stop gracefully
        wait_until(lambda: not set(cluster.workers_of(0)) & set(old), timeout=20)
        cluster.wait_for_workers(0, WORKERS)
        _post_everything(url, cluster.seed, POSTS)
        assert cluster.stop(0, timeout=15) < 15  # SIGTERM, exited on its own
        log = cluster.log(cluster.ports[0])
        cluster.manage("flush_exposures")  # with Redis: the drain into the database
        stored = json.loads(cluster.manage("shell", "-c", COUNTS).strip().splitlines()[-1])

    assert stored == {
        "exposures": 4 * POSTS,  # those posted, and the server's own evaluations
        "events": 2 * POSTS,
        "units": 2 * POSTS,
        "first_exposures": 2 * POSTS,  # one per unit evaluated
    }, log[-3000:]
    assert log.count("flushed") >= 2 * WORKERS - 1, log[-3000:]  # each worker said so
    assert "not flushed" not in log and "Traceback" not in log, log[-3000:]
