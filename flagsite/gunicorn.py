"""Gunicorn settings, read from the environment (`gunicorn -c python:flagsite.gunicorn`),
and the worker class: uvicorn's, with event streams closed first on shutdown.

The serving model is gunicorn managing uvicorn ASGI workers: long-lived event streams stay
open without tying up a worker each, and ordinary views run as usual.

Shutdown (SIGTERM to gunicorn, or SIGHUP's rolling replacement of the workers): each
worker stops accepting connections, tells every open event stream to end (they send a
short `retry:` and close, see evaluation.streams), lets ordinary requests in flight finish,
and exits; a worker with streams open exits in well under a second instead of waiting for
`graceful_timeout`. `DRAIN_SECONDS` bounds how long a worker waits for requests in flight
before it cancels them, below gunicorn's `graceful_timeout`, after which gunicorn kills it.
Last, the worker flushes what its requests batched in memory (exposure counts, events,
first exposures; `EXIT_FLUSH_SECONDS` at most), so a graceful stop loses none of it.
"""

import os
import sys
import tempfile
from pathlib import Path

from gunicorn.arbiter import Arbiter
from uvicorn.server import Server
from uvicorn_worker import UvicornWorker

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '3000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "flagsite.gunicorn.StreamClosingWorker"
wsgi_app = "flagsite.asgi:application"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 10
DRAIN_SECONDS = 5
# After the drain, for the last flush of the batches; within graceful_timeout with it.
EXIT_FLUSH_SECONDS = 4
keepalive = 5
# gunicorn's control socket (gunicornc) is not used: under the image's user and read-only
# root file system it could not be made anyway ($HOME/.gunicorn), and signals do its work.
control_socket_disable = True
# The app logs requests itself; gunicorn's own access log would print each one twice.
accesslog = None
errorlog = "-"

# Each worker writes its metrics to files in this directory, so /metrics answered by any
# worker sums all of them (prometheus-client's multiprocess mode; see flagsite/metrics.py).
if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="flags-metrics-")


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


class StreamClosingServer(Server):
    """Uvicorn's server, which first ends the event streams when it shuts down."""

    async def shutdown(self, sockets=None) -> None:
        # Before uvicorn waits for open connections: streams would otherwise hold it until
        # gunicorn's graceful_timeout runs out and the worker is killed.
        from evaluation.broadcast import Broadcaster

        if Broadcaster.current is not None:
            Broadcaster.current.close_streams()
        await super().shutdown(sockets)
        # Requests are done: what they batched (exposure counts, events, first exposures)
        # is flushed now rather than lost with the process.
        from evaluation.batches import flush_before_exit

        flush_before_exit(EXIT_FLUSH_SECONDS)  # bounded by its own thread's join


class StreamClosingWorker(UvicornWorker):
    """uvicorn-worker's UvicornWorker serving through StreamClosingServer."""

    CONFIG_KWARGS = {**UvicornWorker.CONFIG_KWARGS, "timeout_graceful_shutdown": DRAIN_SECONDS}

    async def _serve(self) -> None:
        # UvicornWorker._serve (uvicorn-worker 0.4.0), with the server class swapped.
        self.config.app = self.wsgi
        server = StreamClosingServer(config=self.config)
        self._install_sigquit_handler()
        await server.serve(sockets=self.sockets)
        if not server.started:
            sys.exit(Arbiter.WORKER_BOOT_ERROR)
