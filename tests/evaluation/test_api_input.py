"""Bad input on the evaluation endpoints: always a 4xx JSON body naming the problem."""

import pytest

from evaluation.answers import MAX_BODY_BYTES
from tests.evaluation.document_loader import (  # noqa: F401 - fixture
    SAMPLE_DOCUMENT,
    api_key,
    fresh_credentials,
    load_document,
)

pytestmark = pytest.mark.django_db

BAD_BODIES = [
    (b"{", "PARSE_ERROR", "not valid JSON"),
    (b"\xff\xfe", "PARSE_ERROR", "not valid JSON"),
    (b"[]", "PARSE_ERROR", "must be an object"),
    (b'"context"', "PARSE_ERROR", "must be an object"),
    (b'{"context": {}, "extra": 1}', "PARSE_ERROR", "unknown field 'extra'"),
    (b'{"contexts": {}}', "PARSE_ERROR", "unknown field 'contexts'"),
    (b'{"context": []}', "INVALID_CONTEXT", "context must be a JSON object"),
    (b'{"context": "u1"}', "INVALID_CONTEXT", "context must be a JSON object"),
    (b'{"context": null}', "INVALID_CONTEXT", "context must be a JSON object"),
    (b'{"context": {"n": NaN}}', "PARSE_ERROR", "NaN is not JSON"),
    (b"[" * 10_000 + b"]" * 10_000, "PARSE_ERROR", ""),
]


@pytest.fixture
def key():
    return api_key(load_document(SAMPLE_DOCUMENT).environment, "server")


@pytest.mark.parametrize("body, code, message", BAD_BODIES)
@pytest.mark.parametrize("path", ["/ofrep/v1/evaluate/flags", "/ofrep/v1/evaluate/flags/theme"])
def test_ofrep_bad_bodies_are_400_with_error_code(client, key, path, body, code, message):
    response = client.post(path, body, content_type="application/json", HTTP_X_API_KEY=key)
    assert response.status_code == 400
    answer = response.json()
    assert answer["errorCode"] == code
    assert message in answer["errorDetails"]
    if path.endswith("theme"):
        assert answer["key"] == "theme"


@pytest.mark.parametrize("body, code, message", BAD_BODIES)
@pytest.mark.parametrize("path", ["/api/v1/evaluate", "/api/v1/evaluate/theme"])
def test_native_bad_bodies_are_400_json(client, key, path, body, code, message):
    response = client.post(path, body, content_type="application/json", HTTP_X_API_KEY=key)
    assert response.status_code == 400
    answer = response.json()
    assert answer["error"] == "invalid_request"
    assert message in answer["detail"]


@pytest.mark.parametrize("path", ["/api/v1/evaluate", "/ofrep/v1/evaluate/flags/theme"])
def test_oversized_bodies_are_refused(client, key, path):
    body = b'{"context": {"a": "' + b"x" * MAX_BODY_BYTES + b'"}}'
    response = client.post(path, body, content_type="application/json", HTTP_X_API_KEY=key)
    assert response.status_code == 413
    assert str(MAX_BODY_BYTES) in response.content.decode()


@pytest.mark.parametrize(
    "path", ["/api/v1/evaluate", "/api/v1/evaluate/theme", "/ofrep/v1/evaluate/flags"]
)
def test_wrong_methods_are_405_json(client, key, path):
    response = client.get(path, HTTP_X_API_KEY=key)
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json()


def test_the_document_is_get_only(client, key):
    response = client.post(
        "/api/v1/sdk/flags", b"", content_type="application/json", HTTP_X_API_KEY=key
    )
    assert response.status_code == 405
    assert "GET" in response["Allow"]


def test_no_csrf_token_is_needed(key):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = strict.post(
        "/ofrep/v1/evaluate/flags", b"{}", content_type="application/json", HTTP_X_API_KEY=key
    )
    assert response.status_code == 200


@pytest.mark.parametrize(
    "context", [{"targetingKey": "ü-用户"}, {"list": [1, "a", None]}, {"deep": {"a": {"b": 1}}}]
)
def test_unusual_contexts_evaluate(client, key, context):
    import json

    response = client.post(
        "/ofrep/v1/evaluate/flags",
        json.dumps({"context": context}),
        content_type="application/json",
        HTTP_X_API_KEY=key,
    )
    assert response.status_code == 200


def test_a_targeting_key_that_is_not_a_string_is_an_invalid_context(client, key):
    body = b'{"context": {"targetingKey": 7}}'
    bulk = client.post("/ofrep/v1/evaluate/flags", body, "application/json", HTTP_X_API_KEY=key)
    assert bulk.status_code == 400
    assert bulk.json()["errorCode"] == "INVALID_CONTEXT"
    assert "targetingKey must be a string" in bulk.json()["errorDetails"]
    one = client.post(
        "/ofrep/v1/evaluate/flags/theme", body, "application/json", HTTP_X_API_KEY=key
    )
    assert one.status_code == 400
    assert (one.json()["key"], one.json()["errorCode"]) == ("theme", "INVALID_CONTEXT")
    native = client.post("/api/v1/evaluate", body, "application/json", HTTP_X_API_KEY=key)
    assert native.status_code == 200
    assert native.json()["flags"]["theme"]["errorCode"] == "INVALID_CONTEXT"


EVALUATION_PATHS = [
    "/api/v1/evaluate",
    "/api/v1/evaluate/theme",
    "/ofrep/v1/evaluate/flags",
    "/ofrep/v1/evaluate/flags/theme",
]


@pytest.mark.parametrize("path", EVALUATION_PATHS)
@pytest.mark.parametrize(
    ("body", "where"),
    [
        (b'{"context": {"targetingKey": "\\ud800"}}', "context.targetingKey"),
        (b'{"context": {"user": {"name": ["ok", "x\\uDFFF"]}}}', "context.user.name[1]"),
        (b'{"context": {"\\udc00": 1}}', "context (a key)"),
    ],
)
def test_a_context_that_is_not_valid_unicode_is_refused_once(client, key, path, body, where):
    response = client.post(path, body, content_type="application/json", HTTP_X_API_KEY=key)
    assert response.status_code == 400
    answer = response.json()
    assert answer["errorCode"] == "INVALID_CONTEXT"
    assert f"{where} is not valid Unicode" in (answer.get("errorDetails") or answer["detail"])


@pytest.mark.parametrize("path", EVALUATION_PATHS)
def test_a_surrogate_pair_and_nul_are_ordinary_characters(client, key, path):
    body = b'{"context": {"targetingKey": "\\ud83d\\ude00\\u0000", "k\\u0000": "a\\u0000b"}}'
    response = client.post(path, body, content_type="application/json", HTTP_X_API_KEY=key)
    assert response.status_code == 200, response.content


@pytest.mark.parametrize("path", EVALUATION_PATHS)
@pytest.mark.parametrize(
    "body",
    [
        b'{"context": {"n": 1e400}}',
        b'{"context": {"n": -1E+999}}',
        b'{"context": {"n": ' + b"7" * 10_000 + b"}}",
        b'{"context": {"a": ' + b"[" * 10_000 + b"]" * 10_000 + b"}}",
    ],
    ids=["1e400", "-1e999", "10000-digits", "10000-deep"],
)
def test_numbers_out_of_range_and_deep_nesting_are_400(client, key, path, body):
    response = client.post(path, body, content_type="application/json", HTTP_X_API_KEY=key)
    assert response.status_code == 400
    assert response.json()["errorCode"] == "PARSE_ERROR"


def test_post_on_the_document_is_a_json_405_even_with_csrf_checks(key):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    response = strict.post("/api/v1/sdk/flags", b"{}", "application/json", HTTP_X_API_KEY=key)
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"


@pytest.mark.parametrize(
    "path", ["/ofrep/v1/evaluate/flags/", "/ofrep/v1/nothing", "/api/v1/evaluate/a/b"]
)
def test_paths_that_name_no_endpoint_are_json_404(client, key, path):
    response = client.post(path, b"{}", content_type="application/json", HTTP_X_API_KEY=key)
    assert response.status_code == 404
    assert response.json()


def test_an_unknown_flag_is_neither_counted_nor_an_exposure(client, key):
    from evaluation import exposures

    before = dict(exposures._batch.items)
    for path in ("/ofrep/v1/evaluate/flags/nope\x00x", "/api/v1/evaluate/nope-2"):
        response = client.post(path, b"{}", content_type="application/json", HTTP_X_API_KEY=key)
        assert response.status_code == 404
    assert not [k for k in exposures._batch.items if k not in before and k[1].startswith("nope")]
