"""The ASGI fast path answers the evaluation endpoints exactly as Django's views do."""

import json

import pytest
from django.test import Client

from evaluation import cache as snapshots
from evaluation import credentials
from tests.evaluation.document_loader import (  # noqa: F401 - fixture
    SAMPLE_DOCUMENT,
    api_key,
    fresh_credentials,
    load_document,
)
from tests.evaluation.doors import FastPathClient, keeping_the_test_transaction

pytestmark = pytest.mark.django_db

FLAG = next(iter(SAMPLE_DOCUMENT["flags"]))
CONTEXT = json.dumps({"context": {"targetingKey": "user-1", "country": "US"}})
# Headers that differ per request whatever the door.
PER_REQUEST = {"x-request-id"}


@pytest.fixture
def environment():
    return load_document(SAMPLE_DOCUMENT).environment


def _both(method, path, body=None, **headers):
    """The same request through each door: (Django's response, the fast path's)."""
    answers = []
    for client in (Client(), FastPathClient()):
        snapshots.clear_local()
        credentials.clear_local()
        if method == "GET":
            answers.append(client.get(path, **headers))
        else:
            answers.append(
                client.generic(method, path, body or "", content_type="application/json", **headers)
            )
    return answers


def _headers(response):
    return {
        name.lower(): value for name, value in response.items() if name.lower() not in PER_REQUEST
    }


REQUESTS = [
    ("POST", "/ofrep/v1/evaluate/flags", CONTEXT),
    ("POST", f"/ofrep/v1/evaluate/flags/{FLAG}", CONTEXT),
    ("POST", "/ofrep/v1/evaluate/flags/no-such-flag", CONTEXT),
    ("POST", "/api/v1/evaluate", CONTEXT),
    ("POST", f"/api/v1/evaluate/{FLAG}", CONTEXT),
    ("GET", "/api/v1/sdk/flags", None),
    ("GET", "/ofrep/v1/evaluate/flags", None),  # 405 with Allow
    ("PUT", "/api/v1/sdk/flags", None),  # 405 with Allow
    ("POST", "/api/v1/evaluate", '{"context": '),  # 400
    ("POST", "/api/v1/evaluate", '{"context": {"a": "\\u0000"}, "x": 1}'),  # unknown field
    ("POST", "/ofrep/v1/evaluate/flags", '{"context": {"targetingKey": 7}}'),
    ("POST", "/ofrep/v1/evaluate/flags", '{"context": {"k": "\\ud800"}}'),
    ("POST", "/api/v1/evaluate", "[" * 10_000 + "]" * 10_000),
    ("POST", "/api/v1/evaluate", json.dumps({"context": {"k": "x" * 70_000}})),  # 413
]


@pytest.mark.parametrize("kind", ["server", "client"])
@pytest.mark.parametrize(("method", "path", "body"), REQUESTS)
def test_both_doors_answer_the_same_status_headers_and_bytes(environment, kind, method, path, body):
    key = api_key(environment, kind)
    django, fast = _both(method, path, body, HTTP_X_API_KEY=key)
    # Other methods are rare (a mistake): Django answers them.
    assert getattr(fast, "served_by_fast_path", False) == (method in ("GET", "POST"))
    assert fast.status_code == django.status_code
    assert fast.content == django.content
    assert _headers(fast) == _headers(django)
    assert fast["X-Request-ID"]


@pytest.mark.parametrize(
    "headers",
    [
        {},  # 401
        {"HTTP_X_API_KEY": "ffs_not-a-key"},
        {"HTTP_AUTHORIZATION": "Basic abc"},
        {"HTTP_X_API_KEY": "x" * 300},
    ],
)
def test_both_doors_refuse_a_missing_or_unknown_key_alike(environment, headers):
    django, fast = _both("POST", "/ofrep/v1/evaluate/flags", CONTEXT, **headers)
    assert fast.status_code == django.status_code == 401
    assert fast.content == django.content
    assert _headers(fast) == _headers(django)


def test_a_matching_etag_is_a_304_through_both_doors(environment):
    key = api_key(environment, "server")
    etag = Client().get("/api/v1/sdk/flags", HTTP_X_API_KEY=key)["ETag"]
    django, fast = _both("GET", "/api/v1/sdk/flags", HTTP_X_API_KEY=key, HTTP_IF_NONE_MATCH=etag)
    assert fast.status_code == django.status_code == 304
    assert _headers(fast) == _headers(django)


ORIGINS = [
    "https://app.example",  # allowed
    "https://evil.example",  # not allowed: no Access-Control-* headers
    "null",
    "not a url",
]


@pytest.mark.parametrize("origin", ORIGINS)
@pytest.mark.parametrize(("method", "path", "body"), REQUESTS[:6])
def test_a_browsers_request_gets_the_same_cors_answer_through_both_doors(
    environment, settings, origin, method, path, body
):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example"]
    key = api_key(environment, "client")
    django, fast = _both(method, path, body, HTTP_X_API_KEY=key, HTTP_ORIGIN=origin)
    assert getattr(fast, "served_by_fast_path", False)
    assert (fast.status_code, fast.content) == (django.status_code, django.content)
    assert _headers(fast) == _headers(django)
    allowed = origin == "https://app.example"
    assert fast.get("Access-Control-Allow-Origin") == (origin if allowed else None)
    assert fast.get("Access-Control-Expose-Headers") == ("etag" if allowed else None)


@pytest.mark.parametrize("origin", ORIGINS)
@pytest.mark.parametrize("path", ["/ofrep/v1/evaluate/flags", f"/ofrep/v1/evaluate/flags/{FLAG}"])
def test_a_preflight_gets_the_same_answer_through_both_doors(environment, settings, origin, path):
    settings.CORS_ALLOWED_ORIGINS = ["https://app.example"]
    django, fast = _both(
        "OPTIONS",
        path,
        HTTP_ORIGIN=origin,
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="content-type, x-api-key",
    )
    assert getattr(fast, "served_by_fast_path", False)
    assert (fast.status_code, fast.content) == (django.status_code, django.content) == (200, b"")
    assert _headers(fast) == _headers(django)
    if origin == "https://app.example":
        assert "x-api-key" in fast["Access-Control-Allow-Headers"]
        assert "POST" in fast["Access-Control-Allow-Methods"]
    else:
        assert "Access-Control-Allow-Origin" not in fast


def test_a_preflight_without_an_origin_is_answered_without_cors_headers(environment):
    django, fast = _both(
        "OPTIONS", "/ofrep/v1/evaluate/flags", HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST"
    )
    assert getattr(fast, "served_by_fast_path", False)
    assert _headers(fast) == _headers(django)
    assert not [name for name in _headers(fast) if name.startswith("access-control-")]


def test_an_options_request_that_is_no_preflight_is_left_to_django(environment):
    django, fast = _both("OPTIONS", "/ofrep/v1/evaluate/flags", HTTP_ORIGIN="https://app.example")
    assert not getattr(fast, "served_by_fast_path", False)
    assert fast.status_code == django.status_code


def test_a_host_django_refuses_is_left_to_django(environment):
    key = api_key(environment, "server")
    response = FastPathClient().post(
        "/ofrep/v1/evaluate/flags",
        CONTEXT,
        "application/json",
        HTTP_X_API_KEY=key,
        HTTP_HOST="evil.example",
    )
    assert not getattr(response, "served_by_fast_path", False)
    assert response.status_code == 400


def test_the_fast_path_counts_requests_in_the_metrics(environment):
    from prometheus_client import REGISTRY

    from flagsite import metrics

    key = api_key(environment, "server")
    labels = {"route": "ofrep-flags", "method": "POST", "status": "200"}
    metrics.flush_pending()
    before = REGISTRY.get_sample_value("flags_http_requests_total", labels) or 0
    FastPathClient().post(
        "/ofrep/v1/evaluate/flags", CONTEXT, "application/json", HTTP_X_API_KEY=key
    )
    metrics.flush_pending()  # what /metrics does first (and each process every second)
    assert REGISTRY.get_sample_value("flags_http_requests_total", labels) == before + 1


def test_the_fast_path_logs_each_request_with_its_id(environment, caplog):
    key = api_key(environment, "server")
    with caplog.at_level("INFO", logger="flagsite.request"):
        response = FastPathClient().post(
            "/ofrep/v1/evaluate/flags",
            CONTEXT,
            "application/json",
            HTTP_X_API_KEY=key,
            HTTP_X_REQUEST_ID="abc-123",
        )
    assert response["X-Request-ID"] == "abc-123"
    (record,) = [r for r in caplog.records if r.name == "flagsite.request"]
    assert record.route == "ofrep-flags" and record.status == 200 and record.request_id == "abc-123"


def _asgi(scope_headers, chunks, path="/ofrep/v1/evaluate/flags", method="POST"):
    """Drive the fast path with raw ASGI messages: (status, headers, body)."""
    from asgiref.sync import async_to_sync

    from evaluation.fastpath import FastPath

    pending = [
        {"type": "http.request", "body": chunk, "more_body": index < len(chunks) - 1}
        for index, chunk in enumerate(chunks)
    ]
    sent = []

    async def receive():
        return pending.pop(0) if pending else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    async def django(scope, receive, send):
        raise AssertionError("handed on to Django")

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "raw_path": path.encode(),
        "scheme": "http",
        "query_string": b"",
        "headers": [(b"host", b"testserver"), *scope_headers],
    }
    with keeping_the_test_transaction():
        async_to_sync(FastPath(fallback=django))(scope, receive, send)
    return sent[0]["status"], dict(sent[0]["headers"]), sent[1]["body"]


def test_a_body_streamed_past_the_limit_is_413_without_reading_it_all(environment):
    key = api_key(environment, "server").encode()
    chunks = [b'{"context": {"k": "'] + [b"x" * 16_384] * 100 + [b'"}}']
    status, _, body = _asgi([(b"x-api-key", key)], chunks)
    assert status == 413
    assert json.loads(body)["errorCode"] == "GENERAL"


def test_a_key_header_of_bytes_that_are_not_text_is_401(environment):
    status, headers, body = _asgi([(b"x-api-key", b"\xff\xfe\x00ffs")], [CONTEXT.encode()])
    assert status == 401
    assert headers[b"www-authenticate"] == b'Bearer realm="flags"'
    assert json.loads(body)["errorDetails"] == "unknown API key"


def test_a_context_sent_in_pieces_is_read_whole(environment):
    key = api_key(environment, "server").encode()
    body = CONTEXT.encode()
    whole = _asgi([(b"x-api-key", key)], [body])
    pieces = _asgi([(b"x-api-key", key)], [body[:5], body[5:9], body[9:], b""])
    assert pieces[0] == whole[0] == 200
    assert pieces[2] == whole[2]


def test_header_names_in_any_case_and_repeated_headers_are_read_as_django_reads_them(
    environment,
):
    key = api_key(environment, "server").encode()
    status, headers, body = _asgi([(b"x-api-key", key)], [CONTEXT.encode()])
    assert status == 200
    etag = headers[b"etag"]
    # A server that keeps the client's case, and a tag split over two headers (joined with
    # a comma, as the WSGI door joins them): the same key, the same 304.
    revalidated = _asgi(
        [(b"X-API-Key", key), (b"If-None-Match", b'"other"'), (b"if-none-match", etag)],
        [CONTEXT.encode()],
    )
    assert revalidated[0] == 304 and revalidated[2] == b""
    assert revalidated[1][b"etag"] == etag


def test_a_deeply_nested_body_is_a_400_parse_error(environment):
    key = api_key(environment, "server").encode()
    status, _, body = _asgi([(b"x-api-key", key)], [b'{"context": ' + b"[" * 10_000])
    assert status == 400
    assert json.loads(body)["errorCode"] == "PARSE_ERROR"


def test_the_cors_answers_kept_stay_bounded_whatever_origins_clients_send(settings):
    from evaluation.fastpath import FastPath

    settings.CORS_ALLOWED_ORIGINS = ["https://app.example"]
    router = FastPath(fallback=None)
    for number in range(5_000):
        headers = {"origin": f"https://{number}.example" + "x" * 1_000}
        assert router._cors("POST", "/ofrep/v1/evaluate/flags", headers) == []
    assert len(router.cors) <= 1_001
    allowed = router._cors("POST", "/ofrep/v1/evaluate/flags", {"origin": "https://app.example"})
    assert (b"access-control-allow-origin", b"https://app.example") in allowed
