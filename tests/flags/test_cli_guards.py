"""`manage.py guards`: list, add, edit and remove a rollout's guards from the shell."""

import json

import pytest

from flags.models import AuditEntry, RolloutGuard
from tests import factories
from tests.flags.command_line import Command
from tests.flags.test_guards import _rollout
from tests.hostile import DEEP

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("guard_metrics")]


run, fails = Command("guards").run, Command("guards").fails


@pytest.fixture
def rollout(project):
    return _rollout(factories.flag(project, "checkout"))


def test_a_guard_is_added_listed_edited_and_removed(rollout):
    added = run("add", "shop/checkout", "production", rollout, "--metric", "purchase")
    guard = RolloutGuard.objects.get()
    assert added == (
        f"Added guard #{guard.pk}: purchase on rollout {rollout} (on against off), "
        "tolerance 0%, on a regression roll back to the control\n"
    )

    listed = run("list", "shop/checkout", "production")
    row = next(line for line in listed.splitlines() if line.startswith(f"{guard.pk} "))
    assert row.split()[:6] == [str(guard.pk), rollout, "purchase", "0%", "rollback", "active"]
    assert "Checking: not checked yet" in listed
    assert f"Rollout {rollout}: on against off, 1 step pending." in listed

    edited = run("edit", "shop/checkout", "production", str(guard.pk), "--tolerance", "2.5")
    assert "tolerance 2.5%" in edited
    assert "Its test restarted now" in edited
    paused = run("edit", "shop/checkout", "production", str(guard.pk), "--on-regression", "pause")
    assert "pause (cancel the steps left)" in paused and "restarted" not in paused

    as_json = json.loads(run("list", "shop/checkout", "production", "--json"))
    assert [(g["metric"], g["tolerance"], g["action"]) for g in as_json] == [
        ("purchase", 2.5, "pause")
    ]

    removed = run("remove", "shop/checkout", "production", str(guard.pk))
    assert removed == f"Removed guard #{guard.pk} of rollout {rollout}.\n"
    assert not RolloutGuard.objects.exists()
    entries = AuditEntry.objects.filter(action__startswith="guard ", source="cli")
    assert sorted(entries.values_list("action", flat=True)) == [
        "guard add",
        "guard edit",
        "guard edit",
        "guard remove",
    ]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (("add", "shop/nope", "production", "R", "--metric", "purchase"), "unknown flag 'nope'"),
        (("add", "shop/checkout", "prod", "R", "--metric", "purchase"), "unknown environment"),
        (("add", "shop/checkout", "production", "R", "--metric", "purchase"), "rollout: no"),
        (("add", "shop/checkout", "production", "{r}", "--metric", "nope"), "metric: no metric"),
        (
            (
                "add",
                "shop/checkout",
                "production",
                "{r}",
                "--metric",
                "purchase",
                "--tolerance",
                "lots",
            ),
            "--tolerance: a percentage from 0 to below 100, not 'lots'",
        ),
        (
            (
                "add",
                "shop/checkout",
                "production",
                "{r}",
                "--metric",
                "purchase",
                "--tolerance",
                "100",
            ),
            "tolerance: a percentage from 0 to below 100",
        ),
        (
            (
                "add",
                "shop/checkout",
                "production",
                "{r}",
                "--metric",
                "purchase",
                "--tolerance",
                "nan",
            ),
            "--tolerance: a percentage",
        ),
        (
            (
                "add",
                "shop/checkout",
                "production",
                "{r}",
                "--metric",
                "purchase",
                "--tolerance",
                "1e400",
            ),
            "--tolerance: a percentage",
        ),
        (
            ("add", "shop/checkout", "production", "{r}", "--metric", "pur\ud800"),
            "metric: contains a lone",
        ),
        (
            ("add", "shop/checkout", "production", "{r}", "--metric", "a\x00b"),
            "metric: contains a NUL",
        ),
        (("add", "shop/checkout", "production", "{r}", "--metric", DEEP), "metric: no metric"),
        (
            ("add", "shop/checkout", "production", "x" * 100_000, "--metric", "purchase"),
            "rollout: no",
        ),
        (
            ("edit", "shop/checkout", "production", "999", "--tolerance", "1"),
            "unknown guard '999' in checkout in production",
        ),
        (("edit", "shop/checkout", "production", "{g}"), "give --metric, --tolerance or"),
        (("edit", "shop/checkout", "production", "{g}", "--metric", "nope"), "metric: no metric"),
        (("edit", "shop/checkout", "production", "{g}", "--tolerance", "-1"), "tolerance: a perc"),
        (("remove", "shop/checkout", "production", "abc"), "unknown guard 'abc'"),
        (("remove", "shop/checkout", "production", "\udcff"), "guard: contains a lone surrogate"),
        (("list", "shop/checkout", "production", "--as", "nobody"), "unknown user 'nobody'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(project, rollout, arguments, message):
    factories.flag(project, "other")
    run("add", "shop/checkout", "production", rollout, "--metric", "signup", "--tolerance", "3")
    guard = RolloutGuard.objects.get()
    arguments = [word.replace("{r}", rollout).replace("{g}", str(guard.pk)) for word in arguments]

    assert message in fails(*arguments)

    assert list(RolloutGuard.objects.values_list("metric__key", "tolerance")) == [("signup", 3)]


def test_people_need_the_role_and_approvals_to_change_guards(project, rollout):
    project.require_approval = True
    project.save()
    viewer = factories.member(project, "viewer", username="vera")
    factories.member(project, "publisher", username="pat")
    add = ("add", "shop/checkout", "production", rollout, "--metric", "purchase")

    assert "permission denied" in fails(*add, "--as", "vera")
    assert "requires approval" in fails(*add, "--as", "pat")
    assert "requires approval" in fails(*add)  # an operator without --bypass-approval
    assert "Added guard" in run(*add, "--bypass-approval", "incident 7")
    assert "purchase" in run("list", "shop/checkout", "production", "--as", viewer.username)
