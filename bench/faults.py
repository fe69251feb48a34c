"""Faults under load (`make bench-faults`): what each one costs evaluation and writes.

One instance of the production serving stack (`manage.py serve`, NODE_ENV=production,
gunicorn with 2 uvicorn workers) on a PostgreSQL and a redis-server of this script's own
(initdb in a temporary directory, free ports). Evaluation threads (OFREP single and bulk,
native, SDK document, in turn) and one writer creating a flag every 0.25 s run through
each fault in turn:

- Redis killed: SIGKILL to redis-server, started again (empty) after REDIS_SECONDS;
- PostgreSQL stopped: `pg_ctl stop -m fast`, started again after OUTAGE_SECONDS;
- a worker killed: SIGKILL to one gunicorn worker, which gunicorn replaces;
- a rolling restart: SIGHUP to gunicorn, which replaces every worker (each closes its
  event streams first), with one event stream open per worker.

For each: how long the fault lasted (until the store was back, or every worker serving
again), evaluation requests and their non-2xx answers (refused connections and timeouts
included), seconds of disruption (first failed request to the end of the last one), writes
acknowledged, writes refused (503 naming the store) and writes lost (acknowledged but not
in the store afterwards). Then the seconds SIGTERM takes to stop an instance with a stream
open. Environment: BENCH_THREADS (6), BENCH_RATE per thread (100/s), OUTAGE_SECONDS (15),
REDIS_SECONDS (8).
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/http.py would hide the standard library's `http` package: keep bench/ off the path.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from tests.evaluation.test_instances import EventReader  # noqa: E402
from tests.faults.load import Evaluations, Writes, disruption_seconds, stored_flags  # noqa: E402
from tests.servers import Cluster, PrivatePostgres, PrivateRedis  # noqa: E402

THREADS = int(os.environ.get("BENCH_THREADS", "6"))
RATE = float(os.environ.get("BENCH_RATE", "100"))
OUTAGE_SECONDS = float(os.environ.get("OUTAGE_SECONDS", "15"))
REDIS_SECONDS = float(os.environ.get("REDIS_SECONDS", "8"))
WORKERS = 2


@dataclass
class Row:
    scenario: str
    seconds: float  # from the fault's start until it was over (the store back, workers up)
    requests: int
    non_2xx: int
    disruption: float
    acknowledged: int
    refused: int
    lost: int

    def markdown(self) -> str:
        return (
            f"| {self.scenario} | {self.seconds:.1f} | {self.requests:,} | {self.non_2xx:,} | "
            f"{self.disruption:.2f} | {self.acknowledged} | {self.refused} | {self.lost} |"
        )


def run(cluster: Cluster, token: str, scenario: str, prefix: str, fault: Callable[[], None]) -> Row:
    """Load for 2 s, the fault (which returns once it is over), 3 s more; then count."""
    writes = Writes(cluster.url(0), token, prefix=prefix)
    evaluations = Evaluations(
        [cluster.url(0)],
        cluster.seed["client_key"],
        cluster.seed["server_key"],
        threads=THREADS,
        rate=RATE,
    )
    with evaluations:
        writes.start()
        time.sleep(2)
        started = time.monotonic()
        fault()
        seconds = time.monotonic() - started
        time.sleep(3)
        writes.stop()
    outcomes = evaluations.outcomes
    failed = [outcome for outcome in outcomes if not outcome.ok]
    refused = [outcome for outcome in writes.sent if outcome.status == 503]
    acknowledged = writes.acknowledged
    lost = acknowledged - stored_flags(cluster.url(0), token)
    return Row(
        scenario,
        seconds,
        len(outcomes),
        len(failed),
        disruption_seconds(outcomes),
        len(acknowledged),
        len(refused),
        len(lost),
    )


def redis_killed(redis: PrivateRedis) -> Callable[[], None]:
    def fault() -> None:
        redis.kill()
        time.sleep(REDIS_SECONDS)
        redis.start()

    return fault


def postgres_stopped(postgres: PrivatePostgres) -> Callable[[], None]:
    def fault() -> None:
        postgres.stop()
        time.sleep(OUTAGE_SECONDS)
        postgres.start()

    return fault


def worker_killed(cluster: Cluster) -> Callable[[], None]:
    def fault() -> None:
        victim = cluster.wait_for_workers(0, WORKERS)[0]
        os.kill(victim, signal.SIGKILL)
        while victim in cluster.workers_of(0):
            time.sleep(0.05)
        cluster.wait_for_workers(0, WORKERS)

    return fault


def rolling_restart(cluster: Cluster) -> Callable[[], None]:
    def fault() -> None:
        old = set(cluster.wait_for_workers(0, WORKERS))
        readers = [EventReader(cluster.url(0), cluster.seed["server_key"]) for _ in range(2)]
        cluster.signal(0, signal.SIGHUP)
        while set(cluster.workers_of(0)) & old:
            time.sleep(0.05)
        cluster.wait_for_workers(0, WORKERS)
        for reader in readers:
            reader.close()

    return fault


def sigterm_seconds(cluster: Cluster) -> float:
    index = len(cluster.ports)
    cluster.start()
    EventReader(cluster.url(index), cluster.seed["client_key"])
    return cluster.stop(index, timeout=30)


def main() -> None:
    with PrivatePostgres() as postgres:
        redis = PrivateRedis()
        redis.start()
        try:
            with Cluster(
                instances=1,
                redis_url=redis.url,
                database_server=postgres.url,
                workers=WORKERS,
                production=True,
                extra_env={"LOG_LEVEL": "WARNING"},
            ) as cluster:
                cluster.wait_for_workers(0, WORKERS)
                token = cluster.token(0)
                rows = [
                    run(cluster, token, f"Redis killed ({REDIS_SECONDS:g} s)", "redis",
                        redis_killed(redis)),
                    run(cluster, token, f"PostgreSQL stopped ({OUTAGE_SECONDS:g} s)", "pg",
                        postgres_stopped(postgres)),
                    run(cluster, token, "a worker killed (SIGKILL)", "kill",
                        worker_killed(cluster)),
                    run(cluster, token, "rolling restart (SIGHUP, streams open)", "hup",
                        rolling_restart(cluster)),
                ]  # fmt: skip
                exit_seconds = sigterm_seconds(cluster)
        finally:
            redis.kill()
    print(
        f"### Faults under load: 1 instance, {WORKERS} workers, "
        f"{THREADS} evaluation threads at up to {RATE:g} req/s each, 4 writes/s\n"
    )
    print(
        "| fault | fault lasted (s) | evaluation requests | non-2xx | disruption (s) "
        "| writes acknowledged | writes refused (503) | writes lost |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(row.markdown())
    print(f"\nSIGTERM to exit with an event stream open: {exit_seconds:.2f} s")


if __name__ == "__main__":
    main()
