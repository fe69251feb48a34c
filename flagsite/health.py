"""Liveness and readiness probes: cheap, unauthenticated, JSON."""

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving requests."""
    return JsonResponse({"status": "ok"})


def _database_ok() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:
        return f"{type(error).__name__}: {error}".splitlines()[0]
    return None


def _cache_ok() -> str | None:
    if not settings.REDIS_URL:
        return None
    try:
        import redis

        client = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=0.5, socket_connect_timeout=0.5
        )
        try:
            client.ping()
        finally:
            client.close()
    except Exception as error:
        return f"{type(error).__name__}: {error}".splitlines()[0]
    return None


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to serve: the database, and Redis when configured, answer."""
    failures = {
        name: problem
        for name, problem in (("database", _database_ok()), ("redis", _cache_ok()))
        if problem is not None
    }
    checks = {"database": "ok", "redis": "ok" if settings.REDIS_URL else "not configured"}
    checks.update(failures)
    status = 503 if failures else 200
    return JsonResponse(
        {"status": "unavailable" if failures else "ok", "checks": checks}, status=status
    )
