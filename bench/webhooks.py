"""Webhook benchmark (`make bench-webhooks`): what subscribed webhooks cost a write, and how
fast the worker sends.

On a fresh SQLite file (or the PostgreSQL database $DB_URL names, which it must own), it
switches one flag BENCH_WRITES times (default 200) through `flags.services.flag_toggle`
with 0, 1 and 10 webhooks subscribed, and reports the median and p99 of a write; then it
sends the deliveries queued for 10 webhooks to a loopback receiver, with 1 and 4 worker
threads, and reports deliveries per second. Prints a Markdown table.
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import statistics  # noqa: E402  (after the path: bench/statistics.py would shadow it)
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

WRITES = int(os.environ.get("BENCH_WRITES", "200"))
if not os.environ.get("DB_URL"):
    os.environ["DB_URL"] = f"sqlite:///{tempfile.mkdtemp()}/bench.sqlite3"
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flagsite.settings")
os.environ.setdefault("JWT_SECRET", "bench-only-secret-0123456789abcdef0123456789")

import django  # noqa: E402

django.setup()

from django.core.management import call_command  # noqa: E402

from flags import services  # noqa: E402
from flags.models import FlagConfig  # noqa: E402
from integrations import delivery, webhooks  # noqa: E402
from integrations.models import Delivery, Webhook  # noqa: E402

SYSTEM = {"actor": None, "source": "system"}


class Quiet(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


def writes(config: FlagConfig) -> list[float]:
    timings = []
    for index in range(WRITES):
        started = time.perf_counter()
        services.flag_toggle(config=config, enabled=index % 2 == 0, **SYSTEM)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


def send_all(threads: int) -> float:
    pending = Delivery.objects.filter(status=Delivery.Status.PENDING).count()
    worker = delivery.Worker(threads=threads, poll_seconds=0.05)
    started = time.perf_counter()
    runner = worker.start()
    while Delivery.objects.filter(status=Delivery.Status.PENDING).exists():
        time.sleep(0.02)
    elapsed = time.perf_counter() - started
    worker.stop.set()
    runner.join()
    return pending / elapsed


def main() -> None:
    call_command("migrate", verbosity=0)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    project = services.project_create(key="bench", **SYSTEM)
    flag = services.flag_create(project=project, key="switch", **SYSTEM)
    config = FlagConfig.objects.get(flag=flag, environment__key="development")

    rows = []
    for count in (0, 1, 10):
        while Webhook.objects.count() < count:
            webhooks.webhook_create(
                project=project, data={"name": f"r{Webhook.objects.count()}", "url": url}, **SYSTEM
            )
        Delivery.objects.all().delete()
        timings = sorted(writes(config))
        p99 = timings[int(len(timings) * 0.99) - 1]
        rows.append(
            f"| write, {count} webhooks | {statistics.median(timings):.2f} ms | {p99:.2f} ms |"
        )
    for threads in (1, 4):
        Delivery.objects.update(status=Delivery.Status.PENDING, attempts=0)
        rows.append(
            f"| send {WRITES * 10} deliveries, {threads} thread(s) | {send_all(threads):.0f}/s | |"
        )
    server.shutdown()
    print(f"Database: {django.db.connection.vendor}; {WRITES} writes per row\n")
    print("| what | median / rate | p99 |\n|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
