"""API keys on the evaluation endpoints: headers, 401/403, revocation bound, expiry, CORS."""

import json
from datetime import timedelta

import pytest
from django.core.cache import cache
from django.test import override_settings
from django.utils import timezone

from evaluation import credentials, keys
from flags import services
from flags.models import ApiKey
from tests import factories
from tests.evaluation.document_loader import (  # noqa: F401 - fixture
    SAMPLE_DOCUMENT,
    api_key,
    fresh_credentials,
    load_document,
)

pytestmark = pytest.mark.django_db

EVALUATION_PATHS = (
    "/api/v1/evaluate",
    "/api/v1/evaluate/new-checkout",
    "/ofrep/v1/evaluate/flags",
    "/ofrep/v1/evaluate/flags/new-checkout",
)


@pytest.fixture
def environment():
    return load_document(SAMPLE_DOCUMENT).environment


class Clocks:
    """The key cache's two clocks (this process's copies, shared entries), moved together."""

    def __init__(self) -> None:
        self.local = 1000.0
        self.wall = 1_800_000_000.0

    def __iadd__(self, seconds: float) -> "Clocks":
        self.local += seconds
        self.wall += seconds
        return self


@pytest.fixture
def clock(monkeypatch):
    now = Clocks()
    monkeypatch.setattr(credentials, "clock", lambda: now.local)
    monkeypatch.setattr(credentials, "wall_clock", lambda: now.wall)
    return now


def evaluate(client, path="/ofrep/v1/evaluate/flags/new-checkout", **headers):
    if path == "/api/v1/sdk/flags":
        return client.get(path, **headers)
    body = json.dumps({"context": {"targetingKey": "u1"}})
    return client.post(path, body, content_type="application/json", **headers)


@pytest.mark.parametrize("path", EVALUATION_PATHS)
def test_both_key_headers_are_accepted(client, environment, path):
    key = api_key(environment, "client")
    assert evaluate(client, path, HTTP_AUTHORIZATION=f"Bearer {key}").status_code == 200
    assert evaluate(client, path, HTTP_X_API_KEY=key).status_code == 200


@pytest.mark.parametrize("path", (*EVALUATION_PATHS, "/api/v1/sdk/flags"))
def test_no_key_or_an_unknown_key_is_401_json(client, environment, path):
    for headers in ({}, {"HTTP_X_API_KEY": "ffs_nope"}, {"HTTP_AUTHORIZATION": "Basic abc"}):
        response = evaluate(client, path, **headers)
        assert response.status_code == 401, headers
        assert response["Content-Type"] == "application/json"
        body = response.json()
        assert body.get("detail") or body.get("errorDetails")


def test_unknown_keys_are_cached_so_guesses_do_not_reach_the_database(
    client, environment, django_assert_num_queries
):
    evaluate(client, HTTP_X_API_KEY="ffs_guess")
    with django_assert_num_queries(0):
        assert evaluate(client, HTTP_X_API_KEY="ffs_guess").status_code == 401


def test_an_expired_key_is_401(client, environment):
    key = api_key(environment, "server", expires_at=timezone.now() + timedelta(hours=1))
    assert evaluate(client, HTTP_X_API_KEY=key).status_code == 200
    ApiKey.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    credentials.clear_local()
    cache.delete(keys.credential(credentials.key_digest(key)))
    response = evaluate(client, HTTP_X_API_KEY=key)
    assert response.status_code == 401
    assert "expired" in response.json()["errorDetails"]


def test_a_revoked_key_stops_working_within_the_documented_bound(
    client, environment, clock, django_capture_on_commit_callbacks
):
    key = api_key(environment, "server")
    assert evaluate(client, HTTP_X_API_KEY=key).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        services.api_key_revoke(key=ApiKey.objects.get(), **factories.SYSTEM)
    # The revoke deleted the shared entry; this process's own copy is younger than the bound.
    clock += credentials.LOCAL_SECONDS
    response = evaluate(client, HTTP_X_API_KEY=key)
    assert response.status_code == 401
    assert "revoked" in response.json()["errorDetails"]
    assert credentials.REVOCATION_BOUND_SECONDS <= 5


def test_a_stale_shared_entry_cannot_outlive_the_bound(client, environment, clock):
    """Even if another process re-cached the key just before the revoke, it expires in time."""
    key = api_key(environment, "server")
    assert evaluate(client, HTTP_X_API_KEY=key).status_code == 200
    ApiKey.objects.update(revoked_at=timezone.now())  # the shared entry was not rewritten
    assert evaluate(client, HTTP_X_API_KEY=key).status_code == 200  # still cached here
    clock += credentials.LOCAL_SECONDS
    assert evaluate(client, HTTP_X_API_KEY=key).status_code == 200  # from the shared entry,
    clock += credentials.SHARED_SECONDS  # which counts as an answer this long (and a copy
    # taken from it just before that, LOCAL_SECONDS more: the revocation bound)
    response = evaluate(client, HTTP_X_API_KEY=key)
    assert response.status_code == 401
    assert "revoked" in response.json()["errorDetails"]


def test_a_known_key_stays_in_the_shared_cache_as_the_last_known_one_and_guesses_do_not(
    client, environment
):
    key = api_key(environment, "client")
    assert evaluate(client, HTTP_X_API_KEY=key).status_code == 200
    assert evaluate(client, HTTP_X_API_KEY="ffc_guess").status_code == 401
    ttl = getattr(cache, "ttl", None)  # django-redis tells how long an entry lives
    if ttl is None:
        pytest.skip("needs REDIS_URL (the in-process cache does not tell an entry's lifetime)")
    known = ttl(keys.credential(credentials.key_digest(key)))
    guess = ttl(keys.credential(credentials.key_digest("ffc_guess")))
    assert credentials.KNOWN_SECONDS - 60 < known <= credentials.KNOWN_SECONDS
    assert 0 < guess <= credentials.SHARED_SECONDS  # a flood of guesses cannot fill Redis


def test_a_revoke_is_written_to_the_shared_cache_for_every_process_to_see(
    client, environment, clock, django_capture_on_commit_callbacks
):
    key = api_key(environment, "server")
    assert evaluate(client, HTTP_X_API_KEY=key).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        services.api_key_revoke(key=ApiKey.objects.get(), **factories.SYSTEM)
    # Another process: nothing in its memory, only the shared cache to ask.
    credentials.clear_local()
    record = cache.get(keys.credential(credentials.key_digest(key)))
    assert record is not None and record[-1] is True  # revoked, not merely deleted
    response = evaluate(client, HTTP_X_API_KEY=key)
    assert response.status_code == 401
    assert "revoked" in response.json()["errorDetails"]


def test_client_keys_get_403_on_server_only_endpoints(client, environment):
    key = api_key(environment, "client")
    response = client.get("/api/v1/sdk/flags", HTTP_X_API_KEY=key)
    assert response.status_code == 403
    assert response.json()["error"] == "permission_denied"


def test_last_used_is_recorded_at_most_once_a_minute(
    client, environment, clock, django_assert_max_num_queries
):
    key = api_key(environment, "client")
    assert ApiKey.objects.get().last_used_at is None
    evaluate(client, HTTP_X_API_KEY=key)
    first = ApiKey.objects.get().last_used_at
    assert first is not None
    ApiKey.objects.update(last_used_at=None)
    # Ten seconds of traffic: the key is read again at most once per SHARED_SECONDS, and
    # nothing is written.
    reads = int(10 / credentials.SHARED_SECONDS)
    with django_assert_max_num_queries(reads) as captured:
        for _ in range(10):
            clock += 1
            evaluate(client, HTTP_X_API_KEY=key)
    assert not [query for query in captured.captured_queries if "UPDATE" in query["sql"]]
    assert ApiKey.objects.get().last_used_at is None
    clock += credentials.TOUCH_SECONDS
    cache.delete(keys.credential_used(credentials.key_digest(key)))  # its minute is over
    evaluate(client, HTTP_X_API_KEY=key)
    assert ApiKey.objects.get().last_used_at is not None


@override_settings(CORS_ALLOWED_ORIGINS=["https://app.example.com"])
def test_browsers_on_allowed_origins_may_evaluate_with_client_keys(client, environment):
    preflight = client.options(
        "/ofrep/v1/evaluate/flags",
        HTTP_ORIGIN="https://app.example.com",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
        HTTP_ACCESS_CONTROL_REQUEST_HEADERS="authorization, content-type, if-none-match",
    )
    assert preflight.status_code == 200
    assert preflight["Access-Control-Allow-Origin"] == "https://app.example.com"
    allowed = preflight["Access-Control-Allow-Headers"].lower()
    assert "authorization" in allowed and "if-none-match" in allowed
    assert "POST" in preflight["Access-Control-Allow-Methods"]
    key = api_key(environment, "client")
    response = evaluate(
        client,
        "/ofrep/v1/evaluate/flags",
        HTTP_ORIGIN="https://app.example.com",
        HTTP_X_API_KEY=key,
    )
    assert response["Access-Control-Allow-Origin"] == "https://app.example.com"
    assert "etag" in response["Access-Control-Expose-Headers"].lower()


@override_settings(CORS_ALLOWED_ORIGINS=["https://app.example.com"])
def test_other_origins_get_no_cors_headers(client, environment):
    preflight = client.options(
        "/ofrep/v1/evaluate/flags",
        HTTP_ORIGIN="https://evil.example.net",
        HTTP_ACCESS_CONTROL_REQUEST_METHOD="POST",
    )
    assert "Access-Control-Allow-Origin" not in preflight
