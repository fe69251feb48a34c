"""Scheduled changes and rollouts: applied when due, once, by any number of workers."""

import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from flags import schedules
from flags.models import AuditEntry, FlagConfig, ScheduledChange
from tests import factories

pytestmark = pytest.mark.django_db
SYSTEM = {"actor": None, "source": "cli"}


def url(flag, environment: str, rest: str = "") -> str:
    return f"/api/v1/projects/{flag.project.key}/flags/{flag.key}/environments/{environment}{rest}"


def serving(flag, environment: str = "staging") -> dict:
    from evaluation.documents import flag_state

    return flag_state(flag, factories.environment(flag.project, environment))["defaultServe"]


def test_a_rollout_follows_its_steps_at_their_times():
    project = factories.project()
    flag = factories.flag(project, "search")
    api = APIClient()
    api.force_authenticate(factories.member(project, "editor"))
    start = timezone.now() + timedelta(hours=1)
    steps = [
        {"at": (start + timedelta(hours=i)).isoformat(), "percentage": p}
        for i, p in enumerate([5, 25, 50, 100])
    ]

    response = api.post(
        url(flag, "staging", "/rollouts"), {"variant": "on", "steps": steps}, format="json"
    )

    assert response.status_code == 201, response.content
    assert [change["status"] for change in response.json()] == ["pending"] * 4
    assert schedules.due_changes_apply(now=timezone.now()) == []
    weights = []
    for hour in range(3):
        schedules.due_changes_apply(now=start + timedelta(hours=hour, minutes=1))
        weights.append([v["weight"] for v in serving(flag)["rollout"]["variants"]])
    assert weights == [[5, 95], [25, 75], [50, 50]]
    schedules.due_changes_apply(now=start + timedelta(hours=3, minutes=1))
    assert serving(flag) == {"variant": "on"}
    config = factories.config(flag, "staging")
    assert config.enabled and config.version == 5
    assert [v.source for v in config.versions.order_by("version")][1:] == ["scheduler"] * 4
    listed = api.get(url(flag, "staging", "/schedule")).json()["results"]
    assert [item["appliedVersion"] for item in listed] == [2, 3, 4, 5]


def test_steps_must_go_forward_in_time():
    project = factories.project()
    flag = factories.flag(project)
    api = APIClient()
    api.force_authenticate(factories.member(project, "editor"))
    now = timezone.now()
    steps = [{"at": now.isoformat(), "percentage": 5}, {"at": now.isoformat(), "percentage": 50}]
    response = api.post(
        url(flag, "staging", "/rollouts"), {"variant": "on", "steps": steps}, format="json"
    )
    assert response.status_code == 400
    assert "steps[1].at" in response.json()["fields"]


def test_run_scheduler_once_applies_what_is_due_and_a_cancelled_change_never(capsys):
    project = factories.project()
    flag = factories.flag(project)
    editor = factories.member(project, "editor")
    config = factories.config(flag, "staging")
    due = schedules.schedule_create(
        config=config,
        data={"enabled": True},
        run_at=timezone.now() - timedelta(seconds=1),
        actor=editor,
        source="api",
    )
    cancelled = schedules.schedule_create(
        config=config,
        data={"offVariant": "on"},
        run_at=timezone.now() - timedelta(seconds=1),
        actor=editor,
        source="api",
    )
    schedules.schedule_cancel(change=cancelled, actor=editor, source="api")

    call_command("run_scheduler", "--once")

    assert f"applied scheduled change #{due.pk}" in capsys.readouterr().out
    config.refresh_from_db()
    assert config.enabled is True and config.off_variant == "off"
    call_command("run_scheduler", "--once")  # the single-worker path: nothing twice
    config.refresh_from_db()
    assert config.version == 2
    assert AuditEntry.objects.filter(source="scheduler", object_type="flag_config").count() == 1


def test_a_change_that_became_invalid_fails_with_its_reason():
    project = factories.project()
    variants = [{"key": key, "value": key.upper()} for key in ("a", "b", "c")]
    flag = factories.flag(project, type="string", variants=variants)
    config = factories.config(flag, "staging")
    change = schedules.schedule_create(
        config=config,
        data={"defaultServe": {"variant": "b"}},
        run_at=timezone.now(),
        actor=None,
        source="cli",
    )
    # Unused variants can go; the scheduled change still names it.
    from flags import services

    services.flag_update(
        flag=flag, data={"variants": [variants[0], variants[2]]}, actor=None, source="cli"
    )

    [failed] = schedules.due_changes_apply()

    assert failed.pk == change.pk and failed.status == "failed"
    assert "defaultServe" in failed.error
    assert AuditEntry.objects.filter(object_type="scheduled_change", action="fail").exists()


def test_editors_with_approval_required_must_schedule_through_a_request():
    project = factories.project()
    project.require_approval = True
    project.save()
    flag = factories.flag(project)
    api = APIClient()
    api.force_authenticate(factories.member(project, "publisher"))
    body = {"enabled": True, "at": timezone.now().isoformat()}
    response = api.post(url(flag, "production", "/schedule"), body, format="json")
    assert response.status_code == 403
    assert "change request" in response.json()["detail"]


def test_a_change_that_cannot_be_applied_fails_and_the_others_apply_in_the_same_pass(capsys):
    project = factories.project()
    flag = factories.flag(project)
    staging, development = factories.config(flag, "staging"), factories.config(flag, "development")
    now = timezone.now()
    first = schedules.schedule_create(
        config=staging, data={"enabled": True}, run_at=now - timedelta(minutes=3), **SYSTEM
    )
    # A row no door writes any more (say, from before a check existed): applying it raises
    # a TypeError, not a validation error.
    broken = ScheduledChange.objects.create(
        config=staging, data=5, run_at=now - timedelta(minutes=2), created_by_name="legacy"
    )
    last = schedules.schedule_create(
        config=development, data={"enabled": True}, run_at=now - timedelta(minutes=1), **SYSTEM
    )

    call_command("run_scheduler", "--once")  # no exception: exit status 0

    out = capsys.readouterr().out
    assert f"applied scheduled change #{first.pk}" in out
    assert f"failed scheduled change #{broken.pk}" in out
    assert f"applied scheduled change #{last.pk}" in out
    broken.refresh_from_db()
    assert broken.status == "failed"
    assert broken.error.startswith("could not be applied: TypeError")
    assert AuditEntry.objects.filter(object_type="scheduled_change", action="fail").count() == 1
    assert (
        factories.config(flag, "staging").enabled and factories.config(flag, "development").enabled
    )
    call_command("run_scheduler", "--once")  # the failed change is not tried again
    assert ScheduledChange.objects.get(pk=broken.pk).applied_at == broken.applied_at


SETUP = """
from datetime import timedelta
from django.utils import timezone
from flags import schedules, services
from flags.models import FlagConfig, ScheduledChange
project = services.project_create(key="ops", name="", actor=None, source="system")
flag = services.flag_create(project=project, key="switch", actor=None, source="system")
config = FlagConfig.objects.get(flag=flag, environment__key="staging")
now = timezone.now()
broken = ScheduledChange.objects.create(
    config=config, data=5, run_at=now - timedelta(seconds=5), created_by_name="legacy"
)
later = schedules.schedule_create(
    config=config, data={"enabled": True}, run_at=now + timedelta(seconds=2),
    actor=None, source="cli",
)
print(broken.pk, later.pk)
"""


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # nothing listens there once the probe is closed


@pytest.mark.server
@pytest.mark.parametrize("redis", ["none", "away"])
def test_the_scheduler_process_keeps_running_past_a_change_that_fails(tmp_path, redis):
    """With Redis away, every pass's drain fails as well: logged, and the loop goes on."""
    database = tmp_path / "db.sqlite3"
    env = {
        **os.environ,
        "DB_URL": f"sqlite:///{database}",
        "REDIS_URL": f"redis://127.0.0.1:{_closed_port()}/0" if redis == "away" else "",
        "NODE_ENV": "development",
    }
    manage = [sys.executable, str(Path(settings.BASE_DIR) / "manage.py")]

    def run(*args: str) -> str:
        result = subprocess.run(
            [*manage, *args], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 0, result.stderr
        return result.stdout

    run("migrate", "--no-input", "-v", "0")
    broken, later = (int(pk) for pk in run("shell", "-c", SETUP).splitlines()[-1].split())
    log_file = tmp_path / "scheduler.log"
    scheduler = subprocess.Popen(
        [*manage, "run_scheduler", "--interval", "0.2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log_file.open("w"),  # a file: a full pipe would block the process
    )

    def status(pk: int) -> str:
        with sqlite3.connect(database) as db:
            row = db.execute("SELECT status FROM flags_scheduledchange WHERE id = ?", (pk,))
            return row.fetchone()[0]

    try:
        deadline = time.monotonic() + 60
        while status(later) == "pending" and scheduler.poll() is None:
            assert time.monotonic() < deadline, "the later change was never applied"
            time.sleep(0.2)
        assert scheduler.poll() is None, log_file.read_text()  # still running
        assert (status(broken), status(later)) == ("failed", "applied")
        while redis == "away" and "draining exposures still fails" not in log_file.read_text():
            assert time.monotonic() < deadline and scheduler.poll() is None, log_file.read_text()
            time.sleep(0.2)  # passes go on while the drain keeps failing
    finally:
        scheduler.send_signal(signal.SIGTERM)
        returncode = scheduler.wait(30)
    assert returncode == 0
    log = log_file.read_text()
    assert f"scheduled change #{broken} could not be applied" in log
    if redis == "away":  # the traceback once, then a line a pass
        assert log.count("draining exposures failed; trying again next pass") == 1, log
        assert "draining exposures still fails" in log
    else:
        assert "draining exposures" not in log


# --- Several workers ----------------------------------------------------------------------


def _run_workers(count: int, now) -> list[list[int]]:
    barrier = threading.Barrier(count)
    applied: list[list[int]] = [[] for _ in range(count)]
    errors: list[BaseException] = []

    def work(index: int) -> None:
        try:
            barrier.wait()
            applied[index] = [change.pk for change in schedules.due_changes_apply(now=now)]
        except BaseException as error:  # reported by the test thread
            errors.append(error)
        finally:
            connection.close()

    threads = [threading.Thread(target=work, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    return applied


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="SQLite has no row locks: run one worker there (the --once test covers it)",
)
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_workers_apply_each_due_change_exactly_once():
    project = factories.project()
    flag = factories.flag(project)
    config = factories.config(flag, "staging")
    start = timezone.now() - timedelta(minutes=5)
    steps = [
        {"at": start + timedelta(seconds=i), "percentage": percentage}
        for i, percentage in enumerate(range(1, 41))
    ]
    changes = schedules.rollout_create(
        config=config, variant="on", steps=steps, actor=None, source="cli"
    )
    single = schedules.schedule_create(
        config=factories.config(flag, "development"),
        data={"enabled": True},
        run_at=start,
        actor=None,
        source="cli",
    )

    first, second = _run_workers(2, timezone.now())

    expected = {change.pk for change in changes} | {single.pk}
    assert not set(first) & set(second)
    assert set(first) | set(second) == expected
    assert first and second  # both workers took part
    statuses = set(ScheduledChange.objects.values_list("status", flat=True))
    assert statuses == {"applied"}
    assert FlagConfig.objects.get(pk=config.pk).version == 1 + len(changes)
    assert config.versions.count() == 1 + len(changes)
    applied_versions = ScheduledChange.objects.filter(config=config).values_list(
        "applied_version", flat=True
    )
    assert sorted(applied_versions) == list(range(2, 2 + len(changes)))
    audited = AuditEntry.objects.filter(source="scheduler", object_type="flag_config")
    assert audited.count() == len(expected)
    assert FlagConfig.objects.get(pk=single.config_id).version == 2


@pytest.mark.skipif(connection.vendor != "postgresql", reason="needs PostgreSQL row locks")
@pytest.mark.django_db(transaction=True)
def test_one_due_change_raced_by_two_workers_is_applied_once():
    project = factories.project()
    flag = factories.flag(project)
    change = schedules.schedule_create(
        config=factories.config(flag, "staging"),
        data={"enabled": True},
        run_at=timezone.now() - timedelta(seconds=1),
        actor=None,
        source="cli",
    )

    results = _run_workers(2, timezone.now())

    assert sorted(len(ids) for ids in results) == [0, 1]
    assert FlagConfig.objects.get(pk=change.config_id).version == 2
