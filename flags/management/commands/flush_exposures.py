"""`manage.py flush_exposures`: move exposure counts waiting in Redis into the database."""

from django.core.management.base import BaseCommand

from evaluation import exposures


class Command(BaseCommand):
    help = "Move exposure counts from Redis (or this process) into the database, once."

    def handle(self, *args, **options) -> None:
        self.stdout.write(f"flushed {exposures.drain()} exposure counts")
