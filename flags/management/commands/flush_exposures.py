"""`manage.py flush_exposures`: move exposure counts and events waiting in Redis into the
database."""

from django.core.management.base import BaseCommand

from evaluation import events, exposures


class Command(BaseCommand):
    help = (
        "Move exposure counts, first unit exposures and events from Redis (or this process) "
        "into the database, once."
    )

    def handle(self, *args, **options) -> None:
        self.stdout.write(f"flushed {exposures.drain()} exposure counts")
        self.stdout.write(f"flushed {events.drain()} events and first unit exposures")
