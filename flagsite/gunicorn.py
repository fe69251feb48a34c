"""Gunicorn settings, read from the environment: `gunicorn -c python:flagsite.gunicorn`.

The serving model is gunicorn managing uvicorn ASGI workers: long-lived event streams stay
open without tying up a worker each, and ordinary views run as usual.
"""

import os

bind = f"{os.environ.get('HOST', '0.0.0.0')}:{os.environ.get('PORT', '3000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "uvicorn_worker.UvicornWorker"
wsgi_app = "flagsite.asgi:application"
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 10
keepalive = 5
# The app logs requests itself; gunicorn's own access log would print each one twice.
accesslog = None
errorlog = "-"
