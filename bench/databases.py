"""The PostgreSQL database a benchmark creates for itself and drops when it ends."""

from __future__ import annotations

import os
import sys
from urllib.parse import urlsplit, urlunsplit

BENCH_ENVIRONMENT = {
    "DJANGO_SETTINGS_MODULE": "flagsite.settings",
    "JWT_SECRET": "bench-only-secret-0123456789abcdef0123456789",
    "LOG_LEVEL": "WARNING",
    "ALLOWED_HOSTS": "testserver,localhost,127.0.0.1",
}


def database(url: str, action: str) -> None:
    """Create (dropping one of that name first) or drop the database `url` names, from the
    server's `postgres` database."""
    import psycopg

    parts = urlsplit(url)
    name = parts.path.lstrip("/")
    admin = urlunsplit(parts._replace(path="/postgres"))
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if action == "create":
            connection.execute(f'CREATE DATABASE "{name}"')


def bench_url(given: str | None, default_url: str) -> str:
    """The database a benchmark uses: `default_url`'s database name on the server `given`
    ($DB_URL) names. Never the database $DB_URL itself names: the benchmark drops the one
    it uses, and $DB_URL may well be someone's working database."""
    if not given:
        return default_url
    own = urlsplit(default_url).path
    return urlunsplit(urlsplit(given)._replace(path=own))


def own_database(script: str, default_url: str) -> str:
    """Set up the process for Django on a fresh PostgreSQL database of its own, on the
    server $DB_URL names (bench_url), created now; its URL. Exits if $DB_URL is not
    PostgreSQL."""
    given = os.environ.get("DB_URL")
    if given and not given.startswith("postgres"):
        sys.exit(f"{script} measures PostgreSQL: give DB_URL=postgres://.../DATABASE")
    url = bench_url(given, default_url)
    os.environ["DB_URL"] = url
    for name, value in BENCH_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    if not url.startswith("postgres"):
        sys.exit(f"{script} measures PostgreSQL: give DB_URL=postgres://.../DATABASE")
    database(url, "create")
    return url
