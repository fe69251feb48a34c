"""Login lockouts, token rotation and revocation, and the rate limits, through HTTP."""

import pytest
from django.test import override_settings
from rest_framework.test import APIClient

from flags import services
from flagsite import limits_cache
from flagsite.throttling import KeyRateLimiter
from tests import factories

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-staple"
TOKEN = "/api/v1/auth/token/"
OFREP = "/ofrep/v1/evaluate/flags"
JSON = "application/json"
REFRESH = "/api/v1/auth/token/refresh/"


def _login(client, username, password, address="10.0.0.1"):
    return client.post(
        TOKEN, {"username": username, "password": password}, format="json", REMOTE_ADDR=address
    )


@override_settings(AXES_FAILURE_LIMIT=5)
def test_wrong_passwords_lock_the_username_out_with_429_and_retry_after():
    factories.user("alice")
    client = APIClient()
    answers = [_login(client, "alice", "wrong", f"10.0.1.{n}").status_code for n in range(5)]
    assert answers == [401] * 4 + [429], "the failure that reaches the limit locks"

    locked = _login(client, "alice", PASSWORD, "10.0.2.1")

    assert locked.status_code == 429
    assert locked.json()["error"] == "throttled"
    assert int(locked["Retry-After"]) == 900
    factories.user("bob")
    assert _login(client, "bob", PASSWORD, "10.0.2.1").status_code == 200, "others still log in"


@override_settings(AXES_FAILURE_LIMIT=5)
def test_wrong_passwords_from_one_address_lock_that_address_out():
    for n in range(4):
        factories.user(f"target-{n}")
        assert _login(APIClient(), f"target-{n}", "wrong", "10.9.9.9").status_code == 401
    assert _login(APIClient(), "target-0", "wrong", "10.9.9.9").status_code == 429
    factories.user("carol")
    assert _login(APIClient(), "carol", PASSWORD, "10.9.9.9").status_code == 429
    assert _login(APIClient(), "carol", PASSWORD, "10.9.9.10").status_code == 200


@override_settings(AXES_FAILURE_LIMIT=3)
def test_the_admin_login_is_locked_out_the_same_way(client):
    factories.user("dave")
    for _ in range(2):
        answer = client.post("/admin/login/", {"username": "dave", "password": "wrong"})
        assert answer.status_code == 200  # the form again, with its error
    third = client.post("/admin/login/", {"username": "dave", "password": "wrong"})
    assert third.status_code == 429
    locked = client.post("/admin/login/", {"username": "dave", "password": PASSWORD})
    assert locked.status_code == 429
    assert int(locked["Retry-After"]) > 0
    assert "_auth_user_id" not in client.session


def test_the_management_api_limits_each_person():
    from rest_framework.settings import api_settings
    from rest_framework.throttling import SimpleRateThrottle

    limited = {
        **__import__("django.conf").conf.settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"user": "5/minute", "anon": "100/minute"},
    }
    try:
        with override_settings(REST_FRAMEWORK=limited):
            api_settings.reload()
            SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES
            first, second = factories.user(), factories.user()
            one, other = APIClient(), APIClient()
            one.force_authenticate(first)
            other.force_authenticate(second)
            answers = [one.get("/api/v1/projects").status_code for _ in range(6)]
            assert answers == [200] * 5 + [429]
            refused = one.get("/api/v1/projects")
            assert refused.json()["error"] and int(refused["Retry-After"]) > 0
            assert other.get("/api/v1/projects").status_code == 200, "each person has their own"
    finally:  # after the override ends, so later tests get the configured rates back
        api_settings.reload()
        SimpleRateThrottle.THROTTLE_RATES = api_settings.DEFAULT_THROTTLE_RATES


# --- Tokens ----------------------------------------------------------------------------


def _tokens(username):
    response = _login(APIClient(), username, PASSWORD)
    assert response.status_code == 200, response.content
    return response.json()


def _refresh(token):
    return APIClient().post(REFRESH, {"refresh": token}, format="json")


def _projects(access):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {access}")
    return client.get("/api/v1/projects")


def test_a_refresh_token_works_once_and_is_replaced():
    factories.user("erin")
    tokens = _tokens("erin")
    first = _refresh(tokens["refresh"])
    assert first.status_code == 200
    assert first.json()["refresh"] != tokens["refresh"]
    again = _refresh(tokens["refresh"])
    assert again.status_code == 401
    assert again.json()["detail"]
    assert _refresh(first.json()["refresh"]).status_code == 200


def test_a_password_change_revokes_every_token_issued_before_it():
    person = factories.user("frank")
    tokens = _tokens("frank")
    assert _projects(tokens["access"]).status_code == 200
    person.set_password("a-new-passphrase-entirely")
    person.save()
    assert _projects(tokens["access"]).status_code == 401
    assert _refresh(tokens["refresh"]).status_code == 401


def test_deactivation_revokes_access_and_refresh_tokens():
    person = factories.user("gina")
    tokens = _tokens("gina")
    person.is_active = False
    person.save()
    assert _projects(tokens["access"]).status_code == 401
    assert _refresh(tokens["refresh"]).status_code == 401


def test_a_deleted_users_refresh_token_is_a_401_json():
    person = factories.user("hank")
    tokens = _tokens("hank")
    person.delete()
    answer = _refresh(tokens["refresh"])
    assert answer.status_code == 401
    assert answer["Content-Type"].startswith("application/json")
    assert answer.json()["detail"]


# --- Evaluation: per key -----------------------------------------------------------------


def _server_key():
    project = factories.project()
    key, secret = services.api_key_create(
        environment=factories.environment(project, "development"),
        kind="server",
        name="k",
        **factories.SYSTEM,
    )
    return secret


def test_an_api_key_past_its_evaluation_rate_gets_429_and_others_do_not(client):
    from flagsite import throttling

    limited, other = _server_key(), _server_key()
    limiter = KeyRateLimiter(limit=5, window=60, sync_every=0)
    original = throttling._limiter
    throttling._limiter = lambda: limiter
    client.handler.load_middleware()
    try:
        answers = [
            client.post(OFREP, {}, content_type=JSON, HTTP_X_API_KEY=limited).status_code
            for _ in range(7)
        ]
        refused = client.post(OFREP, {}, content_type=JSON, HTTP_X_API_KEY=limited)
        other_answer = client.post(OFREP, {}, content_type=JSON, HTTP_X_API_KEY=other)
    finally:
        throttling._limiter = original
        client.handler.load_middleware()
    assert answers[:5] == [200] * 5 and answers[5:] == [429, 429]
    assert int(refused["Retry-After"]) >= 1
    assert other_answer.status_code == 200


def test_the_key_limit_is_shared_across_processes_through_the_cache():
    """Two limiters stand for two instances: together they serve the key's limit, no more."""
    first = KeyRateLimiter(limit=100, window=60, sync_every=0)
    second = KeyRateLimiter(limit=100, window=60, sync_every=0)
    digest = "d" * 64
    served = 0
    for _ in range(150):
        served += first.admit(digest) == 0
        served += second.admit(digest) == 0
    assert 100 <= served <= 102  # each may serve the one request it counted before syncing


def test_the_key_limit_syncs_at_most_every_interval():
    limiter = KeyRateLimiter(limit=10, window=60, sync_every=3600)
    digest = "e" * 64
    served = sum(limiter.admit(digest, now=1000.0) == 0 for _ in range(20))
    assert served == 10, "the local count alone holds the limit between syncs"


def _dead_redis_caches():
    from tests.servers import free_port

    return {
        "default": {
            "BACKEND": "django_redis.cache.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
            "OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.2, "SOCKET_TIMEOUT": 0.2},
        },
        "limits": {"BACKEND": "flagsite.limits_cache.FallbackCache", "LOCATION": "default"},
    }


@override_settings(AXES_FAILURE_LIMIT=3)
def test_logins_and_limits_keep_working_per_process_while_redis_is_away(caplog):
    factories.user("erin")
    factories.user("frank")
    try:
        with override_settings(CACHES=_dead_redis_caches()):
            assert _login(APIClient(), "erin", PASSWORD).status_code == 200, "login still works"
            answers = [
                _login(APIClient(), "frank", "wrong", f"10.3.0.{n}").status_code for n in range(3)
            ]
            locked = _login(APIClient(), "frank", PASSWORD, "10.3.1.1")
    finally:
        limits_cache._state.failed_at = None  # the next test's Redis is up
    assert answers == [401, 401, 429], "lockouts still count, in this process"
    assert locked.status_code == 429
    warnings = [r for r in caplog.records if "login and rate limits" in r.getMessage()]
    assert len(warnings) == 1, "one line when the shared cache goes away, not one per request"
