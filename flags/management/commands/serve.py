"""Serve the service with gunicorn and ASGI workers (the same way in every deployment)."""

import os
import shutil
import sys

from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Serve on $HOST:$PORT (default 127.0.0.1:3000) with $WEB_CONCURRENCY gunicorn workers."

    def handle(self, *args, **options) -> None:
        gunicorn = shutil.which("gunicorn", path=os.path.dirname(sys.executable)) or shutil.which(
            "gunicorn"
        )
        if gunicorn is None:
            raise CommandError("gunicorn is not installed (pip install -r requirements.txt)")
        # Reachable from this machine only unless told otherwise (containers set HOST=0.0.0.0).
        host = os.environ.setdefault("HOST", "127.0.0.1")
        port = os.environ.get("PORT", "3000")
        self.stdout.write(f"Serving on http://{host}:{port} (admin at /admin)")
        self.stdout.flush()
        os.execv(gunicorn, [gunicorn, "-c", "python:flagsite.gunicorn"])
