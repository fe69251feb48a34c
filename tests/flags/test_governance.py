"""The approval gate across every door: what changes protected production's answers needs
the protected role and, where the project requires approval, an approved change request.

One matrix: role × indirect path (a segment a production rule uses, archiving the flag, a
variant's value) × door (REST API, admin with forged posts, command line). Each denial
leaves production's flag document exactly as it was.
"""

import json

import pytest
from django.urls import reverse

from evaluation.documents import build_document
from flags import services
from flags.models import AuditEntry, ChangeRequest, Segment
from tests import factories
from tests.flags.command_line import fails, run
from tests.flags.test_admin import errors_of, form_data, messages_of, post_flag_page
from tests.flags.test_api_management import client_for

pytestmark = pytest.mark.django_db

SYSTEM = factories.SYSTEM
P = "/api/v1/projects/shop"
ROLES = ["viewer", "editor", "publisher", "admin"]
VARIANTS = [{"key": "safe", "value": "safe"}, {"key": "bold", "value": "bold"}]
HOSTILE = [{"key": "safe", "value": "<script>alert(1)</script>"}, VARIANTS[1]]


@pytest.fixture
def shop():
    """Production serves `bold` to the beta segment, `safe` to everyone else."""
    project = factories.project("shop")
    flag = factories.flag(project, "existing", type="string", variants=VARIANTS)
    services.segment_create(project=project, key="beta", data={"included": ["u1"]}, **SYSTEM)
    services.segment_create(project=project, key="spare", data={"included": ["u9"]}, **SYSTEM)
    factories.configure(
        flag,
        "production",
        enabled=True,
        offVariant="safe",
        defaultServe={"variant": "safe"},
        rules=[
            {
                "conditions": [{"operator": "in_segment", "values": ["beta"]}],
                "serve": {"variant": "bold"},
            }
        ],
    )
    services.project_update(project=project, data={"require_approval": True}, **SYSTEM)
    return project


def production(project) -> dict:
    document = build_document(project.environments.get(key="production").pk)
    document.pop("version")
    return document


# path: (API method, url, body)
INDIRECT = {
    "edit a segment production uses": ("patch", f"{P}/segments/beta", {"included": ["u1", "u2"]}),
    "archive the flag": ("patch", f"{P}/flags/existing", {"archived": True}),
    "change a variant's value": ("patch", f"{P}/flags/existing", {"variants": HOSTILE}),
}
# Changes that serve nothing new in production stay with editors.
HARMLESS = {
    "edit a segment production does not use": (
        "patch",
        f"{P}/segments/spare",
        {"included": ["u9", "u10"]},
    ),
    "rename the flag": ("patch", f"{P}/flags/existing", {"name": "Renamed"}),
}


def _expected(role: str, approval: bool) -> int:
    if role == "admin" or (role == "publisher" and not approval):
        return 200
    return 403


@pytest.mark.parametrize("approval", [True, False], ids=["approval", "no-approval"])
@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("path", list(INDIRECT))
def test_api_indirect_paths_pass_the_production_gate(shop, path, role, approval):
    if not approval:
        services.project_update(project=shop, data={"require_approval": False}, **SYSTEM)
    person = factories.member(shop, role)
    method, url, body = INDIRECT[path]
    before, audit = production(shop), AuditEntry.objects.count()

    response = getattr(client_for(person), method)(url, body, format="json")

    expected = _expected(role, approval)
    assert response.status_code == expected, response.content
    if expected == 200:
        assert production(shop) != before
        return
    detail = response.json()["detail"]
    if role == "viewer":
        assert "needs the editor role" in detail
    elif role == "editor":
        assert "alters what protected environment 'production' serves" in detail
        assert "publisher" in detail
    else:
        assert "open a change request (POST /api/v1/projects/shop/" in detail
    assert production(shop) == before
    assert AuditEntry.objects.count() == audit


@pytest.mark.parametrize("path", list(HARMLESS))
def test_api_changes_that_serve_nothing_new_stay_with_editors(shop, path):
    editor = factories.member(shop, "editor")
    method, url, body = HARMLESS[path]
    before = production(shop)
    response = getattr(client_for(editor), method)(url, body, format="json")
    assert response.status_code == 200, response.content
    assert production(shop)["flags"]["existing"]["rules"] == before["flags"]["existing"]["rules"]


def test_an_unprotected_production_takes_indirect_changes_from_editors(shop):
    services.environment_update(
        environment=shop.environments.get(key="production"), data={"protected": False}, **SYSTEM
    )
    editor = factories.member(shop, "editor")
    response = client_for(editor).patch(f"{P}/flags/existing", {"archived": True}, format="json")
    assert response.status_code == 200


# --- The change request that carries an indirect change ---------------------------------


@pytest.mark.parametrize(
    "url, body, subject",
    [
        (f"{P}/segments/beta/change-requests", {"included": ["u1", "u2"]}, "segment beta"),
        (f"{P}/flags/existing/change-requests", {"archived": True}, "flag existing"),
        (f"{P}/flags/existing/change-requests", {"variants": HOSTILE}, "flag existing"),
    ],
)
def test_an_indirect_change_is_proposed_reviewed_and_applied(shop, url, body, subject):
    editor, publisher = factories.member(shop, "editor"), factories.member(shop, "publisher")
    before = production(shop)

    proposed = client_for(editor).post(url, {"title": "why", **body}, format="json")

    assert proposed.status_code == 201, proposed.content
    request = proposed.json()
    assert request["status"] == "open"
    assert request["impact"][0]["environment"] == "production"
    assert request["impact"][0]["subject"] == subject
    assert request["impact"][0]["changes"], "the impact says what changes"
    assert production(shop) == before, "proposing changes nothing"
    reviewer = client_for(publisher)
    approved = reviewer.post(f"{P}/change-requests/{request['id']}/approve", {}, format="json")
    assert approved.status_code == 200, approved.content
    assert approved.json()["status"] == "applied"
    assert production(shop) != before


def test_an_indirect_request_on_a_changed_subject_is_a_conflict(shop):
    editor, publisher = factories.member(shop, "editor"), factories.member(shop, "publisher")
    author = client_for(editor)
    url = f"{P}/segments/beta/change-requests"
    request = author.post(url, {"included": ["u1", "u2"]}, format="json").json()
    segment = Segment.objects.get(key="beta")
    services.segment_update(segment=segment, data={"excluded": ["u3"]}, **SYSTEM)

    shown = author.get(f"{P}/change-requests/{request['id']}").json()
    assert shown["conflict"] is True
    approved = client_for(publisher).post(f"{P}/change-requests/{request['id']}/approve", {})
    assert approved.json()["status"] == "approved", "not applied over the newer change"
    assert Segment.objects.get(key="beta").included == ["u1"]
    rebased = author.post(
        f"{P}/change-requests/{request['id']}/rebase", {"confirm": True}, format="json"
    )
    assert rebased.status_code == 200, rebased.content
    assert rebased.json()["status"] == "open"


def test_a_request_for_what_production_does_not_serve_is_refused(shop):
    editor = factories.member(shop, "editor")
    response = client_for(editor).post(
        f"{P}/segments/spare/change-requests", {"included": ["x"]}, format="json"
    )
    assert response.status_code == 400
    assert "directly" in json.dumps(response.json())
    assert not ChangeRequest.objects.exists()


# --- The admin, forged posts included ---------------------------------------------------


def _admin_segment(client, project):
    segment = Segment.objects.get(project=project, key="beta")
    url = reverse("admin:flags_segment_change", args=[segment.pk])
    data = form_data(client.get(url))
    data["included"] = "u1\nu2"
    return client.post(url, data, follow=True)


def _admin_archive(client, project):
    flag = project.flags.get(key="existing")
    return client.post(
        reverse("admin:flags_flag_changelist"),
        {"action": "archive_flags", "_selected_action": [str(flag.pk)]},
        follow=True,
    )


def _admin_variant(client, project):
    flag = project.flags.get(key="existing")
    return post_flag_page(client, flag, **{"variants-0-value": json.dumps(HOSTILE[0]["value"])})


ADMIN = {
    "edit a segment production uses": _admin_segment,
    "archive the flag": _admin_archive,
    "change a variant's value": _admin_variant,
}


@pytest.mark.parametrize("role", ROLES)
@pytest.mark.parametrize("path", list(ADMIN))
def test_admin_indirect_paths_pass_the_production_gate(client, shop, path, role):
    client.force_login(factories.member(shop, role))
    before = production(shop)

    response = ADMIN[path](client, shop)

    assert response.status_code in (200, 302, 403)
    if role == "admin":
        assert production(shop) != before
        return
    assert production(shop) == before
    if role in ("editor", "publisher") and response.status_code == 200:
        shown = " ".join(messages_of(response)) + response.content.decode()
        assert "production" in shown


# --- The command line ----------------------------------------------------------------------


@pytest.mark.parametrize("role", ROLES)
def test_cli_archive_as_a_person_passes_the_gate(shop, role):
    person = factories.member(shop, role)
    before = production(shop)
    arguments = ("archive", "shop/existing", "--as", person.username)
    if role == "admin":
        run(*arguments)
        assert production(shop) != before
        return
    message = fails(*arguments)
    assert ("needs the editor role" if role == "viewer" else "'production'") in message
    assert production(shop) == before


def test_cli_import_of_a_changed_variant_value_passes_the_gate(shop, tmp_path):
    editor = factories.member(shop, "editor")
    document = build_document(shop.environments.get(key="development").pk)
    document["flags"]["existing"]["variants"] = HOSTILE
    path = tmp_path / "dev.json"
    path.write_text(json.dumps(document))
    before = production(shop)
    arguments = ("import", str(path), "shop", "development", "--existing", "overwrite")
    message = fails(*arguments, "--as", editor.username)
    assert "production" in message
    assert production(shop) == before


def test_cli_promote_without_as_needs_an_approval_or_an_audited_bypass(shop):
    staging = factories.config(shop.flags.get(key="existing"), "staging")
    services.flag_config_update(config=staging, data={"enabled": True}, **SYSTEM)
    before = production(shop)
    arguments = ("promote", "shop", "staging", "production", "existing", "--yes")

    message = fails(*arguments)
    assert "--bypass-approval" in message
    assert production(shop) == before

    fails(*arguments, "--bypass-approval", " ")
    run(*arguments, "--bypass-approval", "incident 42: restore checkout")
    assert production(shop) != before
    bypass = AuditEntry.objects.get(action="bypass-approval")
    assert (bypass.source, bypass.actor_name) == ("cli", "operator")
    assert bypass.after == {"reason": "incident 42: restore checkout"}
    assert bypass.environment.key == "production"


def test_cli_archive_without_as_needs_the_bypass_too(shop):
    before = production(shop)
    assert "--bypass-approval" in fails("archive", "shop/existing")
    assert production(shop) == before
    run("archive", "shop/existing", "--bypass-approval", "flag removed from the code")
    assert production(shop)["flags"]["existing"]["archived"] is True
    assert AuditEntry.objects.filter(action="bypass-approval", object_key="flag existing").exists()


def test_cli_bypass_is_for_operators_only(shop):
    admin = factories.member(shop, "admin")
    message = fails("archive", "shop/existing", "--as", admin.username, "--bypass-approval", "x")
    assert "operators" in message


# --- Flags for client-side keys, and owners ---------------------------------------------


def test_new_flags_are_not_for_client_side_keys_until_made_so(shop):
    admin = client_for(factories.member(shop, "admin"))
    created = admin.post(f"{P}/flags", {"key": "fresh"}, format="json").json()
    assert created["clientSide"] is False
    assert production(shop)["flags"]["fresh"]["clientSide"] is False
    changed = admin.patch(f"{P}/flags/fresh", {"clientSide": True}, format="json")
    assert changed.json()["clientSide"] is True
    assert production(shop)["flags"]["fresh"]["clientSide"] is True
    run("create", "shop/from-cli", "--client-side", "--bypass-approval", "test")
    assert production(shop)["flags"]["from-cli"]["clientSide"] is True


def test_making_a_flag_client_side_reaches_protected_production(shop):
    editor = client_for(factories.member(shop, "editor"))
    answer = editor.patch(f"{P}/flags/existing", {"clientSide": True}, format="json")
    assert answer.status_code == 403
    assert production(shop)["flags"]["existing"]["clientSide"] is False


def test_a_flag_owner_is_a_member_of_its_project_and_names_nobody_else(shop):
    other = factories.project("elsewhere")
    outsider = factories.member(other, "viewer", username="outsider")
    admin = client_for(factories.member(shop, "admin"))
    for name in (outsider.username, "no-such-user"):
        answer = admin.patch(f"{P}/flags/existing", {"owner": name}, format="json")
        assert answer.status_code == 400
        assert answer.json()["detail"] == f"owner: {name!r} is not a member of project 'shop'"
    member = factories.member(shop, "viewer", username="insider")
    named = admin.patch(f"{P}/flags/existing", {"owner": member.username}, format="json")
    assert named.status_code == 200 and named.json()["owner"] == "insider"


# --- Secure mode: an environment setting, changed by project admins ----------------------


@pytest.mark.parametrize("role", ROLES)
def test_secure_mode_on_protected_production_is_for_project_admins(shop, role):
    """Like every environment setting (docs/admin.md): the admin role, and an audit entry."""
    environment = shop.environments.get(key="production")
    services.environment_secure_mode_secret_rotate(environment=environment, **SYSTEM)
    person = client_for(factories.member(shop, role))
    url = f"{P}/environments/production"
    audit = AuditEntry.objects.filter(object_type="environment").count()

    turned_on = person.patch(url, {"secure_mode": True}, format="json")
    rotated = person.post(f"{url}/secure-mode-secret", {}, format="json")

    environment.refresh_from_db()
    if role == "admin":
        assert (turned_on.status_code, rotated.status_code) == (200, 201)
        assert environment.secure_mode is True
        entries = AuditEntry.objects.filter(object_type="environment").order_by("id")
        assert entries.count() == audit + 2
        assert entries[audit].after["secure_mode"] is True
        assert entries[audit].source == "api" and entries[audit + 1].action == "rotate-secret"
        return
    assert (turned_on.status_code, rotated.status_code) == (403, 403)
    assert "needs the admin role" in turned_on.json()["detail"]
    assert environment.secure_mode is False
    assert AuditEntry.objects.filter(object_type="environment").count() == audit


@pytest.mark.parametrize("role", ROLES)
def test_cli_secure_mode_as_a_person_needs_the_admin_role(shop, role):
    person = factories.member(shop, role)
    environment = shop.environments.get(key="production")
    arguments = ("secure-mode", "shop", "production")
    if role != "admin":
        assert "needs the admin role" in fails(*arguments, "new-secret", "--as", person.username)
        assert "needs the admin role" in fails(*arguments, "on", "--as", person.username)
        environment.refresh_from_db()
        assert (environment.secure_mode, environment.secure_mode_secret) == (False, "")
        return
    assert "secret first" in " ".join(fails(*arguments, "on", "--as", person.username).split())
    made = run(*arguments, "new-secret", "--as", person.username)
    secret = made.stdout.strip()
    assert secret.startswith("fsm_") and "shown only this once" in made.stderr
    run(*arguments, "on", "--as", person.username)
    environment.refresh_from_db()
    assert environment.secure_mode is True and environment.secure_mode_secret == secret
    entries = AuditEntry.objects.filter(object_type="environment", source="cli")
    entry = entries.order_by("id").last()
    assert entry.after["secure_mode"] is True and secret not in json.dumps(entry.after)


@pytest.mark.parametrize("role", ["publisher", "admin"])
def test_admin_secure_mode_box_is_for_project_admins(client, shop, role):
    environment = shop.environments.get(key="production")
    client.force_login(factories.member(shop, role))
    url = reverse("admin:flags_project_change", args=[shop.pk])
    if role != "admin":
        assert client.post(url, {"name": "Shop"}).status_code == 403
        return
    data = form_data(client.get(url))
    row = next(
        name[: -len("-id")]
        for name, value in data.items()
        if name.endswith("-id") and value == str(environment.pk)
    )
    data[f"{row}-secure_mode"] = "on"

    refused = client.post(url, data)
    assert "secret first" in errors_of(refused) + refused.content.decode()
    environment.refresh_from_db()
    assert environment.secure_mode is False

    services.environment_secure_mode_secret_rotate(environment=environment, **SYSTEM)
    assert client.post(url, data).status_code == 302
    environment.refresh_from_db()
    assert environment.secure_mode is True
