"""`manage.py run_scheduler`: apply due scheduled changes and flush exposure counts."""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand

from evaluation import exposures
from flags import schedules
from integrations import delivery


class Command(BaseCommand):
    help = (
        "Apply scheduled changes and rollout steps that are due, send webhook deliveries, "
        "and move exposure counts into the database; loops every --interval seconds, or "
        "runs once with --once (cron). "
        "On PostgreSQL run as many as you like; on SQLite run one."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="one pass, then exit")
        parser.add_argument("--interval", type=float, default=5.0, help="seconds between passes")

    def handle(self, *args, once: bool = False, interval: float = 5.0, **options) -> None:
        # Webhooks go out from threads of their own: a slow receiver never delays a change.
        webhooks = None if once else delivery.Worker()
        stop = webhooks.stop if webhooks else threading.Event()
        if not once and threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                signal.signal(number, lambda *_: stop.set())
        if webhooks:
            webhooks.start()
        while True:
            self._pass(once)
            if once or stop.wait(interval):
                break

    def _pass(self, once: bool = False) -> None:
        for change in schedules.due_changes_apply():
            line = f"{change.status} scheduled change #{change.pk} on {change.config}"
            if change.applied_version:
                line += f" (version {change.applied_version})"
            if change.error:
                line += f": {change.error}"
            self.stdout.write(line)
        if once:
            for sent in delivery.deliver_due():
                self.stdout.write(f"{sent.status} delivery #{sent.pk} to {sent.webhook}")
        flushed = exposures.drain()
        if flushed:
            self.stdout.write(f"flushed {flushed} exposure counts")
