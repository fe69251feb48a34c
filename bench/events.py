"""Events benchmark (`make bench-events`): how fast the server takes SDK events, how fast
they reach PostgreSQL, and what reading an experiment of 1,000,000 units costs.

1. Ingestion: the production server (`manage.py serve`: gunicorn, WEB_CONCURRENCY uvicorn
   workers, default 2) on a fresh PostgreSQL database ($DB_URL, else flags_bench_events),
   posted `POST /api/v1/sdk/events` batches of 1,000 events (distinct units, each with a
   value) by CLIENT_THREADS threads (default 4) for BENCH_SECONDS (default 10): events
   accepted per second; without $REDIS_URL (each worker writes its batches to the database
   every second) how long until every event is in PostgreSQL; and events per CPU second of
   the server's processes (from /proc, from the first post until all are stored), which is
   the rate per core. With $REDIS_URL the workers write to Redis and the clock stops at
   the last post; a post refused with 503 (the backlog's bound, EVENTS_MAX_BACKLOG) waits
   its Retry-After and is counted. Then what waits in Redis is drained by `manage.py
   flush_exposures` while a client pings Redis: entries per second and the longest PING.
2. Drain: DRAIN_EVENTS (default 200,000) events of distinct units, batched in this process
   as a worker batches them, then moved into PostgreSQL by `evaluation.events.flush` (what
   `manage.py flush_exposures` and the workers' flushers run): events per second.
3. Analysis: `experiment_analysis` of an experiment with 1,000,000 units, by
   bench/experiments.py's own measurement (its table's row).

Prints Markdown tables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
os.environ.setdefault("DB_URL", "postgres://postgres@127.0.0.1:5432/flags_bench_events")
os.environ.setdefault("EXPERIMENT_UNITS", "1000000")
SERVER_REDIS = os.environ.pop("REDIS_URL", "")  # the server's; this process writes to PostgreSQL
os.environ["EXPOSURE_FLUSH_SECONDS"] = "0"  # this process flushes only when told (the drain)

import httpx  # noqa: E402

# Creates the database on $DB_URL (dropped at the end) and sets Django up on it.
from bench import experiments  # noqa: E402
from bench.databases import database  # noqa: E402
from bench.http import wait_until_up  # noqa: E402
from tests.servers import PRODUCTION_ENV, child_pids, free_port  # noqa: E402

SECONDS = min(float(os.environ.get("BENCH_SECONDS", "10")), 30)
THREADS = int(os.environ.get("CLIENT_THREADS", "4"))
WORKERS = os.environ.get("WEB_CONCURRENCY", "2")
DRAIN_EVENTS = int(os.environ.get("DRAIN_EVENTS", "200000"))
BATCH = 1000
SYSTEM = {"actor": None, "source": "system"}


def _server_key() -> tuple[int, str]:
    from flags import services

    project = services.project_create(key="bench-events", name="", **SYSTEM)
    environment = project.environments.get(key="production")
    _, key = services.api_key_create(environment=environment, kind="server", name="bench", **SYSTEM)
    return environment.pk, key


def _cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process and its children, so far."""
    total = 0.0
    for one in [pid, *child_pids(pid)]:
        try:
            fields = Path(f"/proc/{one}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _post_for(
    url: str, key: str, stop: float, thread: int, accepted: list[int], refused: list[int]
) -> None:
    headers = {"X-API-Key": key, "Content-Type": "application/json"}
    sent = 0
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < stop:
            now = time.time()
            body = json.dumps(
                {
                    "events": [
                        {
                            "event": "purchase",
                            "targetingKey": f"t{thread}-u{sent + n}",
                            "value": n % 50 + 0.5,
                            "timestamp": now,
                        }
                        for n in range(BATCH)
                    ]
                }
            )
            response = client.post(url, content=body, headers=headers)
            if response.status_code == 503:  # the backlog's bound: wait as an SDK would
                refused[thread] += BATCH
                pause = float(response.headers.get("Retry-After", "1"))
                time.sleep(max(0.0, min(pause, stop - time.monotonic())))
                continue
            if response.status_code != 202:
                raise SystemExit(f"the server answered {response.status_code}: {response.text}")
            sent += BATCH
    accepted[thread] = sent


def ingestion(key: str) -> tuple[str, dict[str, str]]:
    port = free_port()
    env = {
        **os.environ,
        **PRODUCTION_ENV,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "ALLOWED_HOSTS": "127.0.0.1",
        "WEB_CONCURRENCY": WORKERS,
        "EVALUATION_RATE_LIMIT": "1000000000",
        "EXPOSURE_FLUSH_SECONDS": "1",
        "LOG_LEVEL": "WARNING",
    }
    if SERVER_REDIS:
        env["REDIS_URL"] = SERVER_REDIS
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until_up(f"{base}/healthz", server)
        url = f"{base}/api/v1/sdk/events"
        _post_for(url, key, time.monotonic() + 1, 0, [0], [0])  # warm up every worker
        accepted, refused = [0] * THREADS, [0] * THREADS
        cpu, started = _cpu_seconds(server.pid), time.monotonic()
        stop = started + SECONDS
        threads = [
            threading.Thread(target=_post_for, args=(url, key, stop, n, accepted, refused))
            for n in range(THREADS)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - started
        if not SERVER_REDIS:  # the workers' writes to PostgreSQL lag the posts
            _wait_stored(sum(accepted))
        else:  # the workers' flushes into Redis lag the posts
            _wait_in_redis()
        stored, cpu = time.monotonic() - started, _cpu_seconds(server.pid) - cpu
    finally:
        server.terminate()
        server.wait(timeout=30)
    events, turned_away = sum(accepted), sum(refused)
    store = "Redis" if SERVER_REDIS else "PostgreSQL"
    table = "\n".join(
        [
            f"Ingestion: {THREADS} client threads posting batches of {BATCH:,} events for "
            f"{elapsed:.0f} s; gunicorn, {WORKERS} uvicorn workers flushing to {store} each "
            f"second; {os.cpu_count()} CPUs shared with the clients",
            "",
            "| events accepted | accepted/s | refused (503) | all stored after | server CPU s "
            "| events per CPU second |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {events:,} | {events / elapsed:,.0f} | {turned_away:,} | {stored:.1f} s | "
            f"{cpu:.1f} | {events / cpu:,.0f} |",
        ]
    )
    return table, env


def _wait_in_redis(timeout: float = 120) -> None:
    """Until what waits in Redis has stopped growing for 3 s (every worker has flushed)."""
    import redis

    store = redis.Redis.from_url(SERVER_REDIS, socket_timeout=60)
    deadline, last, still = time.monotonic() + timeout, -1, 0
    while time.monotonic() < deadline and still < 6:
        waiting = _waiting_in_redis(store)
        still = still + 1 if waiting == last else 0
        last = waiting
        time.sleep(0.5)
    store.close()


def _waiting_in_redis(store) -> int:
    """First exposures and event tallies waiting in Redis, under any prefix."""
    waiting = 0
    for pending in store.scan_iter("*units:pending"):
        waiting += sum(store.zcard(key) for key in store.smembers(pending))
    for pending in store.scan_iter("*events:pending"):
        waiting += sum(store.hlen(key) // 6 for key in store.smembers(pending))
    return waiting


def redis_drain(server_env: dict[str, str]) -> str:
    """What the server left in Redis, drained by `manage.py flush_exposures` (chunked), with
    a client pinging Redis meanwhile: the longest wait is what any request would have met."""
    import redis

    from evaluation.events import DRAIN_CHUNK

    store = redis.Redis.from_url(SERVER_REDIS, socket_timeout=60)
    waiting = _waiting_in_redis(store)
    longest, done = [0.0], threading.Event()

    def probe() -> None:
        while not done.is_set():
            started = time.perf_counter()
            store.ping()
            longest[0] = max(longest[0], time.perf_counter() - started)
            done.wait(0.005)

    prober = threading.Thread(target=probe)
    prober.start()
    started = time.perf_counter()
    try:
        subprocess.run(
            [sys.executable, "manage.py", "flush_exposures"],
            cwd=ROOT,
            env={**server_env, "EXPOSURE_FLUSH_SECONDS": "0"},
            check=True,
            capture_output=True,
        )
    finally:
        elapsed = time.perf_counter() - started
        done.set()
        prober.join()
    left = _waiting_in_redis(store)
    store.close()
    bound = int(server_env.get("EVENTS_MAX_BACKLOG", "500000"))
    return "\n".join(
        [
            f"Drain from Redis into PostgreSQL: `manage.py flush_exposures`, chunks of "
            f"{DRAIN_CHUNK:,}; a client pinging Redis every 5 ms meanwhile",
            "",
            "| waiting in Redis | bound (EVENTS_MAX_BACKLOG) | seconds | entries/s | left "
            "| longest PING |",
            "| ---: | ---: | ---: | ---: | ---: | ---: |",
            f"| {waiting:,} | {bound:,} | {elapsed:.1f} | {(waiting - left) / elapsed:,.0f} | "
            f"{left:,} | {longest[0] * 1000:.0f} ms |",
        ]
    )


def _wait_stored(events: int, timeout: float = 300) -> None:
    from flags.models import UnitEventDay

    deadline = time.monotonic() + timeout
    while UnitEventDay.objects.filter(event="purchase").count() < events:
        if time.monotonic() > deadline:
            raise SystemExit(f"{events:,} events not stored within {timeout:.0f} s")
        time.sleep(0.5)


def drain(environment_id: int) -> str:
    from evaluation import events
    from flags.models import UnitEventDay

    now = time.time()
    for n in range(DRAIN_EVENTS):
        events.track(environment_id, "pageview", f"d-{n}", float(n % 50), now)
    started = time.perf_counter()
    moved = events.flush()
    elapsed = time.perf_counter() - started
    stored = UnitEventDay.objects.filter(environment_id=environment_id, event="pageview").count()
    assert stored == moved == DRAIN_EVENTS, (stored, moved)
    return "\n".join(
        [
            "Drain into PostgreSQL: `evaluation.events.flush` of a batch of distinct units",
            "",
            "| events | seconds | events/s |",
            "| ---: | ---: | ---: |",
            f"| {moved:,} | {elapsed:.2f} | {moved / elapsed:,.0f} |",
        ]
    )


def main() -> None:
    from django.core.management import call_command

    call_command("migrate", verbosity=0)
    environment_id, key = _server_key()
    table, server_env = ingestion(key)
    print(table, flush=True)
    print()
    if SERVER_REDIS:
        print(redis_drain(server_env), flush=True)
        print()
    print(drain(environment_id), flush=True)
    print()
    client = experiments.admin_client()
    print("Analysis (bench/experiments.py), median of 3:")
    print()
    print(experiments.TABLE_HEAD)
    for size in experiments.SIZES:
        print(experiments.measure(client, size), flush=True)


if __name__ == "__main__":
    try:
        main()
    finally:
        from django.db import connections

        connections.close_all()
        database(experiments.DB_URL, "drop")
