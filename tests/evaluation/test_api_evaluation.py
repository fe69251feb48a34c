"""The native evaluation endpoints and the SDK document, through HTTP."""

import json

import pytest

from flags import services
from tests import factories
from tests.evaluation.document_loader import SAMPLE_DOCUMENT, api_key, load_document

pytestmark = pytest.mark.django_db


@pytest.fixture
def environment():
    return load_document(SAMPLE_DOCUMENT).environment


@pytest.fixture
def server_key(environment):
    return api_key(environment, "server")


@pytest.fixture
def client_key(environment):
    return api_key(environment, "client")


def post(client, path, body, key, **headers):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(
        path, data, content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {key}", **headers
    )


def test_evaluate_returns_every_flag_of_the_environment(client, server_key):
    response = post(
        client, "/api/v1/evaluate", {"context": {"targetingKey": "u1", "country": "US"}}, server_key
    )
    assert response.status_code == 200
    body = response.json()
    assert set(body["flags"]) == set(SAMPLE_DOCUMENT["flags"])
    checkout = body["flags"]["new-checkout"]
    assert checkout["value"] is True
    assert checkout["variant"] == "on"
    assert checkout["reason"] == "TARGETING_MATCH"
    assert "ruleId" in checkout
    assert body["flags"]["old-feature"] == {"value": False, "variant": "off", "reason": "DISABLED"}
    assert body["flags"]["needs-checkout"]["reason"] == "DEFAULT"
    assert body["flags"]["theme"]["value"] == {"color": "black", "size": 2}


def test_evaluate_one_flag(client, server_key):
    response = post(
        client, "/api/v1/evaluate/banner-text", {"context": {"targetingKey": "user-9"}}, server_key
    )
    assert response.status_code == 200
    body = response.json()
    assert body["key"] == "banner-text"
    assert (body["value"], body["variant"], body["reason"]) == ("Bye", "bye", "TARGETING_MATCH")


def test_evaluation_errors_come_back_with_their_code(client, server_key):
    response = post(client, "/api/v1/evaluate/max-items", {"context": {}}, server_key)
    assert response.status_code == 200
    body = response.json()
    assert body["reason"] == "ERROR"
    assert body["errorCode"] == "TARGETING_KEY_MISSING"
    assert body["value"] is None


def test_an_unknown_flag_is_404_json(client, server_key):
    response = post(client, "/api/v1/evaluate/nope", {"context": {}}, server_key)
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert "nope" in response.json()["detail"]


def test_an_empty_body_evaluates_an_empty_context(client, server_key):
    response = client.post(
        "/api/v1/evaluate/banner-text",
        b"",
        content_type="application/json",
        HTTP_X_API_KEY=server_key,
    )
    assert response.status_code == 200
    assert response.json()["value"] == "Hello"


def test_client_keys_do_not_see_rule_ids(client, client_key):
    response = post(client, "/api/v1/evaluate", {"context": {"country": "US"}}, client_key)
    assert response.status_code == 200
    assert "ruleId" not in response.json()["flags"]["new-checkout"]
    assert "rules" not in response.content.decode()


def test_evaluation_answers_304_until_the_environment_changes(
    client, server_key, environment, django_capture_on_commit_callbacks
):
    body = {"context": {"targetingKey": "u1"}}
    first = post(client, "/api/v1/evaluate", body, server_key)
    etag = first["ETag"]
    again = post(client, "/api/v1/evaluate", body, server_key, HTTP_IF_NONE_MATCH=etag)
    assert again.status_code == 304
    assert again.content == b""
    other_context = post(
        client,
        "/api/v1/evaluate",
        {"context": {"targetingKey": "u2"}},
        server_key,
        HTTP_IF_NONE_MATCH=etag,
    )
    assert other_context.status_code == 200
    assert other_context["ETag"] != etag
    flag = environment.project.flags.get(key="old-feature")
    with django_capture_on_commit_callbacks(execute=True):
        factories.configure(flag, "production", enabled=True)
    changed = post(client, "/api/v1/evaluate", body, server_key, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200
    assert changed["ETag"] != etag
    assert changed.json()["flags"]["old-feature"]["value"] is True


def test_single_flag_evaluation_answers_304(client, server_key):
    body = {"context": {"targetingKey": "u1"}}
    etag = post(client, "/api/v1/evaluate/theme", body, server_key)["ETag"]
    assert (
        post(
            client, "/api/v1/evaluate/theme", body, server_key, HTTP_IF_NONE_MATCH=etag
        ).status_code
        == 304
    )
    assert (
        post(
            client, "/api/v1/evaluate/banner-text", body, server_key, HTTP_IF_NONE_MATCH=etag
        ).status_code
        == 200
    )


def test_server_keys_download_the_document_with_etag(
    client, server_key, environment, django_capture_on_commit_callbacks
):
    response = client.get("/api/v1/sdk/flags", HTTP_AUTHORIZATION=f"Bearer {server_key}")
    assert response.status_code == 200
    document = response.json()
    assert document["version"] == environment.version
    assert set(document["flags"]) == set(SAMPLE_DOCUMENT["flags"])
    assert document["flags"]["new-checkout"]["rules"]
    etag = response["ETag"]
    assert str(environment.version) in etag
    cached = client.get("/api/v1/sdk/flags", HTTP_X_API_KEY=server_key, HTTP_IF_NONE_MATCH=etag)
    assert cached.status_code == 304
    flag = environment.project.flags.get(key="old-feature")
    with django_capture_on_commit_callbacks(execute=True):
        factories.configure(flag, "production", enabled=True)
    fresh = client.get("/api/v1/sdk/flags", HTTP_X_API_KEY=server_key, HTTP_IF_NONE_MATCH=etag)
    assert fresh.status_code == 200
    assert fresh["ETag"] != etag
    assert fresh.json()["flags"]["old-feature"]["enabled"] is True


def test_client_keys_cannot_download_the_document(client, client_key):
    response = client.get("/api/v1/sdk/flags", HTTP_X_API_KEY=client_key)
    assert response.status_code == 403
    assert response.json()["error"] == "permission_denied"
    assert "flags" not in response.json()


def test_a_key_evaluates_only_its_own_environment(client, environment):
    staging = environment.project.environments.get(key="staging")
    key = api_key(staging, "server")
    flag = environment.project.flags.get(key="old-feature")
    factories.configure(flag, "production", enabled=True)
    response = post(client, "/api/v1/evaluate/old-feature", {"context": {}}, key)
    assert response.json()["reason"] == "DISABLED"


def test_evaluation_makes_no_database_query_once_cached(
    client, server_key, django_assert_num_queries
):
    body = {"context": {"targetingKey": "u1"}}
    post(client, "/api/v1/evaluate/new-checkout", body, server_key)
    with django_assert_num_queries(0):
        for _ in range(20):
            assert (
                post(client, "/api/v1/evaluate/new-checkout", body, server_key).status_code == 200
            )
            assert post(client, "/ofrep/v1/evaluate/flags", body, server_key).status_code == 200


def test_a_new_flag_is_served_after_it_is_created(
    client, server_key, environment, django_capture_on_commit_callbacks
):
    post(client, "/api/v1/evaluate", {}, server_key)
    with django_capture_on_commit_callbacks(execute=True):
        services.flag_create(project=environment.project, key="fresh", **factories.SYSTEM)
    response = post(client, "/api/v1/evaluate/fresh", {"context": {}}, server_key)
    assert response.status_code == 200
    assert response.json()["reason"] == "DISABLED"
