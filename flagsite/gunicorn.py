"""Gunicorn settings, read from the environment: `gunicorn -c python:flagsite.gunicorn`.

The serving model is gunicorn managing uvicorn ASGI workers: long-lived event streams stay
open without tying up a worker each, and ordinary views run as usual.
"""

import os
import tempfile
from pathlib import Path

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '3000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "uvicorn_worker.UvicornWorker"
wsgi_app = "flagsite.asgi:application"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 10
keepalive = 5
# The app logs requests itself; gunicorn's own access log would print each one twice.
accesslog = None
errorlog = "-"

# Each worker writes its metrics to files in this directory, so /metrics answered by any
# worker sums all of them (prometheus-client's multiprocess mode; see flagsite/metrics.py).
os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", tempfile.mkdtemp(prefix="flags-metrics-"))


def on_starting(server) -> None:
    """Start each run with no metric files: a kept directory still holds the last run's."""
    directory = Path(os.environ["PROMETHEUS_MULTIPROC_DIR"])
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()


def child_exit(server, worker) -> None:
    """Drop a dead worker's live gauges (open streams) from the sums."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
