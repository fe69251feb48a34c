"""`manage.py run_scheduler`: apply due scheduled changes and flush exposure counts."""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand

from evaluation import exposures
from flags import schedules


class Command(BaseCommand):
    help = (
        "Apply scheduled changes and rollout steps that are due, and move exposure counts "
        "into the database; loops every --interval seconds, or runs once with --once (cron). "
        "On PostgreSQL run as many as you like; on SQLite run one."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="one pass, then exit")
        parser.add_argument("--interval", type=float, default=5.0, help="seconds between passes")

    def handle(self, *args, once: bool = False, interval: float = 5.0, **options) -> None:
        stop = threading.Event()
        if not once and threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                signal.signal(number, lambda *_: stop.set())
        while True:
            self._pass()
            if once or stop.wait(interval):
                break

    def _pass(self) -> None:
        for change in schedules.due_changes_apply():
            line = f"{change.status} scheduled change #{change.pk} on {change.config}"
            if change.applied_version:
                line += f" (version {change.applied_version})"
            if change.error:
                line += f": {change.error}"
            self.stdout.write(line)
        flushed = exposures.drain()
        if flushed:
            self.stdout.write(f"flushed {flushed} exposure counts")
