"""The management API of webhooks and triggers: project admins only, secrets shown once,
bad input answered with 400 naming the field."""

from __future__ import annotations

import json

import pytest
from rest_framework.test import APIClient

from integrations.models import Trigger, Webhook
from tests import factories

pytestmark = pytest.mark.django_db
BASE = "/api/v1/projects/shop"


@pytest.fixture
def project():
    project = factories.project("shop")
    factories.flag(project, "new-checkout")
    return project


def api_as(project, role: str) -> APIClient:
    client = APIClient()
    client.force_authenticate(factories.member(project, role))
    return client


def test_admins_create_list_change_and_delete_webhooks(project):
    api = api_as(project, "admin")
    created = api.post(
        f"{BASE}/webhooks",
        {"name": "ops", "url": "https://ops.example.com/hook", "kinds": ["flag.switched"]},
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("whsec_") and body["kinds"] == ["flag.switched"]
    listed = api.get(f"{BASE}/webhooks").json()["results"]
    assert [w["name"] for w in listed] == ["ops"] and "secret" not in listed[0]

    changed = api.patch(f"{BASE}/webhooks/{body['id']}", {"active": False}, format="json")
    assert changed.status_code == 200 and changed.json()["active"] is False
    assert api.get(f"{BASE}/webhooks/{body['id']}/deliveries").json()["count"] == 0
    assert api.delete(f"{BASE}/webhooks/{body['id']}").status_code == 204
    assert Webhook.objects.count() == 0


def test_admins_create_and_revoke_triggers(project):
    api = api_as(project, "admin")
    refused = api.post(
        f"{BASE}/triggers",
        {"flag": "new-checkout", "environment": "production", "name": "pager"},
        format="json",
    )
    assert refused.status_code == 400 and "protected_grant" in refused.json()["fields"]

    created = api.post(
        f"{BASE}/triggers",
        {
            "flag": "new-checkout",
            "environment": "production",
            "name": "pager",
            "protectedGrant": True,
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert body["secret"].startswith("fft_") and body["url"] == f"/api/v1/triggers/{body['uid']}"
    assert api.get(f"{BASE}/triggers").json()["results"][0]["revoked"] is False
    revoked = api.post(f"{BASE}/triggers/{body['uid']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["revoked"] is True
    assert (
        APIClient().post(body["url"], HTTP_AUTHORIZATION=f"Bearer {body['secret']}").status_code
        == 403
    )


def test_only_project_admins_reach_them(project):
    editor = api_as(project, "editor")
    assert editor.get(f"{BASE}/webhooks").status_code == 403
    assert editor.get(f"{BASE}/triggers").status_code == 403
    post = editor.post(
        f"{BASE}/triggers",
        {"flag": "new-checkout", "environment": "staging", "name": "x"},
        format="json",
    )
    assert post.status_code == 403 and Trigger.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "a\x00b", "url": "https://x.example/"}, "name"),
        ({"name": "\ud800", "url": "https://x.example/"}, "name"),
        ({"name": "x", "url": "javascript:alert(1)"}, "url"),
        ({"name": "x", "url": "https://x.example/", "kinds": ["nope"]}, "kinds"),
        ({"name": "x", "url": "https://x.example/", "environments": "production"}, "environments"),
        ({"name": "x", "url": "https://x.example/", "secret": "mine"}, "secret"),
        ({"name": "x" * 500, "url": "https://x.example/"}, "name"),
    ],
)
def test_bad_webhook_input_is_a_400_naming_the_field(project, body, field):
    raw = json.dumps(body)  # escapes the lone surrogate as JSON does on the wire
    response = api_as(project, "admin").post(
        f"{BASE}/webhooks", raw, content_type="application/json"
    )
    fields = response.json()["fields"]  # the field, or the exact item inside it (kinds[0])
    assert response.status_code == 400, response.content
    assert any(name == field or name.startswith(f"{field}[") for name in fields), fields
