"""The versions page's guards: add one to a running rollout, edit it, remove it, refused input."""

import html

import pytest

from flags.models import AuditEntry, RolloutGuard
from tests import factories
from tests.flags.test_guards import _rollout

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("guard_metrics")]


@pytest.fixture
def flag(project):
    return factories.flag(project, "checkout")


@pytest.fixture
def page(flag):
    return f"/admin/flags/changerequest/versions/{factories.config(flag, 'production').pk}/"


def _post(client, page: str, **data) -> str:
    return client.post(page, data, follow=True).content.decode()


def test_a_publisher_adds_edits_and_removes_a_guard(client, project, flag, page):
    rollout = _rollout(flag)
    client.force_login(factories.member(project, "publisher", username="pat"))
    assert "Add a guard" in client.get(page).content.decode()

    added = _post(
        client,
        page,
        guard_add="1",
        rollout=rollout,
        metric="purchase",
        tolerance="5",
        action="pause",
    )
    guard = RolloutGuard.objects.get()
    assert (guard.metric.key, guard.tolerance, guard.action) == ("purchase", 5.0, "pause")
    assert f"Guard purchase added to rollout {rollout}." in added
    assert "Checking: not checked yet." in added

    edited = _post(
        client, page, guard_edit="1", guard=guard.pk, metric="signup", tolerance="5", action="pause"
    )
    assert "The test of guard signup restarted now" in edited
    assert "Test restarted" in edited
    assert RolloutGuard.objects.get().metric.key == "signup"

    removed = _post(client, page, guard_remove="1", guard=guard.pk)
    assert f"Guard signup removed; rollout {rollout} goes on without it." in removed
    assert not RolloutGuard.objects.exists()
    entries = AuditEntry.objects.filter(action__startswith="guard ", source="admin")
    assert sorted(entries.values_list("action", flat=True)) == [
        "guard add",
        "guard edit",
        "guard remove",
    ]
    assert set(entries.values_list("actor_name", flat=True)) == {"pat"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"guard_add": "1", "rollout": "nope", "metric": "purchase"}, "rollout: no rollout"),
        ({"guard_add": "1", "rollout": "{r}", "metric": "nope"}, "metric: no metric"),
        (
            {"guard_add": "1", "rollout": "{r}", "metric": "purchase", "tolerance": "lots"},
            "tolerance: a percentage, not",
        ),
        (
            {"guard_add": "1", "rollout": "{r}", "metric": "purchase", "tolerance": "1e400"},
            "tolerance: a number",
        ),
        (
            {"guard_add": "1", "rollout": "{r}", "metric": "purchase", "tolerance": "nan"},
            "tolerance: a number",
        ),
        (
            {"guard_add": "1", "rollout": "{r}", "metric": "purchase", "action": "explode"},
            "action: one of rollback, pause",
        ),
        ({"guard_add": "1", "rollout": "{r}", "metric": "pur\x00chase"}, "contains a NUL"),
        ({"guard_add": "1", "rollout": "{r}", "metric": "x" * 100_000}, "metric: no metric"),
        ({"guard_edit": "1", "guard": "abc", "tolerance": "1"}, "guard: expected a whole"),
        ({"guard_edit": "1", "guard": "999", "tolerance": "1"}, "no guard 999"),
        ({"guard_edit": "1", "guard": "{g}", "tolerance": "-1"}, "tolerance: a percentage"),
        ({"guard_edit": "1", "guard": "{g}"}, "give a metric, a tolerance or an action"),
        ({"guard_remove": "1", "guard": "9" * 40}, "guard: expected a whole number"),
    ],
)
def test_bad_input_is_shown_and_nothing_changes(client, project, flag, page, data, message):
    rollout = _rollout(flag, {"metric": "signup", "tolerance": 3})
    guard = RolloutGuard.objects.get()
    client.force_login(factories.member(project, "publisher"))
    data = {k: v.replace("{r}", rollout).replace("{g}", str(guard.pk)) for k, v in data.items()}

    response = client.post(page, data, follow=True)

    assert response.status_code == 200
    assert message.lower() in html.unescape(response.content.decode()).lower()
    assert list(RolloutGuard.objects.values_list("metric__key", "tolerance")) == [("signup", 3)]
    assert not AuditEntry.objects.filter(action__startswith="guard ").exists()


def test_where_approval_is_required_only_a_project_admin_changes_guards(
    client, project, flag, page
):
    project.require_approval = True
    project.save()
    rollout = _rollout(flag, {"metric": "signup"})
    guard = RolloutGuard.objects.get()
    client.force_login(factories.member(project, "publisher"))

    shown = client.get(page).content.decode()
    assert "Add a guard" not in shown and "Save guard" not in shown
    assert "a project admin where approval is required" in shown
    refused = _post(client, page, guard_edit="1", guard=guard.pk, tolerance="9")
    assert "requires approval" in refused
    refused = _post(client, page, guard_add="1", rollout=rollout, metric="purchase")
    assert "requires approval" in refused
    assert RolloutGuard.objects.get().tolerance == 0 and RolloutGuard.objects.count() == 1

    client.force_login(factories.member(project, "admin"))
    assert "Save guard" in client.get(page).content.decode()
    _post(client, page, guard_edit="1", guard=guard.pk, tolerance="9")
    assert RolloutGuard.objects.get().tolerance == 9


def test_saving_only_a_new_action_keeps_the_test_going(client, project, flag, page):
    _rollout(flag, {"metric": "signup", "tolerance": 2.555})
    guard = RolloutGuard.objects.get()
    client.force_login(factories.member(project, "publisher"))
    shown = client.get(page).content.decode()
    assert 'name="tolerance" value="2.555"' in shown  # the box holds the exact tolerance

    saved = _post(
        client,
        page,
        guard_edit="1",
        guard=guard.pk,
        metric="signup",
        tolerance="2.555",
        action="pause",
    )

    assert "Guard saved." in saved and "restarted" not in saved
    edited = RolloutGuard.objects.get()
    assert (edited.action, edited.tolerance, edited.restarted_at) == ("pause", 2.555, None)
