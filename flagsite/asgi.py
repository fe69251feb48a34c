"""ASGI entry point: what gunicorn's uvicorn worker serves (long-lived streams need it)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flagsite.settings")

application = get_asgi_application()
