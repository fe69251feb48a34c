"""`manage.py run_scheduler`: apply due scheduled changes and flush exposures and events."""

from __future__ import annotations

import logging
import signal
import threading

from django.core.management.base import BaseCommand, CommandError
from django.db import connection

from evaluation import events, exposures
from flags import guards, schedules
from integrations import delivery

log = logging.getLogger(__name__)


class Command(BaseCommand):
    help = (
        "Check guarded rollouts, apply scheduled changes and rollout steps that are due, "
        "send webhook deliveries, "
        "and move exposure counts, first unit exposures and events into the database; "
        "loops every --interval seconds, or runs once with --once (cron). "
        "On PostgreSQL run as many as you like; on SQLite run one."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="one pass, then exit")
        parser.add_argument("--interval", type=float, default=5.0, help="seconds between passes")

    failing: set[str] = set()

    def handle(self, *args, once: bool = False, interval: float = 5.0, **options) -> None:
        # Webhooks go out from threads of their own: a slow receiver never delays a change.
        webhooks = None if once else delivery.Worker()
        stop = webhooks.stop if webhooks else threading.Event()
        if not once and threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                signal.signal(number, lambda *_: stop.set())
        if webhooks:
            webhooks.start()
        if not once:
            log.info("scheduler: started, a pass every %ss", interval)
        while True:
            failed = self._pass(once)
            if once:
                if failed:
                    raise CommandError(f"{', '.join(failed)} failed (see the log)", returncode=1)
                break
            if stop.wait(interval):
                log.info("scheduler: stopped")
                break

    def _pass(self, once: bool = False) -> list[str]:
        """One pass: each step runs even if the one before failed; the steps that failed.

        A failing step (the database or Redis away, say) is tried again on the next pass;
        the loop itself never stops for it. The log gets the traceback when a step starts
        failing, one line on each pass it still fails, and one when it works again.
        """
        failed = []
        steps = [
            ("checking guards", self._guards),  # first: a regression stops the next step
            ("applying changes", self._apply),
            ("draining exposures", self._drain),
            ("draining events", self._drain_events),
        ]
        if once:  # the loop sends webhooks from its worker threads; one pass sends them here
            steps.append(("sending webhooks", self._deliver))
        for name, step in steps:
            if not connection.in_atomic_block:  # (called from inside a transaction: tests)
                connection.close_if_unusable_or_obsolete()  # an outage's is replaced
            try:
                step()
            except Exception as error:
                if name in self.failing:
                    log.warning("scheduler: %s still fails: %s", name, error)
                else:
                    log.exception("scheduler: %s failed; trying again next pass", name)
                failed.append(name)
            else:
                if name in self.failing:
                    log.warning("scheduler: %s works again", name)
        self.failing = set(failed)
        return failed

    def _guards(self) -> None:
        for guard in guards.guards_check():
            self.stdout.write(f"guard {guard.metric.key} stopped rollout {guard.rollout}")

    def _apply(self) -> None:
        for change in schedules.due_changes_apply():
            line = f"{change.status} scheduled change #{change.pk} on {change.config}"
            if change.applied_version:
                line += f" (version {change.applied_version})"
            if change.error:
                line += f": {change.error}"
            self.stdout.write(line)

    def _drain(self) -> None:
        flushed = exposures.drain()
        if flushed:
            self.stdout.write(f"flushed {flushed} exposure counts")

    def _drain_events(self) -> None:
        flushed = events.drain()
        if flushed:
            self.stdout.write(f"flushed {flushed} events and first unit exposures")

    def _deliver(self) -> None:
        for sent in delivery.deliver_due():
            self.stdout.write(f"{sent.status} delivery #{sent.pk} to {sent.webhook}")
