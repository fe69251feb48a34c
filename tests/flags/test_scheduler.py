"""Scheduled changes and rollouts: applied when due, once, by any number of workers."""

import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from flags import schedules
from flags.models import AuditEntry, FlagConfig, ScheduledChange
from tests import factories

pytestmark = pytest.mark.django_db


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
