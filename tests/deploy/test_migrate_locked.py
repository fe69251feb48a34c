"""migrate_locked: migrations under a PostgreSQL advisory lock, plain migrate on SQLite."""

import subprocess
import sys

import pytest

from flags.management.commands.migrate_locked import MIGRATION_LOCK_KEY
from tests.deploy.conftest import JWT_SECRET, REPO, clean_env, run_manage

pytestmark = pytest.mark.server


def test_migrate_locked_applies_migrations_once(scratch_db_url):
    env = clean_env(DB_URL=scratch_db_url, JWT_SECRET=JWT_SECRET)
    first = run_manage("migrate_locked", "--no-input", env=env)
    assert first.returncode == 0, first.stderr
    assert "Applying flags.0001_initial... OK" in first.stdout
    again = run_manage("migrate_locked", "--no-input", env=env)
    assert again.returncode == 0, again.stderr
    assert "No migrations to apply." in again.stdout


def postgres_only(url: str) -> None:
    if not url.startswith(("postgres://", "postgresql://")):
        pytest.skip("advisory locks need PostgreSQL (set DB_URL=postgres://...)")


def test_concurrent_instances_do_not_race(scratch_db_url):
    postgres_only(scratch_db_url)
    env = clean_env(DB_URL=scratch_db_url, JWT_SECRET=JWT_SECRET)
    instances = [
        subprocess.Popen(
            [sys.executable, "manage.py", "migrate_locked", "--no-input"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    outputs = [instance.communicate(timeout=180) for instance in instances]
    assert [instance.returncode for instance in instances] == [0, 0, 0], outputs
    applied = [out for out, _ in outputs if "Applying flags.0001_initial... OK" in out]
    assert len(applied) == 1


def test_waiting_instance_gives_up_with_one_line_after_timeout(scratch_db_url):
    postgres_only(scratch_db_url)
    import psycopg

    with psycopg.connect(scratch_db_url.replace("postgres://", "postgresql://", 1)) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", [MIGRATION_LOCK_KEY])
        result = run_manage(
            "migrate_locked",
            "--no-input",
            "--timeout",
            "1",
            env=clean_env(DB_URL=scratch_db_url, JWT_SECRET=JWT_SECRET),
        )
    assert result.returncode != 0
    assert "Waiting for another instance to finish migrating" in result.stdout
    assert result.stderr.strip().splitlines() == [
        "CommandError: another instance still holds the migration lock after 1s"
    ]
