"""`manage.py schedule`: list a flag's scheduled changes, start a stepped rollout with a
guard, cancel a pending change; bad input is one line and exit code 2."""

import json
from datetime import UTC, datetime, timedelta

import pytest

from flags.models import AuditEntry, RolloutGuard, ScheduledChange
from tests import factories
from tests.flags.command_line import Command
from tests.hostile import DEEP

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("guard_metrics")]

ROLLOUT = ("rollout", "shop/checkout", "production", "--variant", "on", "--percentages")


run, fails = Command("schedule").run, Command("schedule").fails


@pytest.fixture
def checkout(project):
    return factories.flag(project, "checkout")


def test_a_guarded_rollout_is_started_listed_and_a_step_cancelled(checkout):
    started = run(
        *ROLLOUT,
        "10,50,100",
        "--every-hours",
        "6",
        "--start",
        "2031-05-01T08:00",
        "--guard",
        "purchase",
        "--tolerance",
        "2.5",
        "--on-regression",
        "pause",
    )

    steps = list(ScheduledChange.objects.order_by("run_at"))
    first = datetime(2031, 5, 1, 8, tzinfo=UTC)
    assert [step.run_at for step in steps] == [first + timedelta(hours=6 * i) for i in range(3)]
    rollout = steps[0].rollout
    assert (
        started.splitlines()[0] == f"Started rollout {rollout} of on, guarded by purchase: 3 steps."
    )
    assert (
        f"#{steps[0].pk} 2031-05-01 08:00 UTC: enabled: on; defaultServe: rollout on 10% / off 90%"
        " by targetingKey"
    ) in started
    guard = RolloutGuard.objects.get()
    assert (guard.rollout, guard.metric.key, guard.tolerance, guard.action) == (
        rollout,
        "purchase",
        2.5,
        "pause",
    )

    listed = run("list", "shop/checkout", "production", "--pending")
    assert listed.splitlines()[0].split() == ["ID", "AT", "(UTC)", "STATUS", "ROLLOUT", "CHANGE"]
    assert len(listed.splitlines()) == 4 and listed.count(rollout) == 3

    cancelled = run("cancel", "shop/checkout", "production", str(steps[2].pk))
    assert cancelled == f"Cancelled scheduled change #{steps[2].pk}.\n"
    as_json = json.loads(run("list", "shop/checkout", "production", "--json"))
    assert [item["status"] for item in as_json] == ["pending", "pending", "cancelled"]
    assert as_json[0]["data"]["defaultServe"]["rollout"]["variants"][0] == {
        "variant": "on",
        "weight": 10,
    }
    assert len(json.loads(run("list", "shop/checkout", "production", "--pending", "--json"))) == 2
    assert AuditEntry.objects.filter(source="cli").exists()


def test_without_start_the_first_step_is_now_and_a_zone_is_honoured(checkout):
    before = datetime.now(UTC)
    run(*ROLLOUT, "100")
    assert before - timedelta(seconds=1) <= ScheduledChange.objects.get().run_at
    ScheduledChange.objects.all().delete()
    run(*ROLLOUT, "50", "--start", "2031-05-01T10:00+02:00")
    assert ScheduledChange.objects.get().run_at == datetime(2031, 5, 1, 8, tzinfo=UTC)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ((*ROLLOUT, "5,lots"), "--percentages: whole numbers from 0 to 100, not 'lots'"),
        ((*ROLLOUT, ""), "--percentages: 1 to 20 percentages"),
        ((*ROLLOUT, "5,101"), "steps[1].percentage: a whole number from 0 to 100"),
        ((*ROLLOUT, "5\x00"), "percentages: contains a NUL"),
        ((*ROLLOUT, "\udcff"), "percentages: contains a lone surrogate"),
        ((*ROLLOUT, DEEP[:5000]), "--percentages: "),
        ((*ROLLOUT, "5", "--every-hours", "0"), "every_hours: from 1 to 2160 hours"),
        ((*ROLLOUT, "5", "--start", "soon"), "--start: a date and time like"),
        ((*ROLLOUT, "5", "--start", "2001-01-01T00:00"), "the first step cannot be in the past"),
        ((*ROLLOUT, "5", "--guard", "nope"), "no metric"),
        ((*ROLLOUT, "5", "--tolerance", "3"), "--tolerance is for a guard: give --guard METRIC"),
        ((*ROLLOUT, "5", "--guard", "purchase", "--tolerance", "nan"), "--tolerance: a percent"),
        ((*ROLLOUT, "5", "--guard", "purchase", "--tolerance", "100"), "tolerance"),
        ((*ROLLOUT, "5", "--towards", "on"), "give another variant"),
        (
            ("rollout", "shop/checkout", "production", "--variant", "nope", "--percentages", "5"),
            "unknown variant 'nope'",
        ),
        (
            ("rollout", "shop/nope", "production", "--variant", "on", "--percentages", "5"),
            "unknown flag",
        ),
        (("cancel", "shop/checkout", "production", "abc"), "unknown scheduled change 'abc'"),
        (("cancel", "shop/checkout", "production", "9" * 40), "unknown scheduled change"),
        (("cancel", "shop/checkout", "production", "٣"), "unknown scheduled change"),
        (("list", "shop/checkout", "production", "--as", "nobody"), "unknown user 'nobody'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(checkout, arguments, message):
    assert message in fails(*arguments)
    assert not ScheduledChange.objects.exists() and not RolloutGuard.objects.exists()


def test_people_need_the_role_and_approvals(project, checkout):
    project.require_approval = True
    project.save()
    factories.member(project, "viewer", username="vera")
    factories.member(project, "publisher", username="pat")

    assert "permission denied" in fails(*ROLLOUT, "5,100", "--as", "vera")
    assert "requires approval" in fails(*ROLLOUT, "5,100", "--as", "pat")
    assert "requires approval" in fails(*ROLLOUT, "5,100")  # an operator, no bypass
    assert not ScheduledChange.objects.exists()
    assert "Started rollout" in run(*ROLLOUT, "5,100", "--bypass-approval", "incident 9")
    assert "pending" in run("list", "shop/checkout", "production", "--as", "vera")
