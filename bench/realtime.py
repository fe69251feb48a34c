"""Real-time benchmarks (`make bench-realtime`): propagation delay and stream capacity.

1. Propagation: three instances on one store and Redis; 100 flag changes made through
   instance A while an SSE client listens on instance C. Prints median and p99 of the time
   from the commit on A (the event's `changedAt`) to the event's arrival at the client.
2. Capacity: one instance (WEB_CONCURRENCY workers, default 2) holds STREAMS open event
   streams (default 10,000) while wrk drives OFREP single-flag evaluations; prints the
   evaluation rate with and without the streams, and the server's memory.

Uses $DB_URL / $REDIS_URL (the Make target defaults them to the local PostgreSQL and Redis).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/http.py would hide the standard library's `http` package: keep bench/ off the path.
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import statistics  # noqa: E402  (after the path: bench/statistics.py would shadow it)

import httpx  # noqa: E402

from tests.evaluation.test_instances import EventReader, toggle  # noqa: E402
from tests.servers import Cluster  # noqa: E402

CHANGES = int(os.environ.get("BENCH_CHANGES", "100"))
STREAMS = int(os.environ.get("BENCH_STREAMS", "10000"))
SECONDS = min(int(os.environ.get("BENCH_SECONDS", "10")), 20)


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


# Served as in production: no debug, JSON logs above INFO only.
PRODUCTION = {"NODE_ENV": "production", "JWT_SECRET": "bench-" + "x" * 40, "LOG_LEVEL": "WARNING"}


def propagation() -> str:
    with Cluster(instances=3, extra_env=PRODUCTION) as cluster:
        key = cluster.seed["server_key"]
        token = cluster.token(0)
        reader = EventReader(cluster.url(2), key)
        delays = []
        try:
            for index in range(CHANGES):
                toggle(cluster.url(0), token, enabled=index % 2 == 0)
                event = reader.next(timeout=5)
                delays.append((event["received_wall"] - event["data"]["changedAt"]) * 1000)
        finally:
            reader.close()
    mode = "Redis pub/sub" if cluster.redis_url else "polling (no Redis)"
    return "\n".join(
        [
            f"### Propagation: change on instance A -> SSE event on instance C ({mode})",
            "",
            "| changes | median | p99 | max |",
            "|---|---|---|---|",
            f"| {len(delays)} | {statistics.median(delays):.1f} ms | "
            f"{percentile(delays, 0.99):.1f} ms | {max(delays):.1f} ms |",
        ]
    )


async def _hold_streams(url: str, key: str, count: int, opened: threading.Event, stop) -> int:
    """Open `count` streams (200 connecting at a time, as clients arriving), then hold them
    until `stop`: plain sockets, so that the client costs the shared cores little."""
    host, port = url.removeprefix("http://").split(":")
    request = (
        f"GET /api/v1/stream HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\r\n"
    ).encode()
    gate = asyncio.Semaphore(200)
    writers: list[asyncio.StreamWriter] = []

    async def one() -> None:
        async with gate:
            try:
                reader, writer = await asyncio.open_connection(host, int(port))
                writer.write(request)
                seen = b""
                while b": connected" not in seen:
                    chunk = await asyncio.wait_for(reader.read(4096), 60)
                    if not chunk:
                        writer.close()
                        return
                    seen += chunk
            except (OSError, TimeoutError):
                return
        writers.append(writer)
        if len(writers) == count:
            opened.set()
        while await reader.read(4096):  # the heartbeats, read, or the server's buffers fill
            pass

    tasks = [asyncio.create_task(one()) for _ in range(count)]
    while not stop.is_set():
        await asyncio.sleep(0.2)
    held = len(writers)
    for task in tasks:
        task.cancel()
    for writer in writers:
        writer.close()
    await asyncio.gather(*tasks, return_exceptions=True)
    return held


def _wrk(url: str, key: str, directory: str) -> tuple[float, float]:
    script = Path(directory) / "ofrep.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(json.dumps({'context': {'targetingKey': 'user-1'}}))}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        f'wrk.headers["X-API-Key"] = "{key}"\n'
    )
    output = subprocess.run(
        [
            "wrk",
            "-t2",
            "-c8",
            f"-d{SECONDS}s",
            "--latency",
            "-s",
            str(script),
            f"{url}/ofrep/v1/evaluate/flags/new-checkout",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p99 = re.search(r"\s99%\s+(\S+)", output).group(1)
    return rate, p99


def _memory_mib(pid: int) -> float:
    """Resident memory of the server: gunicorn's master and its workers."""
    pids = [
        pid,
        *map(
            int,
            subprocess.run(
                ["pgrep", "-P", str(pid)], capture_output=True, text=True
            ).stdout.split(),
        ),
    ]
    total = 0
    for each in pids:
        status = Path(f"/proc/{each}/status")
        if status.exists():
            match = re.search(r"VmRSS:\s+(\d+) kB", status.read_text())
            total += int(match.group(1)) if match else 0
    return total / 1024


def _open_streams(url: str) -> int:
    """Streams the server itself counts as open, summed over its workers (/metrics)."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    match = re.search(r"^flags_open_streams(?:\{[^}]*\})? ([\d.e+]+)$", text, re.M)
    return int(float(match.group(1))) if match else -1


def capacity() -> str:
    workers = os.environ.get("WEB_CONCURRENCY", "2")
    with (
        Cluster(instances=0, extra_env={"WEB_CONCURRENCY": workers, **PRODUCTION}) as cluster,
        tempfile.TemporaryDirectory() as directory,
    ):
        cluster.start()
        url, key = cluster.url(0), cluster.seed["server_key"]
        pid = cluster.processes[0].pid
        idle_rate, idle_p99 = _wrk(url, key, directory)
        idle_memory = _memory_mib(pid)
        opened, stop = threading.Event(), threading.Event()
        result: dict = {}
        holder = threading.Thread(
            target=lambda: result.update(
                held=asyncio.run(_hold_streams(url, key, STREAMS, opened, stop))
            ),
            daemon=True,
        )
        holder.start()
        opened.wait(max(60, STREAMS / 50))  # clients arriving: 10,000 take a while
        busy_rate, busy_p99 = _wrk(url, key, directory)
        busy_memory = _memory_mib(pid)
        held = _open_streams(url)
        stop.set()
        holder.join(30)
    return "\n".join(
        [
            f"### Capacity: one instance, {workers} workers, {STREAMS} open streams",
            "",
            "| | OFREP single-flag req/s | p99 | server memory (RSS) |",
            "|---|---|---|---|",
            f"| no streams | {idle_rate:,.0f} | {idle_p99} | {idle_memory:.0f} MiB |",
            f"| {held:,} streams held | {busy_rate:,.0f} | {busy_p99} | {busy_memory:.0f} MiB |",
        ]
    )


if __name__ == "__main__":
    parts = sys.argv[1:] or ["propagation", "capacity"]
    print("\n\n".join({"propagation": propagation, "capacity": capacity}[part]() for part in parts))
