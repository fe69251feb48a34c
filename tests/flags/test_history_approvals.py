"""History and revert, change requests for protected environments, the kill switch (API)."""

from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from flags import schedules
from flags.models import AuditEntry, ChangeRequest, FlagConfig, ScheduledChange
from tests import factories

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


@pytest.fixture
def project():
    return factories.project("shop")


@pytest.fixture
def flag(project):
    return factories.flag(project, "checkout")


def url(flag, environment: str, rest: str = "") -> str:
    return f"/api/v1/projects/{flag.project.key}/flags/{flag.key}/environments/{environment}{rest}"


# --- History and revert -------------------------------------------------------------------


def test_every_change_is_a_numbered_version_with_who_and_a_readable_diff(project, flag):
    api = client_for(factories.member(project, "editor", username="erin"))
    assert api.patch(url(flag, "development"), {"enabled": True}, format="json").status_code == 200
    rollout = {
        "rollout": {"variants": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}]}
    }
    api.patch(url(flag, "development"), {"defaultServe": rollout}, format="json")

    response = api.get(url(flag, "development", "/versions"))

    assert response.status_code == 200
    versions = response.json()["results"]
    assert [v["version"] for v in versions] == [3, 2, 1]
    assert versions[0]["actor"] == "erin" and versions[0]["current"]
    assert versions[0]["changes"] == [
        "defaultServe: variant on → rollout on 25% / off 75% by targetingKey"
    ]
    assert versions[1]["changes"] == ["enabled: off → on"]
    assert versions[2]["changes"] == ["created"]


def test_restoring_a_version_writes_it_back_as_a_new_audited_version(project, flag):
    api = client_for(factories.member(project, "editor"))
    api.patch(url(flag, "development"), {"enabled": True}, format="json")
    api.patch(
        url(flag, "development"),
        {"rules": [{"name": "beta", "conditions": [], "serve": {"variant": "off"}}]},
        format="json",
    )

    response = api.post(
        url(flag, "development", "/versions/1/restore"), {"version": 3}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["version"] == 4
    config = factories.config(flag, "development")
    assert config.enabled is False and config.version == 4
    assert not config.flag.rules.filter(environment=config.environment).exists()
    entry = AuditEntry.objects.filter(object_type="flag_config").first()
    assert entry.action == "restore v1"
    versions = api.get(url(flag, "development", "/versions")).json()["results"]
    assert versions[0]["action"] == "restore v1"
    assert "enabled: on → off" in versions[0]["changes"]
    assert "rule 1 'beta' removed" in versions[0]["changes"]


def test_restoring_on_a_stale_version_is_a_conflict(project, flag):
    api = client_for(factories.member(project, "editor"))
    api.patch(url(flag, "development"), {"enabled": True}, format="json")

    response = api.post(
        url(flag, "development", "/versions/1/restore"), {"version": 1}, format="json"
    )

    assert response.status_code == 409
    assert response.json()["current_version"] == 2


# --- Change requests ----------------------------------------------------------------------


@pytest.fixture
def guarded(project):
    project.require_approval = True
    project.save()
    return project


def test_a_direct_write_to_a_protected_environment_is_refused_with_how_to_ask(guarded, flag):
    publisher = client_for(factories.member(guarded, "publisher"))

    response = publisher.patch(url(flag, "production"), {"enabled": True}, format="json")

    assert response.status_code == 403
    assert "open a change request" in response.json()["detail"]
    assert "/change-requests" in response.json()["detail"]
    assert factories.config(flag, "production").enabled is False


def test_admins_and_unprotected_environments_keep_direct_writes(guarded, flag):
    admin = client_for(factories.member(guarded, "admin"))
    editor = client_for(factories.member(guarded, "editor"))
    assert admin.patch(url(flag, "production"), {"enabled": True}, format="json").status_code == 200
    assert editor.patch(url(flag, "staging"), {"enabled": True}, format="json").status_code == 200


def test_approval_flow_with_a_conflict_and_a_rebase(guarded, flag):
    author = factories.member(guarded, "editor", username="ed")
    editor = client_for(author)
    reviewer = client_for(factories.member(guarded, "publisher", username="pat"))
    admin = client_for(factories.member(guarded, "admin"))

    created = editor.post(
        url(flag, "production", "/change-requests"),
        {"title": "Launch", "enabled": True, "version": 1},
        format="json",
    )
    assert created.status_code == 201, created.content
    request = created.json()
    assert request["status"] == "open" and request["diff"] == ["enabled: off → on"]
    request_url = url(flag, "production", f"/change-requests/{request['id']}")

    # The author cannot approve their own request.
    own = editor.post(f"{request_url}/approve", {}, format="json")
    assert own.status_code == 403

    # Someone changes production meanwhile: the request is now a conflict.
    admin.patch(url(flag, "production"), {"offVariant": "on"}, format="json")
    assert editor.get(request_url).json()["conflict"] is True

    # Approving it does not apply it on top of a configuration it was not written against.
    approved = reviewer.post(f"{request_url}/approve", {"comment": "ok"}, format="json").json()
    assert approved["status"] == "approved" and approved["conflict"] is True
    assert factories.config(flag, "production").enabled is False

    # Rebasing needs the author's confirmation, then review starts again.
    assert (
        editor.post(f"{request_url}/rebase", {"confirm": False}, format="json").status_code == 400
    )
    assert (
        reviewer.post(f"{request_url}/rebase", {"confirm": True}, format="json").status_code == 403
    )
    rebased = editor.post(f"{request_url}/rebase", {"confirm": True}, format="json").json()
    assert rebased["status"] == "open" and rebased["conflict"] is False
    assert rebased["baseVersion"] == 2 and rebased["approvals"] == []

    applied = reviewer.post(f"{request_url}/approve", {}, format="json").json()

    assert applied["status"] == "applied" and applied["appliedVersion"] == 3
    config = factories.config(flag, "production")
    assert config.enabled is True and config.off_variant == "on"
    actions = list(
        AuditEntry.objects.filter(object_type="change_request")
        .order_by("id")
        .values_list("action", flat=True)
    )
    assert actions == ["propose", "approve", "rebase", "approve", "apply"]
    version = config.versions.get(version=3)
    assert version.action == f"apply request #{request['id']}" and version.actor_name == "pat"


def test_a_rejected_request_is_never_applied(guarded, flag):
    editor = client_for(factories.member(guarded, "editor"))
    reviewer = client_for(factories.member(guarded, "publisher"))
    request = editor.post(
        url(flag, "production", "/change-requests"), {"enabled": True}, format="json"
    ).json()

    rejected = reviewer.post(
        url(flag, "production", f"/change-requests/{request['id']}/reject"),
        {"comment": "not now"},
        format="json",
    ).json()

    assert rejected["status"] == "rejected" and rejected["rejections"]
    listed = reviewer.get(f"/api/v1/projects/{guarded.key}/change-requests?status=rejected").json()
    assert [item["id"] for item in listed["results"]] == [request["id"]]
    assert factories.config(flag, "production").enabled is False


def test_viewers_cannot_propose_and_editors_cannot_approve(guarded, flag):
    viewer = client_for(factories.member(guarded, "viewer"))
    assert (
        viewer.post(
            url(flag, "production", "/change-requests"), {"enabled": True}, format="json"
        ).status_code
        == 403
    )
    request = client_for(factories.member(guarded, "editor")).post(
        url(flag, "production", "/change-requests"), {"enabled": True}, format="json"
    )
    other_editor = client_for(factories.member(guarded, "editor"))
    response = other_editor.post(
        url(flag, "production", f"/change-requests/{request.json()['id']}/approve"), format="json"
    )
    assert response.status_code == 403


def test_an_invalid_proposal_is_refused_when_proposed(guarded, flag):
    editor = client_for(factories.member(guarded, "editor"))
    response = editor.post(
        url(flag, "production", "/change-requests"), {"offVariant": "nope"}, format="json"
    )
    assert response.status_code == 400
    assert "offVariant" in response.json()["fields"]
    assert not ChangeRequest.objects.exists()


def test_an_approved_request_with_a_time_waits_for_the_scheduler(guarded, flag):
    editor = client_for(factories.member(guarded, "editor"))
    reviewer = client_for(factories.member(guarded, "publisher"))
    at = timezone.now() + timedelta(hours=1)
    request = editor.post(
        url(flag, "production", "/change-requests"),
        {"enabled": True, "scheduleAt": at.isoformat()},
        format="json",
    ).json()

    approved = reviewer.post(
        url(flag, "production", f"/change-requests/{request['id']}/approve"), format="json"
    ).json()

    assert approved["status"] == "approved"
    assert factories.config(flag, "production").enabled is False
    assert schedules.due_changes_apply(now=timezone.now()) == []
    [applied] = schedules.due_changes_apply(now=at + timedelta(seconds=1))
    assert applied.status == ScheduledChange.Status.APPLIED
    assert factories.config(flag, "production").enabled is True
    assert ChangeRequest.objects.get().status == "applied"


# --- Kill switch --------------------------------------------------------------------------


def test_kill_switch_turns_the_flag_off_now_and_cancels_its_schedule(guarded, flag):
    factories.configure(flag, "production", enabled=True)
    other = factories.flag(guarded, "other")
    at = timezone.now() + timedelta(hours=1)
    for target in (flag, other):
        ScheduledChange.objects.create(
            config=factories.config(target, "production"),
            data={"enabled": True},
            run_at=at,
            created_by_name="system",
        )
    publisher = client_for(factories.member(guarded, "publisher", username="oncall"))

    response = publisher.post(url(flag, "production", "/kill"), format="json")

    assert response.status_code == 200, response.content
    assert response.json()["enabled"] is False
    config = FlagConfig.objects.get(flag=flag, environment__key="production")
    assert config.enabled is False
    assert config.schedule.get().status == "cancelled"
    assert factories.config(other, "production").schedule.get().status == "pending"
    entry = AuditEntry.objects.filter(object_type="flag_config", flag_key=flag.key).first()
    assert entry.action == "kill" and entry.actor_name == "oncall"
    assert AuditEntry.objects.filter(object_type="scheduled_change", action="kill").exists()
    # Nothing scheduled turns it back on.
    schedules.due_changes_apply(now=at + timedelta(minutes=1))
    assert FlagConfig.objects.get(pk=config.pk).enabled is False


def test_editors_cannot_kill_in_a_protected_environment(project, flag):
    editor = client_for(factories.member(project, "editor"))
    assert editor.post(url(flag, "production", "/kill"), format="json").status_code == 403
