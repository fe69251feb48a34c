"""Every role × action × environment pair through the REST API, denials included."""

import pytest

from flags.models import AuditEntry, Environment
from tests import factories
from tests.flags.test_api_management import client_for

pytestmark = pytest.mark.django_db

ROLES = ["viewer", "editor", "publisher", "admin"]
RANK = {"none": 0, "viewer": 1, "editor": 2, "publisher": 3, "admin": 4}

P = "/api/v1/projects/shop"
# action: (method, url, body, least role that may do it)
ACTIONS = {
    "read flags": ("get", f"{P}/flags", None, "viewer"),
    "read audit": ("get", "/api/v1/audit?project=shop", None, "viewer"),
    "create flag": ("post", f"{P}/flags", {"key": "brand-new"}, "editor"),
    "rename flag": ("patch", f"{P}/flags/existing", {"name": "Renamed"}, "editor"),
    "create segment": ("post", f"{P}/segments", {"key": "seg-new"}, "editor"),
    "toggle in development": (
        "post",
        f"{P}/flags/existing/environments/development/toggle",
        {"enabled": True},
        "editor",
    ),
    "toggle in staging": (
        "post",
        f"{P}/flags/existing/environments/staging/toggle",
        {"enabled": True},
        "editor",
    ),
    "toggle in production": (
        "post",
        f"{P}/flags/existing/environments/production/toggle",
        {"enabled": True},
        "publisher",
    ),
    "change rules in production": (
        "patch",
        f"{P}/flags/existing/environments/production",
        {"rules": [{"conditions": [], "serve": {"variant": "on"}}]},
        "publisher",
    ),
    "create API key": (
        "post",
        f"{P}/api-keys",
        {"name": "k", "kind": "server", "environment": "production"},
        "admin",
    ),
    "list API keys": ("get", f"{P}/api-keys", None, "admin"),
    "grant a role": ("post", f"{P}/members", {"user": "bystander", "role": "viewer"}, "admin"),
    "create environment": ("post", f"{P}/environments", {"key": "qa"}, "admin"),
    "protect environment": ("patch", f"{P}/environments/staging", {"protected": True}, "admin"),
}


def _state(project):
    return (
        AuditEntry.objects.count(),
        sorted(Environment.objects.filter(project=project).values_list("key", "version")),
    )


@pytest.mark.parametrize("role", ["none", *ROLES])
@pytest.mark.parametrize("action", list(ACTIONS))
def test_role_matrix(role, action):
    project = factories.project("shop")
    factories.flag(project, "existing")
    factories.user("bystander")
    person = factories.user() if role == "none" else factories.member(project, role)
    api = client_for(person)
    method, url, body, least = ACTIONS[action]
    before = _state(project)

    response = getattr(api, method)(url, body, format="json")

    if RANK[role] >= RANK[least]:
        assert response.status_code in (200, 201), (role, action, response.content)
        return
    # Without any role the project's existence is not revealed.
    expected = 404 if role == "none" else 403
    assert response.status_code == expected, (role, action, response.content)
    body = response.json()
    assert body["error"] in ("permission_denied", "not_found")
    assert body["detail"]
    assert _state(project) == before, "a denied request changed something"


def test_denial_names_the_role_needed():
    project = factories.project("shop")
    factories.flag(project, "existing")
    editor = factories.member(project, "editor")
    response = client_for(editor).post(
        f"{P}/flags/existing/environments/production/toggle", {"enabled": True}, format="json"
    )
    assert response.status_code == 403
    assert "publisher" in response.json()["detail"]
    assert "production" in response.json()["detail"]


def test_unprotected_production_is_open_to_editors():
    project = factories.project("shop")
    factories.flag(project, "existing")
    production = project.environments.get(key="production")
    production.protected = False
    production.save()
    editor = factories.member(project, "editor")
    response = client_for(editor).post(
        f"{P}/flags/existing/environments/production/toggle", {"enabled": True}, format="json"
    )
    assert response.status_code == 200
