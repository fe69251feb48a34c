"""`manage.py deliver_webhooks`: send queued webhook deliveries (also done by run_scheduler)."""

from __future__ import annotations

import signal
import threading

from django.core.management.base import BaseCommand

from integrations import delivery


class Command(BaseCommand):
    help = (
        "Send queued webhook deliveries, retrying failed ones with back-off. run_scheduler "
        "does this too; run this instead to send from processes of their own. With --once, "
        "send what is due and exit."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--once", action="store_true", help="send what is due, then exit")
        parser.add_argument("--threads", type=int, default=4, help="receivers served at once")

    def handle(self, *args, once: bool = False, threads: int = 4, **options) -> None:
        if once:
            for sent in delivery.deliver_due():
                self.stdout.write(f"{sent.status} delivery #{sent.pk} to {sent.webhook}")
            return
        worker = delivery.Worker(threads=max(1, threads))
        if threading.current_thread() is threading.main_thread():
            for number in (signal.SIGTERM, signal.SIGINT):
                signal.signal(number, lambda *_: worker.stop.set())
        worker.run()
