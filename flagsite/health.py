"""Liveness and readiness probes: cheap, unauthenticated, JSON.

Readiness must not take every instance out of the load balancer when a shared store goes
away: evaluation keeps answering from what each process last knew (docs/deployment.md). So
a store that stops answering after it has answered this process makes `/readyz` report
`degraded` with 200; only a store this process has never reached (a wrong DB_URL, a start
during an outage) makes it 503.
"""

from collections.abc import Callable

from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from flagsite import failures

# The stores that answered this process at least once, by what identifies them.
_reached: set[str] = set()


def healthz(request: HttpRequest) -> JsonResponse:
    """The process is up and serving requests."""
    return JsonResponse({"status": "ok"})


def _problem(error: Exception) -> str:
    return f"{type(error).__name__}: {error}".splitlines()[0]


def _database_ok() -> str | None:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except Exception as error:
        if failures.store_of(error) is not None:
            failures.note_down(failures.DATABASE, error)
        return _problem(error)
    failures.note_up(failures.DATABASE)
    return None


def _cache_ok() -> str | None:
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
        return _problem(error)
    return None


def _database_identity() -> str:
    params = connection.settings_dict
    return f"database:{params.get('HOST', '')}:{params.get('PORT', '')}/{params.get('NAME', '')}"


def _probes() -> list[tuple[str, str, Callable[[], str | None]]]:
    probes = [("database", _database_identity(), _database_ok)]
    if settings.REDIS_URL:
        probes.append(("redis", f"redis:{settings.REDIS_URL}", _cache_ok))
    return probes


def note_reachable_stores() -> None:
    """At a worker's start: which stores answer it (each worker answers probes alone)."""
    for _, identity, probe in _probes():
        if probe() is None:
            _reached.add(identity)
    connection.close()


def readyz(request: HttpRequest) -> JsonResponse:
    """Ready to serve: each store answers, or answered before (then `degraded`, still 200)."""
    checks = {"database": "ok", "redis": "not configured"}
    never_reached = failing = False
    for name, identity, probe in _probes():
        problem = probe()
        if problem is None:
            _reached.add(identity)
            checks[name] = "ok"
            continue
        checks[name] = problem
        failing = True
        never_reached = never_reached or identity not in _reached
    status = "unavailable" if never_reached else "degraded" if failing else "ok"
    return JsonResponse(
        {"status": status, "checks": checks}, status=503 if status == "unavailable" else 200
    )
