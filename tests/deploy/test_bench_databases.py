"""The benchmarks' databases: each makes and drops one of its own, never the one $DB_URL
names (which may be someone's working database)."""

import os
import subprocess
import sys

import pytest

from bench.databases import bench_url
from tests.deploy.conftest import REPO

SCRIPT = """
import os
from bench.databases import database, own_database
url = own_database("the bench", "postgres://postgres@127.0.0.1:5432/flags_bench_probe")
print(url)
database(url, "drop")
"""


def test_the_bench_database_is_its_own_on_the_server_db_url_names():
    given = "postgres://someone:secret@db.internal:6543/production_flags?sslmode=require"
    assert bench_url(given, "postgres://postgres@127.0.0.1:5432/flags_bench_scale") == (
        "postgres://someone:secret@db.internal:6543/flags_bench_scale?sslmode=require"
    )
    default = "postgres://postgres@127.0.0.1:5432/flags_bench_scale"
    assert bench_url(None, default) == bench_url("", default) == default


def test_a_benchmark_leaves_the_database_db_url_names_alone(scratch_db_url):
    if not scratch_db_url.startswith("postgres"):
        pytest.skip("the benchmarks measure PostgreSQL: DB_URL names none here")
    import psycopg

    with psycopg.connect(scratch_db_url, autocommit=True) as connection:
        connection.execute("CREATE TABLE precious (id int)")
        connection.execute("INSERT INTO precious VALUES (42)")
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env={**os.environ, "DB_URL": scratch_db_url},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("/flags_bench_probe")
    with psycopg.connect(scratch_db_url) as connection:
        assert connection.execute("SELECT id FROM precious").fetchall() == [(42,)]


def test_a_benchmark_refuses_a_database_that_is_not_postgresql(tmp_path):
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=REPO,
        env={**os.environ, "DB_URL": f"sqlite:///{tmp_path / 'mine.sqlite3'}"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "measures PostgreSQL" in done.stderr
