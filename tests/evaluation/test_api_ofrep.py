"""OFREP endpoints: shapes, status codes and ETags per /work/shared/ofrep/openapi.yaml."""

import json

import pytest

from tests import factories
from tests.evaluation.document_loader import (  # noqa: F401 - fixture
    SAMPLE_DOCUMENT,
    api_key,
    fresh_credentials,
    load_document,
)

pytestmark = pytest.mark.django_db

OFREP_REASONS = {"STATIC", "TARGETING_MATCH", "SPLIT", "DISABLED", "UNKNOWN"}
FAILURE_CODES = {"PARSE_ERROR", "TARGETING_KEY_MISSING", "INVALID_CONTEXT", "GENERAL"}


@pytest.fixture
def environment():
    return load_document(SAMPLE_DOCUMENT).environment


@pytest.fixture
def key(environment):
    return api_key(environment, "client")


def post(client, path, body, key, **headers):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(path, data, content_type="application/json", HTTP_X_API_KEY=key, **headers)


def assert_success_item(item):
    assert set(item) <= {"key", "value", "reason", "variant", "metadata"}
    assert {"key", "value", "reason", "variant"} <= set(item)
    assert item["reason"] in OFREP_REASONS
    assert all(isinstance(v, (bool, str, int, float)) for v in item.get("metadata", {}).values())


def test_single_flag_success_shape(client, key):
    response = post(
        client,
        "/ofrep/v1/evaluate/flags/new-checkout",
        {"context": {"targetingKey": "u1", "country": "CA"}},
        key,
    )
    assert response.status_code == 200
    body = response.json()
    assert_success_item(body)
    assert body["key"] == "new-checkout"
    assert (body["value"], body["variant"], body["reason"]) == (True, "on", "TARGETING_MATCH")
    # A client key: what evaluation needs, no name, description, tags or rule
    # (tests/evaluation/test_client_keys.py shows what server keys get).
    assert body["metadata"] == {"flagType": "boolean", "version": body["metadata"]["version"]}


def test_default_serving_is_static_and_keeps_the_native_reason(client, key):
    body = post(client, "/ofrep/v1/evaluate/flags/theme", {"context": {}}, key).json()
    assert body["reason"] == "STATIC"
    assert body["metadata"]["evaluationReason"] == "DEFAULT"
    assert body["value"] == {"color": "black", "size": 2}


def test_a_failed_prerequisite_is_reported_as_disabled(client, key):
    body = post(client, "/ofrep/v1/evaluate/flags/needs-checkout", {"context": {}}, key).json()
    assert (body["value"], body["reason"]) == (False, "DISABLED")
    assert body["metadata"]["evaluationReason"] == "PREREQUISITE_FAILED"


def test_an_unknown_flag_is_404_flag_not_found(client, key):
    response = post(client, "/ofrep/v1/evaluate/flags/missing", {"context": {}}, key)
    assert response.status_code == 404
    body = response.json()
    assert body["key"] == "missing"
    assert body["errorCode"] == "FLAG_NOT_FOUND"
    assert "missing" in body["errorDetails"]


def test_an_evaluation_error_is_400_evaluation_failure(client, key):
    response = post(client, "/ofrep/v1/evaluate/flags/max-items", {"context": {"plan": "x"}}, key)
    assert response.status_code == 400
    body = response.json()
    assert body["key"] == "max-items"
    assert body["errorCode"] == "TARGETING_KEY_MISSING"
    assert body["errorDetails"]


def test_bulk_evaluates_every_flag(client, key):
    response = post(client, "/ofrep/v1/evaluate/flags", {"context": {"targetingKey": "u1"}}, key)
    assert response.status_code == 200
    body = response.json()
    assert set(body) <= {"flags", "metadata", "eventStreams"}
    assert {item["key"] for item in body["flags"]} == set(SAMPLE_DOCUMENT["flags"])
    for item in body["flags"]:
        assert_success_item(item)
    assert response["ETag"]


def test_bulk_reports_failures_per_flag(client, key):
    body = post(client, "/ofrep/v1/evaluate/flags", {"context": {}}, key).json()
    failures = [item for item in body["flags"] if "errorCode" in item]
    assert [item["key"] for item in failures] == ["max-items"]
    assert failures[0]["errorCode"] in FAILURE_CODES
    assert "value" not in failures[0]


def test_bulk_etag_depends_on_context_and_version(
    client, key, environment, django_capture_on_commit_callbacks
):
    body = {"context": {"targetingKey": "u1"}}
    etag = post(client, "/ofrep/v1/evaluate/flags", body, key)["ETag"]
    unchanged = post(client, "/ofrep/v1/evaluate/flags", body, key, HTTP_IF_NONE_MATCH=etag)
    assert unchanged.status_code == 304
    assert unchanged["ETag"] == etag
    other = {"context": {"targetingKey": "u2"}}
    assert (
        post(client, "/ofrep/v1/evaluate/flags", other, key, HTTP_IF_NONE_MATCH=etag).status_code
        == 200
    )
    with django_capture_on_commit_callbacks(execute=True):
        flag = environment.project.flags.get(key="old-feature")
        factories.configure(flag, "production", enabled=True)
    changed = post(client, "/ofrep/v1/evaluate/flags", body, key, HTTP_IF_NONE_MATCH=etag)
    assert changed.status_code == 200
    assert changed["ETag"] != etag


def test_single_flag_answers_304_for_a_matching_etag(client, key):
    body = {"context": {"targetingKey": "u1"}}
    etag = post(client, "/ofrep/v1/evaluate/flags/theme", body, key)["ETag"]
    response = post(
        client, "/ofrep/v1/evaluate/flags/theme", body, key, HTTP_IF_NONE_MATCH=f'W/{etag}, "x"'
    )
    assert response.status_code == 304


def test_server_keys_see_rule_ids_in_metadata(client, environment):
    server = api_key(environment, "server")
    body = post(
        client, "/ofrep/v1/evaluate/flags/new-checkout", {"context": {"country": "US"}}, server
    ).json()
    assert body["metadata"]["ruleId"]


def test_an_empty_request_object_is_an_empty_context(client, key):
    """The Python OFREP provider sends `{}` when the caller gives no context."""
    response = post(client, "/ofrep/v1/evaluate/flags/banner-text", {}, key)
    assert response.status_code == 200
    assert response.json()["value"] == "Hello"


def test_bulk_advertises_the_change_stream(client, key):
    response = post(client, "/ofrep/v1/evaluate/flags", {"context": {"targetingKey": "u1"}}, key)
    streams = response.json()["eventStreams"]
    assert streams[0]["type"] == "sse"
    assert streams[0]["endpoint"]["requestUri"] == "/api/v1/stream"
    assert streams[0]["inactivityDelaySec"] >= 1


def test_x_api_key_wins_over_another_authorization_header(client, key):
    response = post(
        client,
        "/ofrep/v1/evaluate/flags",
        {"context": {"targetingKey": "u1"}},
        key,
        HTTP_AUTHORIZATION="Bearer a-gateway-token",
    )
    assert response.status_code == 200
