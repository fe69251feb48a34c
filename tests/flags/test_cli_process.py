"""`manage.py flags` as a separate process: what scripts see (exit codes, stdout, stderr)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.conf import settings

MANAGE = Path(settings.BASE_DIR) / "manage.py"
DEMO = {
    "schemaVersion": 1,
    "project": "demo",
    "environment": "staging",
    "flags": {
        "new-checkout": {
            "type": "boolean",
            "enabled": True,
            "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}],
            "offVariant": "off",
            "targets": [{"variant": "on", "values": ["user-1"]}],
            "rules": [],
            "defaultServe": {"variant": "off"},
        }
    },
}


@pytest.fixture(scope="module")
def manage(tmp_path_factory):
    """Run manage.py against a database of its own (the tests' rows are not committed)."""
    database = tmp_path_factory.mktemp("cli") / "db.sqlite3"
    env = {
        **os.environ,
        "DB_URL": f"sqlite:///{database}",
        "REDIS_URL": "",
        "PYTHONWARNINGS": "ignore",
        "NODE_ENV": "development",
    }

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, str(MANAGE), *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )

    migrated = run("migrate", "--no-input", "-v", "0")
    assert migrated.returncode == 0, migrated.stderr
    created = run("flags", "import", "-", "--create-missing", stdin=json.dumps(DEMO))
    assert created.returncode == 0, created.stderr
    return run


def test_a_successful_command_exits_0(manage):
    result = manage("flags", "evaluate", "demo/new-checkout", "staging", "targetingKey=user-1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[1:] == ["variant: on", "reason:  TARGETING_MATCH"]


def test_bad_input_exits_2_with_one_line_on_stderr(manage):
    result = manage("flags", "toggle", "demo/nope", "staging", "on")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.strip() == "CommandError: unknown flag 'nope' in project 'demo'"


def test_invalid_arguments_exit_2_with_usage(manage):
    result = manage("flags", "create", "demo/x", "--type", "decimal")
    assert result.returncode == 2
    assert "invalid choice: 'decimal'" in result.stderr


def test_export_then_import_through_a_pipe(manage):
    exported = manage("flags", "export", "demo", "staging")
    assert exported.returncode == 0, exported.stderr
    result = manage(
        "flags", "import", "-", "demo", "production", "--dry-run", "--json", stdin=exported.stdout
    )
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    assert plan["dry_run"] is True
    assert plan["counts"]["skipped"] >= 1


def test_promote_without_an_answer_changes_nothing(manage):
    result = manage("flags", "promote", "demo", "staging", "production", "new-checkout")
    assert result.returncode == 1
    assert "Apply to production? [y/N]" in result.stdout
    assert result.stderr.strip() == "CommandError: Cancelled: nothing was changed."
