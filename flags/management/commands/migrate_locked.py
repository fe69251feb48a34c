"""Apply migrations while holding a PostgreSQL advisory lock, so instances never race.

Every instance (container start, Helm hook Job, release phase) may run this at the same
moment; the first takes the lock and migrates, the others wait and then find nothing to do.
On SQLite, the embedded single-instance default, it is a plain `migrate`.
"""

import time

from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, connections

# A fixed key in PostgreSQL's advisory lock space: "flags mig" read as ASCII.
MIGRATION_LOCK_KEY = 0x666C616773206D69


class Command(BaseCommand):
    help = (
        "Apply migrations under a PostgreSQL advisory lock (plain migrate on SQLite); "
        "waits up to --timeout seconds for another instance's migration."
    )

    def add_arguments(self, parser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS)
        parser.add_argument(
            "--timeout",
            type=float,
            default=600.0,
            help="seconds to wait for the lock before giving up (default 600)",
        )
        parser.add_argument("--no-input", "--noinput", action="store_false", dest="interactive")

    def handle(self, *args, database: str, timeout: float, interactive: bool, **options) -> None:
        connection = connections[database]
        migrate_options = {
            "database": database,
            "interactive": interactive,
            "verbosity": options["verbosity"],
        }
        if connection.vendor != "postgresql":
            call_command("migrate", **migrate_options)
            return
        self._lock(connection, timeout)
        try:
            call_command("migrate", **migrate_options)
        finally:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(%s)", [MIGRATION_LOCK_KEY])

    def _lock(self, connection, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        announced = False
        while True:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_try_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
                if cursor.fetchone()[0]:
                    return
            if time.monotonic() >= deadline:
                raise CommandError(
                    f"another instance still holds the migration lock after {timeout:g}s"
                )
            if not announced:
                self.stdout.write("Waiting for another instance to finish migrating...")
                announced = True
            time.sleep(min(1.0, max(0.05, deadline - time.monotonic())))
