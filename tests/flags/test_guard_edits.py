"""Guards of a running rollout added, edited and removed: the services and the REST API."""

import json
from datetime import timedelta

import numpy as np
import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from rest_framework.test import APIClient

from flags import guards, schedules
from flags.models import AuditEntry, RolloutGuard
from tests import factories
from tests.flags.test_guards import CONFIG, DAY, SYSTEM, T0, _check_day, _rollout, _units
from tests.hostile import DEEP, NUL_JSON, SURROGATE_JSON

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    return factories.project("shop")


@pytest.fixture
def purchase(project):
    return factories.metric(project, "purchase", event="purchase", window_days=1)


@pytest.fixture
def flag(project):
    return factories.flag(project, "checkout")


@pytest.fixture
def production(flag):
    return factories.config(flag, "production")


def _api(user) -> APIClient:
    api = APIClient()
    api.force_authenticate(user)
    return api


# --- The services -------------------------------------------------------------------------


def test_a_guard_added_to_a_running_rollout_stops_it_on_a_regression(flag, production, purchase):
    rollout = _rollout(flag)  # no guard yet; its first step applied at T0
    guard = guards.guard_create(
        config=production, rollout=rollout, data={"metric": "purchase"}, **SYSTEM
    )
    assert (guard.control_variant, guard.treatment_variant, guard.tolerance) == ("off", "on", 0)
    entry = AuditEntry.objects.get(action="guard add")
    assert entry.after == {
        "guard": guard.pk,
        "rollout": rollout,
        "metric": "purchase",
        "tolerance": 0.0,
        "action": "rollback",
    }
    _units(flag, np.random.default_rng(11), 0, {"off": 0.30, "on": 0.10}, 1500)

    assert [g.pk for g in guards.guards_check(_check_day(0))] == [guard.pk]
    assert RolloutGuard.objects.get().status == "tripped"


@pytest.mark.parametrize(
    ("rollout", "data", "field"),
    [
        ("nope", {"metric": "purchase"}, "rollout"),
        ("", {"metric": "purchase"}, "rollout"),
        (7, {"metric": "purchase"}, "rollout"),
        ("a\x00b", {"metric": "purchase"}, "rollout"),
        (None, {"metric": "nope"}, "metric"),
        (None, {"metric": "purchase", "tolerance": 100}, "tolerance"),
        (None, {"metric": "purchase", "tolerance": "5"}, "tolerance"),
        (None, {"metric": "purchase", "tolerance": float("inf")}, "tolerance"),
        (None, {"metric": "purchase", "action": "explode"}, "action"),
        (None, {"metric": "purchase", "rollout": "x"}, "rollout"),
        (None, {"metric": "\ud800"}, "metric"),
        (None, ["purchase"], "body"),
    ],
)
def test_a_guard_that_cannot_be_checked_is_not_added(
    flag, production, purchase, rollout, data, field
):
    running = _rollout(flag)
    with pytest.raises(ValidationError) as error:
        guards.guard_create(
            config=production, rollout=running if rollout is None else rollout, data=data, **SYSTEM
        )
    assert field in error.value.message_dict
    assert not RolloutGuard.objects.exists()


def test_a_rollout_with_no_step_left_takes_no_guard(flag, production, purchase):
    rollout = _rollout(flag, percentages=(100,))  # its only step is applied
    with pytest.raises(ValidationError) as error:
        guards.guard_create(
            config=production, rollout=rollout, data={"metric": "purchase"}, **SYSTEM
        )
    assert "steps pending" in error.value.message_dict["rollout"][0]


def test_a_new_tolerance_restarts_the_test_from_the_edit(flag, production, purchase):
    rollout = _rollout(flag, {"metric": "purchase"})
    guard = RolloutGuard.objects.get(rollout=rollout)
    # Day 0's units regress clearly; the tolerance is edited on day 1, before any check.
    _units(flag, np.random.default_rng(12), 0, {"off": 0.30, "on": 0.10}, 1500)
    edited_at = T0 + DAY + timedelta(hours=12)

    edited = guards.guard_update(guard=guard, data={"tolerance": 2}, now=edited_at, **SYSTEM)

    assert (edited.tolerance, edited.restarted_at, edited.checked_at) == (2.0, edited_at, None)
    entry = AuditEntry.objects.get(action="guard edit")
    assert (entry.before["tolerance"], entry.after["tolerance"]) == (0.0, 2.0)
    assert entry.after["restarted"] is True
    # The units exposed before the edit no longer count: no regression to see yet.
    assert guards.guards_check(_check_day(1)) == []
    assert RolloutGuard.objects.get().p_value is None
    assert "restarted" in guards.guard_state(RolloutGuard.objects.get())
    # Units exposed after it do.
    _units(flag, np.random.default_rng(13), 2, {"off": 0.30, "on": 0.10}, 1500)
    assert len(guards.guards_check(_check_day(2))) == 1


def test_a_new_action_keeps_the_test_going(flag, purchase):
    _rollout(flag, {"metric": "purchase"})
    _units(flag, np.random.default_rng(14), 0, {"off": 0.20, "on": 0.20}, 300)
    guards.guards_check(_check_day(0))
    checked = RolloutGuard.objects.get()

    edited = guards.guard_update(guard=checked, data={"action": "pause"}, **SYSTEM)

    assert edited.action == "pause" and edited.restarted_at is None
    assert (edited.checked_at, edited.p_value) == (checked.checked_at, checked.p_value)
    assert AuditEntry.objects.get(action="guard edit").after["restarted"] is False


def test_only_a_running_guard_is_edited(flag, purchase):
    _rollout(flag, {"metric": "purchase"})
    _units(flag, np.random.default_rng(15), 0, {"off": 0.30, "on": 0.10}, 1500)
    guards.guards_check(_check_day(0))
    tripped = RolloutGuard.objects.get()

    with pytest.raises(ValidationError) as error:
        guards.guard_update(guard=tripped, data={"tolerance": 50}, **SYSTEM)

    assert "tripped" in error.value.message_dict["status"][0]
    assert RolloutGuard.objects.get().tolerance == 0


def test_a_removed_guard_no_longer_stops_its_rollout(flag, purchase):
    rollout = _rollout(flag, {"metric": "purchase"})
    guard = RolloutGuard.objects.get()

    guards.guard_delete(guard=guard, **SYSTEM)

    assert not RolloutGuard.objects.exists()
    assert AuditEntry.objects.get(action="guard remove").before["metric"] == "purchase"
    _units(flag, np.random.default_rng(16), 0, {"off": 0.30, "on": 0.10}, 1500)
    assert guards.guards_check(_check_day(0)) == []
    schedules.due_changes_apply(now=T0 + 10 * DAY)
    steps = schedules.schedule_of(factories.config(flag, "production")).filter(rollout=rollout)
    assert {step.status for step in steps} == {"applied"}


@pytest.fixture
def approval(project):
    project.require_approval = True
    project.save()
    return project


@pytest.mark.parametrize("role", ["publisher", "editor", "viewer"])
def test_only_a_project_admin_changes_guards_where_approval_is_required(
    approval, flag, production, purchase, role
):
    rollout = _rollout(flag, {"metric": "purchase"})
    guard = RolloutGuard.objects.get()
    person = factories.member(approval, role)
    writes = [
        lambda: guards.guard_create(
            config=production,
            rollout=rollout,
            data={"metric": "purchase"},
            actor=person,
            source="api",
        ),
        lambda: guards.guard_update(guard=guard, data={"tolerance": 9}, actor=person, source="api"),
        lambda: guards.guard_delete(guard=guard, actor=person, source="api"),
    ]
    for write in writes:
        with pytest.raises(PermissionDenied):
            write()
    assert list(RolloutGuard.objects.values_list("tolerance", flat=True)) == [0.0]

    admin = factories.member(approval, "admin")
    guards.guard_update(guard=guard, data={"tolerance": 9}, actor=admin, source="api")
    assert RolloutGuard.objects.get().tolerance == 9


def test_an_editor_changes_guards_in_an_unprotected_environment(project, flag, purchase):
    staging = factories.config(flag, "staging")
    steps = [{"at": T0 + 30 * DAY, "percentage": 50}]
    rollout = schedules.rollout_create(config=staging, variant="on", steps=steps, **SYSTEM)[0]
    editor = factories.member(project, "editor")

    guard = guards.guard_create(
        config=staging,
        rollout=rollout.rollout,
        data={"metric": "purchase", "tolerance": 3},
        actor=editor,
        source="admin",
    )

    assert AuditEntry.objects.get(action="guard add").actor_name == editor.username
    assert guard.tolerance == 3


# --- The REST API -------------------------------------------------------------------------


def test_the_api_adds_edits_and_removes_a_guard(project, flag, purchase):
    factories.metric(
        project, "latency", event="page", kind="numeric", aggregation="mean", better="lower"
    )
    rollout = _rollout(flag)
    api = _api(factories.member(project, "admin"))

    created = api.post(
        f"{CONFIG}/guards",
        {"rollout": rollout, "metric": "purchase", "tolerance": 5, "action": "pause"},
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["metric"], body["tolerance"], body["action"], body["status"]) == (
        "purchase",
        5.0,
        "pause",
        "active",
    )
    assert body["state"].startswith("Checking: not checked yet")
    url = f"{CONFIG}/guards/{body['id']}"

    listed = api.get(f"{CONFIG}/guards").json()
    assert [item["id"] for item in listed["results"]] == [body["id"]]

    edited = api.patch(url, {"metric": "latency"}, format="json")
    assert edited.status_code == 200, edited.content
    assert edited.json()["metric"] == "latency" and edited.json()["restartedAt"] is not None
    assert api.get(url).json()["tolerance"] == 5.0

    assert api.delete(url).status_code == 204
    assert api.get(url).status_code == 404
    actions = AuditEntry.objects.filter(action__startswith="guard ").values_list("action")
    assert sorted(a for (a,) in actions) == ["guard add", "guard edit", "guard remove"]


HOSTILE_BODIES = [
    ('{"metric": "purchase", "tolerance": 100}', "tolerance"),
    ('{"metric": "purchase", "tolerance": -1}', "tolerance"),
    ('{"metric": "purchase", "tolerance": "lots"}', "tolerance"),
    ('{"metric": "purchase", "tolerance": 1e400}', "tolerance"),
    ('{"metric": "purchase", "tolerance": true}', "tolerance"),
    ('{"metric": "purchase", "action": "explode"}', "action"),
    ('{"metric": "purchase", "colour": "red"}', "colour"),
    ('{"metric": 7}', "metric"),
    ('{"metric": "nope"}', "metric"),
    ('{"metric": ["purchase"]}', "metric"),
    ('{"metric": "' + "x" * 100_000 + '"}', "metric"),
    (f'{{"metric": {NUL_JSON}}}', "metric"),
    (f'{{"metric": {SURROGATE_JSON}}}', "metric"),
    (f'{{"metric": "purchase", "action": {SURROGATE_JSON}}}', "action"),
    (f'{{"metric": {DEEP}}}', ""),
    ('["purchase"]', "body"),
]


@pytest.mark.parametrize(("body", "field"), HOSTILE_BODIES)
def test_the_api_refuses_a_bad_new_guard_naming_the_field(project, flag, purchase, body, field):
    rollout = _rollout(flag)
    api = _api(factories.member(project, "admin"))
    if body.startswith("{"):
        body = body.replace("{", '{"rollout": "' + rollout + '", ', 1)

    response = api.generic(
        "POST", f"{CONFIG}/guards", body.encode("utf-8", "surrogatepass"), "application/json"
    )

    assert response.status_code == 400, response.content
    assert response["Content-Type"] == "application/json"
    assert field in json.dumps(response.json())
    assert not RolloutGuard.objects.exists()


@pytest.mark.parametrize(("body", "field"), [*HOSTILE_BODIES, ("{}", "body")])
def test_the_api_refuses_a_bad_edit_naming_the_field(project, flag, purchase, body, field):
    _rollout(flag, {"metric": "purchase", "tolerance": 1})
    guard = RolloutGuard.objects.get()
    api = _api(factories.member(project, "admin"))

    response = api.generic(
        "PATCH",
        f"{CONFIG}/guards/{guard.pk}",
        body.encode("utf-8", "surrogatepass"),
        "application/json",
    )

    assert response.status_code == 400, response.content
    assert field in json.dumps(response.json())
    assert RolloutGuard.objects.get().tolerance == 1
    assert RolloutGuard.objects.get().restarted_at is None


@pytest.mark.parametrize("guard_id", ["999", "abc", "1" * 40, "%F0%9F%92%A3"])
def test_an_unknown_guard_is_a_404(project, flag, purchase, guard_id):
    _rollout(flag, {"metric": "purchase"})
    api = _api(factories.member(project, "admin"))

    for method in ("get", "patch", "delete"):
        response = getattr(api, method)(f"{CONFIG}/guards/{guard_id}", {}, format="json")
        assert response.status_code == 404, (method, response.content)
    assert RolloutGuard.objects.count() == 1


def test_the_api_refuses_guard_changes_that_need_approval(approval, flag, purchase):
    rollout = _rollout(flag, {"metric": "purchase"})
    guard = RolloutGuard.objects.get()
    api = _api(factories.member(approval, "publisher"))

    added = api.post(f"{CONFIG}/guards", {"rollout": rollout, "metric": "purchase"}, format="json")
    edited = api.patch(f"{CONFIG}/guards/{guard.pk}", {"tolerance": 9}, format="json")
    removed = api.delete(f"{CONFIG}/guards/{guard.pk}")

    assert [added.status_code, edited.status_code, removed.status_code] == [403, 403, 403]
    assert "requires approval" in edited.json()["detail"]
    assert RolloutGuard.objects.get().tolerance == 0
