"""The management API: resources, validation errors, optimistic concurrency, audit."""

import pytest
from rest_framework.test import APIClient

from flags.models import AuditEntry, Environment, FlagConfig
from tests import factories

pytestmark = pytest.mark.django_db


def client_for(user) -> APIClient:
    client = APIClient()
    response = client.post(
        "/api/v1/auth/token/",
        {"username": user.get_username(), "password": "correct-horse-battery-staple"},
        format="json",
    )
    assert response.status_code == 200, response.content
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
    return client


@pytest.fixture
def project():
    return factories.project("shop")


@pytest.fixture
def admin(project):
    return factories.member(project, "admin")


@pytest.fixture
def api(admin) -> APIClient:
    return client_for(admin)


def test_requests_without_a_token_get_401_json(client):
    response = client.get("/api/v1/projects")
    assert response.status_code == 401
    assert response.json()["error"] == "not_authenticated"


def test_a_bad_token_gets_401(client):
    response = client.get("/api/v1/projects", HTTP_AUTHORIZATION="Bearer not-a-token")
    assert response.status_code == 401


def test_refresh_token_gives_a_new_access_token(admin):
    anonymous = APIClient()
    tokens = anonymous.post(
        "/api/v1/auth/token/",
        {"username": admin.username, "password": "correct-horse-battery-staple"},
        format="json",
    ).json()
    response = anonymous.post("/api/v1/auth/token/refresh/", {"refresh": tokens["refresh"]})
    assert response.status_code == 200
    assert response.json()["access"]


def test_projects_list_shows_only_projects_with_a_role(project, api):
    factories.project("other")
    keys = [p["key"] for p in api.get("/api/v1/projects").json()]
    assert keys == ["shop"]


def test_a_project_without_a_role_is_not_found(api):
    factories.project("secret")
    response = api.get("/api/v1/projects/secret/flags")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_superuser_creates_a_project_with_three_environments():
    root = factories.user(superuser=True)
    response = client_for(root).post(
        "/api/v1/projects", {"key": "web", "name": "Web"}, format="json"
    )
    assert response.status_code == 201
    environments = {e["key"]: e["protected"] for e in response.json()["environments"]}
    assert environments == {"development": False, "staging": False, "production": True}


def test_create_boolean_flag_gets_on_off_variants_and_is_off_everywhere(api):
    response = api.post("/api/v1/projects/shop/flags", {"key": "new-checkout"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert [v["key"] for v in body["variants"]] == ["on", "off"]
    assert {env: state["enabled"] for env, state in body["environments"].items()} == {
        "development": False,
        "staging": False,
        "production": False,
    }


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"key": "Bad Key!"}, "key"),
        (
            {"key": "price", "type": "number", "variants": [{"key": "a", "value": "ten"}]},
            "variants",
        ),
        ({"key": "x", "type": "colour"}, "type"),
        ({"key": "x", "unexpected": 1}, "unexpected"),
        ({"key": "s", "type": "string"}, "variants"),
    ],
)
def test_invalid_flag_is_rejected_with_the_field_named(api, payload, field):
    response = api.post("/api/v1/projects/shop/flags", payload, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"]
    assert not api.get("/api/v1/projects/shop/flags").json()["results"]


def test_duplicate_flag_key_is_400(api):
    api.post("/api/v1/projects/shop/flags", {"key": "dup"}, format="json")
    response = api.post("/api/v1/projects/shop/flags", {"key": "dup"}, format="json")
    assert response.status_code == 400
    assert "key" in response.json()["fields"]


def test_malformed_json_is_400_not_500(api):
    response = api.generic(
        "POST", "/api/v1/projects/shop/flags", "{not json", content_type="application/json"
    )
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"


def test_body_that_is_not_an_object_is_400(api):
    response = api.post("/api/v1/projects/shop/flags", [1, 2], format="json")
    assert response.status_code == 400


def test_flag_key_cannot_change(project, api):
    factories.flag(project, "stay")
    response = api.patch("/api/v1/projects/shop/flags/stay", {"key": "moved"}, format="json")
    assert response.status_code == 400


def test_archive_flag_and_filter_by_archived(project, api):
    factories.flag(project, "old")
    factories.flag(project, "live")
    response = api.patch("/api/v1/projects/shop/flags/old", {"archived": True}, format="json")
    assert response.status_code == 200
    archived = api.get("/api/v1/projects/shop/flags?archived=true").json()["results"]
    assert [f["key"] for f in archived] == ["old"]


def test_flag_list_filters_by_tag_and_search_and_paginates(project, api):
    factories.flag(project, "checkout-a", tags=["checkout"])
    factories.flag(project, "checkout-b", tags=["checkout"])
    factories.flag(project, "search-box", name="Search")
    by_tag = api.get("/api/v1/projects/shop/flags?tag=checkout").json()
    assert by_tag["count"] == 2
    by_search = api.get("/api/v1/projects/shop/flags?search=search").json()
    assert [f["key"] for f in by_search["results"]] == ["search-box"]
    page = api.get("/api/v1/projects/shop/flags?limit=1&offset=1").json()
    assert page["count"] == 3 and len(page["results"]) == 1 and page["next"]


def test_flag_list_filters_by_state_in_environment(project, api):
    on = factories.flag(project, "on-in-dev")
    factories.flag(project, "off-in-dev")
    factories.configure(on, "development", enabled=True)
    response = api.get("/api/v1/projects/shop/flags?environment=development&enabled=true")
    assert [f["key"] for f in response.json()["results"]] == ["on-in-dev"]


ROLLOUT = {
    "enabled": True,
    "rules": [
        {
            "name": "pro in NA",
            "conditions": [
                {"attribute": "country", "operator": "in", "values": ["US", "CA"]},
                {"attribute": "plan", "operator": "equals", "values": ["pro"]},
            ],
            "serve": {"variant": "on"},
        }
    ],
    "defaultServe": {
        "rollout": {"variants": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}]}
    },
    "targets": [{"variant": "on", "values": ["user-1"]}],
}


def test_configure_rules_rollout_and_targets_then_read_them_back(project, api):
    factories.flag(project, "new-checkout")
    url = "/api/v1/projects/shop/flags/new-checkout/environments/development"
    response = api.patch(url, ROLLOUT, format="json")
    assert response.status_code == 200, response.content
    body = api.get(url).json()
    assert body["enabled"] is True
    assert body["rules"][0]["conditions"][0]["values"] == ["US", "CA"]
    assert body["defaultServe"]["rollout"]["variants"][0] == {"variant": "on", "weight": 25}
    assert body["targets"] == [{"variant": "on", "values": ["user-1"]}]
    assert body["version"] == 2


def test_configuration_change_bumps_environment_version(project, api):
    factories.flag(project, "bump")
    environment = Environment.objects.get(project=project, key="development")
    before = environment.version
    api.post(
        "/api/v1/projects/shop/flags/bump/environments/development/toggle",
        {"enabled": True},
        format="json",
    )
    environment.refresh_from_db()
    assert environment.version == before + 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (
            {
                "rules": [
                    {
                        "conditions": [{"attribute": "a", "operator": "matches", "values": ["(["]}],
                        "serve": {"variant": "on"},
                    }
                ]
            },
            "rules[0]",
        ),
        (
            {
                "rules": [
                    {
                        "conditions": [{"attribute": "a", "operator": "teleports", "values": []}],
                        "serve": {"variant": "on"},
                    }
                ]
            },
            "rules[0].conditions[0].operator",
        ),
        (
            {
                "defaultServe": {
                    "rollout": {
                        "variants": [
                            {"variant": "on", "weight": 0},
                            {"variant": "off", "weight": 0},
                        ]
                    }
                }
            },
            "defaultServe",
        ),
        ({"defaultServe": {"variant": "maybe"}}, "defaultServe"),
        ({"offVariant": "nope"}, "offVariant"),
        ({"targets": [{"variant": "ghost", "values": ["u"]}]}, "targets[0]"),
        ({"prerequisites": [{"flag": "missing", "variants": ["on"]}]}, "prerequisites[0]"),
        ({"enabled": "yes please"}, "enabled"),
    ],
)
def test_invalid_configuration_is_400_naming_the_field_and_changes_nothing(
    project, api, change, field
):
    flag = factories.flag(project, "guarded")
    url = "/api/v1/projects/shop/flags/guarded/environments/development"
    before = api.get(url).json()
    response = api.patch(url, change, format="json")
    assert response.status_code == 400, response.content
    assert field in response.json()["fields"], response.json()
    assert api.get(url).json() == before
    assert not AuditEntry.objects.filter(flag_key=flag.key, object_type="flag_config").exists()


def test_prerequisite_cycle_is_rejected(project, api):
    factories.flag(project, "a")
    factories.flag(project, "b")
    base = "/api/v1/projects/shop/flags/{}/environments/development"
    first = api.patch(
        base.format("a"), {"prerequisites": [{"flag": "b", "variants": ["on"]}]}, format="json"
    )
    assert first.status_code == 200
    cycle = api.patch(
        base.format("b"), {"prerequisites": [{"flag": "a", "variants": ["on"]}]}, format="json"
    )
    assert cycle.status_code == 400
    assert "cycle" in str(cycle.json()["fields"])


def test_outdated_version_gets_409_and_does_not_overwrite(project, api):
    factories.flag(project, "contested")
    url = "/api/v1/projects/shop/flags/contested/environments/development"
    read = api.get(url).json()
    first = api.patch(url, {"enabled": True, "version": read["version"]}, format="json")
    assert first.status_code == 200
    second = api.patch(url, {"offVariant": "on", "version": read["version"]}, format="json")
    assert second.status_code == 409
    assert second.json()["current_version"] == read["version"] + 1
    assert api.get(url).json()["offVariant"] == "off"


def test_if_match_header_also_guards_writes(project, api):
    factories.flag(project, "etagged")
    url = "/api/v1/projects/shop/flags/etagged/environments/development"
    etag = api.get(url)["ETag"]
    api.patch(url, {"enabled": True}, format="json")
    response = api.patch(url, {"enabled": False}, format="json", HTTP_IF_MATCH=etag)
    assert response.status_code == 409


def test_segments_crud_and_in_use_segment_cannot_be_deleted(project, api):
    response = api.post(
        "/api/v1/projects/shop/segments",
        {
            "key": "beta",
            "conditions": [{"attribute": "email", "operator": "ends_with", "values": ["@x.io"]}],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    factories.flag(project, "uses-beta")
    api.patch(
        "/api/v1/projects/shop/flags/uses-beta/environments/development",
        {
            "rules": [
                {
                    "conditions": [{"operator": "in_segment", "values": ["beta"]}],
                    "serve": {"variant": "on"},
                }
            ]
        },
        format="json",
    )
    refused = api.delete("/api/v1/projects/shop/segments/beta")
    assert refused.status_code == 400
    assert "uses-beta" in refused.json()["detail"]


def test_rule_referring_to_unknown_segment_is_rejected(project, api):
    factories.flag(project, "seg")
    response = api.patch(
        "/api/v1/projects/shop/flags/seg/environments/development",
        {
            "rules": [
                {
                    "conditions": [{"operator": "in_segment", "values": ["ghosts"]}],
                    "serve": {"variant": "on"},
                }
            ]
        },
        format="json",
    )
    assert response.status_code == 400


def test_api_key_secret_shown_once_and_stored_hashed(project, api):
    response = api.post(
        "/api/v1/projects/shop/api-keys",
        {"name": "backend", "kind": "server", "environment": "production"},
        format="json",
    )
    assert response.status_code == 201, response.content
    secret = response.json()["secret"]
    listed = api.get("/api/v1/projects/shop/api-keys").json()["results"]
    assert "secret" not in listed[0]
    from flags.models import ApiKey

    stored = ApiKey.objects.get()
    assert secret not in (stored.digest, stored.prefix) and stored.digest != secret
    revoked = api.post(f"/api/v1/projects/shop/api-keys/{stored.pk}/revoke")
    assert revoked.json()["status"] == "revoked"


def test_every_change_is_audited_with_before_and_after(project, admin, api):
    factories.flag(project, "watched")
    api.post(
        "/api/v1/projects/shop/flags/watched/environments/development/toggle",
        {"enabled": True},
        format="json",
    )
    entries = api.get("/api/v1/audit?project=shop&flag=watched").json()["results"]
    toggle = entries[0]
    assert toggle["action"] == "enable"
    assert toggle["actor_name"] == admin.username
    assert toggle["source"] == "api"
    assert toggle["before"]["enabled"] is False and toggle["after"]["enabled"] is True
    by_user = api.get(f"/api/v1/audit?user={admin.username}").json()["results"]
    assert [e["id"] for e in by_user] == [toggle["id"]]


def test_audit_entries_cannot_be_changed_through_the_api(project, api):
    factories.flag(project, "f")
    entry = AuditEntry.objects.first()
    assert api.delete(f"/api/v1/audit/{entry.pk}").status_code in (404, 405)
    assert api.delete("/api/v1/audit").status_code == 405


def test_audit_time_filter_rejects_garbage(api):
    assert api.get("/api/v1/audit?since=yesterday-ish").status_code == 400


def test_members_are_managed_by_project_admins(project, api):
    newcomer = factories.user("newcomer")
    response = api.post(
        "/api/v1/projects/shop/members", {"user": "newcomer", "role": "editor"}, format="json"
    )
    assert response.status_code == 200
    assert client_for(newcomer).get("/api/v1/projects/shop/flags").status_code == 200


def test_openapi_schema_and_docs_are_served(client):
    schema = client.get("/api/schema/")
    assert schema.status_code == 200
    assert b"/api/v1/projects/{project_key}/flags" in schema.content
    docs = client.get("/api/docs/")
    assert docs.status_code == 200
    assert b"swagger" in docs.content.lower()


def test_flag_config_version_is_per_environment(project, api):
    flag = factories.flag(project, "versions")
    api.post(
        "/api/v1/projects/shop/flags/versions/environments/development/toggle",
        {"enabled": True},
        format="json",
    )
    versions = dict(FlagConfig.objects.filter(flag=flag).values_list("environment__key", "version"))
    assert versions == {"development": 2, "staging": 1, "production": 1}


def test_oversized_body_is_413_json(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 10_000
    response = api.post(
        "/api/v1/projects/shop/flags", {"key": "big", "description": "x" * 20_000}, format="json"
    )
    assert response.status_code == 413
    assert response.json()["error"] == "request_too_large"


@pytest.mark.parametrize("instant", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_instants_the_store_cannot_hold_are_400_not_500(api, instant):
    from urllib.parse import quote

    assert api.get(f"/api/v1/audit?since={quote(instant)}").status_code == 400
    response = api.post(
        "/api/v1/projects/shop/api-keys",
        {"name": "k", "kind": "server", "environment": "production", "expires_at": instant},
        format="json",
    )
    assert response.status_code == 400
    assert "expires_at" in response.json()["fields"]


def test_longest_allowed_key_name_is_audited_without_error(api):
    response = api.post(
        "/api/v1/projects/shop/api-keys",
        {"name": "k" * 200, "kind": "client", "environment": "production"},
        format="json",
    )
    assert response.status_code == 201
    assert AuditEntry.objects.filter(object_type="api_key").exists()
