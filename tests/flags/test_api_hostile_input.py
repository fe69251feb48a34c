"""Hostile input on the management API and its token endpoints: a 4xx JSON naming the field.

NUL characters and lone surrogates only break PostgreSQL (it refuses NUL in text and jsonb;
psycopg refuses surrogates), so this file must also run with DB_URL set, as CI does. Each
case is its own test: on PostgreSQL one database error aborts the test's transaction.
"""

import json

import pytest
from rest_framework.test import APIClient

from flags.models import AuditEntry, Flag, Segment
from flags.validation import MAX_JSON_DEPTH
from tests import factories
from tests.flags.test_api_management import client_for
from tests.hostile import DEEP

pytestmark = pytest.mark.django_db

PROJECT = "/api/v1/projects/shop"
CONFIG = f"{PROJECT}/flags/checkout/environments/development"
NUL, SURROGATE = "a\u0000b", "a\ud800b"


@pytest.fixture
def project():
    project = factories.project("shop")
    factories.flag(project, "checkout")
    return project


@pytest.fixture
def admin(project):
    return factories.member(project, "admin", username="ada")


@pytest.fixture
def api(admin) -> APIClient:
    client = client_for(admin)
    client.raise_request_exception = False  # a 500 is an answer to assert on, not a crash
    return client


def send(api: APIClient, method: str, url: str, body: str | None = None):
    if body is None:
        return getattr(api, method)(url)
    return getattr(api, method)(url, body, content_type="application/json")


def assert_refused(response, field: str, words: str, status: int = 400) -> dict:
    assert response.status_code == status, response.content[:300]
    assert response["Content-Type"] == "application/json"
    answer = response.json()
    assert answer["error"] == "invalid_request"
    assert words in answer["fields"][field][0], answer
    assert answer["detail"].startswith(f"{field}: ")
    return answer


# --- Bodies nested 10,000 deep ------------------------------------------------------------

WRITES = [
    ("post", "/api/v1/auth/token/"),
    ("post", "/api/v1/auth/token/refresh/"),
    ("post", "/api/v1/projects"),
    ("post", f"{PROJECT}/environments"),
    ("patch", f"{PROJECT}/environments/staging"),
    ("post", f"{PROJECT}/flags"),
    ("patch", f"{PROJECT}/flags/checkout"),
    ("patch", CONFIG),
    ("post", f"{CONFIG}/toggle"),
    ("post", f"{CONFIG}/change-requests"),
    ("post", f"{CONFIG}/schedule"),
    ("post", f"{CONFIG}/rollouts"),
    ("post", f"{CONFIG}/versions/1/restore"),
    ("post", f"{PROJECT}/segments"),
    ("post", f"{PROJECT}/api-keys"),
    ("post", f"{PROJECT}/members"),
]


@pytest.mark.parametrize("method, url", WRITES)
def test_a_body_nested_10000_deep_is_a_400(api, method, url):
    response = send(api, method, url, DEEP)
    assert response.status_code == 400, response.content[:300]
    assert response.json()["error"] == "invalid_request"
    assert "nested more than" in response.json()["detail"]


def test_the_token_endpoint_refuses_deep_json_without_a_token():
    response = APIClient().post("/api/v1/auth/token/", DEEP, content_type="application/json")
    assert response.status_code == 400
    assert "nested more than" in response.json()["detail"]


def test_nesting_is_refused_past_the_limit_and_accepted_up_to_it(api):
    def flag(key, depth):  # a json flag whose variant value is `depth` objects deep
        value = json.loads('{"a": ' * depth + "1" + "}" * depth)
        return json.dumps({"key": key, "type": "json", "variants": [{"key": "a", "value": value}]})

    assert send(api, "post", f"{PROJECT}/flags", flag("deep", 50)).status_code == 201
    response = send(api, "post", f"{PROJECT}/flags", flag("deeper", 70))
    assert response.status_code == 400
    [(field, [message])] = response.json()["fields"].items()
    assert field.startswith("variants[0].value.a.a")
    assert message == f"nested more than {MAX_JSON_DEPTH} levels deep"
    assert not Flag.objects.filter(key="deeper").exists()


# --- NUL and lone surrogates in bodies ----------------------------------------------------


def flag_with(**fields) -> dict:
    return {"key": "banner", "type": "string", "variants": [{"key": "a", "value": "A"}], **fields}


def rule(condition: dict, **fields) -> dict:
    return {"conditions": [condition], "serve": {"variant": "on"}, **fields}


EQUALS_NUL = {"attribute": "plan", "operator": "equals", "values": [NUL]}
BODIES = [
    ("post", f"{PROJECT}/flags", flag_with(name=NUL), "name"),
    ("post", f"{PROJECT}/flags", flag_with(description=SURROGATE), "description"),
    ("post", f"{PROJECT}/flags", flag_with(tags=["ui", NUL]), "tags[1]"),
    (
        "post",
        f"{PROJECT}/flags",
        flag_with(variants=[{"key": "a", "value": NUL}]),
        "variants[0].value",
    ),
    (
        "post",
        f"{PROJECT}/flags",
        {"key": "j", "type": "json", "variants": [{"key": "a", "value": {"x": [SURROGATE]}}]},
        "variants[0].value.x[0]",
    ),
    (
        "post",
        f"{PROJECT}/flags",
        {"key": "j", "type": "json", "variants": [{"key": "a", "value": {NUL: 1}}]},
        "variants[0].value",
    ),
    ("patch", f"{PROJECT}/flags/checkout", {"name": NUL}, "name"),
    ("patch", f"{PROJECT}/flags/checkout", {"owner": SURROGATE}, "owner"),
    ("patch", CONFIG, {"rules": [rule(EQUALS_NUL)]}, "rules[0].conditions[0].values[0]"),
    (
        "patch",
        CONFIG,
        {"rules": [rule({"attribute": SURROGATE, "operator": "exists"})]},
        "rules[0].conditions[0].attribute",
    ),
    ("patch", CONFIG, {"rules": [rule(EQUALS_NUL, name="x")]}, "rules[0].conditions[0].values[0]"),
    (
        "patch",
        CONFIG,
        {"targets": [{"variant": "on", "values": ["u1", NUL]}]},
        "targets[0].values[1]",
    ),
    (
        "patch",
        CONFIG,
        {"defaultServe": {"rollout": {"bucketBy": NUL, "variants": []}}},
        "defaultServe.rollout.bucketBy",
    ),
    ("patch", CONFIG, {"offVariant": SURROGATE}, "offVariant"),
    # Two halves of a pair in two strings are two lone surrogates, not an emoji.
    (
        "patch",
        CONFIG,
        {"targets": [{"variant": "on", "values": ["\ud83d", "\ude00"]}]},
        "targets[0].values[0]",
    ),
    ("post", f"{CONFIG}/change-requests", {"title": NUL, "enabled": True}, "title"),
    (
        "post",
        f"{CONFIG}/change-requests",
        {"rules": [rule(EQUALS_NUL)]},
        "rules[0].conditions[0].values[0]",
    ),
    (
        "post",
        f"{CONFIG}/schedule",
        {"at": "2030-01-01T00:00:00Z", "rules": [rule(EQUALS_NUL)]},
        "rules[0].conditions[0].values[0]",
    ),
    (
        "post",
        f"{CONFIG}/rollouts",
        {
            "variant": "on",
            "bucketBy": SURROGATE,
            "steps": [{"at": "2030-01-01T00:00:00Z", "percentage": 5}],
        },
        "bucketBy",
    ),
    (
        "post",
        f"{PROJECT}/segments",
        {"key": "beta", "conditions": [EQUALS_NUL]},
        "conditions[0].values[0]",
    ),
    ("post", f"{PROJECT}/segments", {"key": "beta", "included": [SURROGATE]}, "included[0]"),
    ("post", f"{PROJECT}/segments", {"key": "beta", "description": NUL}, "description"),
    ("post", "/api/v1/projects", {"key": "web", "name": NUL}, "name"),
    ("post", f"{PROJECT}/environments", {"key": "qa", "name": SURROGATE}, "name"),
    ("patch", f"{PROJECT}/environments/staging", {"name": NUL}, "name"),
    (
        "post",
        f"{PROJECT}/api-keys",
        {"name": NUL, "kind": "server", "environment": "staging"},
        "name",
    ),
    ("post", f"{PROJECT}/members", {"user": NUL, "role": "viewer"}, "user"),
    ("post", f"{PROJECT}/flags", {NUL: 1}, "body"),
]


@pytest.mark.parametrize("method, url, body, field", BODIES)
def test_nul_and_surrogates_in_bodies_are_a_400_naming_the_field(api, method, url, body, field):
    before = AuditEntry.objects.count()
    response = send(api, method, url, json.dumps(body))  # ensure_ascii: "\u0000", "\ud800"
    words = "NUL character" if "\\u0000" in json.dumps(body) else "lone surrogate"
    assert_refused(response, field, words)
    assert AuditEntry.objects.count() == before  # nothing was written


def test_the_token_endpoint_refuses_nul_in_json_and_in_a_form():
    anonymous = APIClient()
    body = json.dumps({"username": NUL, "password": "x"})
    response = anonymous.post("/api/v1/auth/token/", body, content_type="application/json")
    assert response.status_code == 400
    assert "username" in response.json()["fields"]
    form = anonymous.post("/api/v1/auth/token/", {"username": "ada", "password": NUL})
    assert form.status_code == 400
    assert "password" in form.json()["fields"]


def test_a_body_holding_infinity_is_refused(api):
    body = '{"key": "n", "type": "number", "variants": [{"key": "a", "value": 1e400}]}'
    assert_refused(send(api, "post", f"{PROJECT}/flags", body), "variants[0].value", "too large")


def test_a_clean_body_still_goes_through(api):
    body = {"rules": [rule({"attribute": "plan", "operator": "equals", "values": ["pro\t✓😀"]})]}
    assert send(api, "patch", CONFIG, json.dumps(body)).status_code == 200


# --- Query strings and paths --------------------------------------------------------------

QUERIES = [
    ("/api/v1/audit?user=a%00b", "user"),
    ("/api/v1/audit?flag=a%00b", "flag"),
    ("/api/v1/audit?project=a%00b", "project"),
    (f"{PROJECT}/flags?search=a%00b", "search"),
    (f"{PROJECT}/flags?tag=a%00b", "tag"),
    (f"{PROJECT}/flags?environment=a%00b&enabled=true", "environment"),
    (f"{PROJECT}/change-requests?status=a%00b", "status"),
    (f"{CONFIG}/change-requests?status=open%00", "status"),
    (f"{PROJECT}/flags?a%00b=1", "query"),
]


@pytest.mark.parametrize("url, field", QUERIES)
def test_nul_in_a_query_string_is_a_400_naming_the_parameter(api, url, field):
    assert_refused(api.get(url), field, "NUL character")


PATHS = [
    ("get", "/api/v1/projects/a%00b", "key"),
    ("get", "/api/v1/projects/a%00b/flags", "project_key"),
    ("get", f"{PROJECT}/flags/a%00b", "flag_key"),
    ("patch", f"{PROJECT}/flags/a%00b/environments/development", "flag_key"),
    ("get", f"{PROJECT}/flags/checkout/environments/a%00b", "environment_key"),
    ("post", f"{PROJECT}/flags/checkout/environments/a%00b/toggle", "environment_key"),
    ("get", f"{PROJECT}/segments/a%00b", "key"),
    ("delete", f"{PROJECT}/segments/a%00b", "key"),
    ("delete", f"{PROJECT}/members/a%00b", "username"),
    ("post", f"{PROJECT}/api-keys/1%00/revoke", "pk"),
    ("get", f"{PROJECT}/change-requests/1%00", "pk"),
    ("post", f"{CONFIG}/change-requests/1%00/approve", "pk"),
    ("post", f"{CONFIG}/schedule/1%00/cancel", "pk"),
]


@pytest.mark.parametrize("method, url, field", PATHS)
def test_nul_in_a_path_is_a_400_naming_the_part(api, method, url, field):
    assert_refused(getattr(api, method)(url), field, "NUL character")


def test_an_unknown_change_request_status_is_refused(api):
    assert_refused(api.get(f"{PROJECT}/change-requests?status=maybe"), "status", "one of")


def test_ids_out_of_range_are_not_found(api):
    big = "9" * 40
    for method, url in [
        ("post", f"{PROJECT}/api-keys/{big}/revoke"),
        ("get", f"{PROJECT}/change-requests/{big}"),
        ("post", f"{CONFIG}/versions/{big}/restore"),
        ("post", f"{CONFIG}/schedule/{big}/cancel"),
    ]:
        response = getattr(api, method)(url)
        assert response.status_code == 404, (url, response.content[:200])
        assert response.json()["error"] == "not_found"


def test_an_unauthenticated_request_is_401_before_its_text_is_looked_at():
    assert APIClient().get(f"{PROJECT}/flags?search=a%00b").status_code == 401


# --- Pagination ---------------------------------------------------------------------------

PAGES = [
    ("limit", "1" + "0" * 30),
    ("limit", "0"),
    ("limit", "-1"),
    ("limit", "abc"),
    ("limit", "1e3"),
    ("limit", "1001"),
    ("limit", "²"),
    ("offset", "1" + "0" * 30),
    ("offset", "-5"),
    ("offset", "9" * 5000),
]


@pytest.mark.parametrize("name, value", PAGES)
@pytest.mark.parametrize(
    "url", [f"{PROJECT}/flags", "/api/v1/audit", f"{PROJECT}/change-requests", f"{CONFIG}/versions"]
)
def test_pagination_out_of_range_is_a_400_naming_the_parameter(api, url, name, value):
    assert_refused(api.get(url, {name: value}), name, "whole number")


def test_pagination_within_range_pages(project, api):
    for number in range(3):
        factories.flag(project, f"flag-{number}")
    page = api.get(f"{PROJECT}/flags", {"limit": "1000", "offset": "1"}).json()
    assert page["count"] == 4 and len(page["results"]) == 3
    assert api.get(f"{PROJECT}/flags", {"limit": "2"}).json()["next"].endswith("limit=2&offset=2")


# --- The change stream (evaluation/streams.py) --------------------------------------------


def test_a_5000_digit_last_event_id_opens_the_stream(project):
    from flags import services

    environment = factories.environment(project, "development")
    _, secret = services.api_key_create(
        environment=environment, kind="client", name="web", **factories.SYSTEM
    )
    client = APIClient()
    client.raise_request_exception = False
    for last in ("9" * 5000, "²", "-1"):
        response = client.get("/api/v1/stream", HTTP_X_API_KEY=secret, HTTP_LAST_EVENT_ID=last)
        assert response.status_code == 200, (last[:10], response.status_code)
        assert response["Content-Type"] == "text/event-stream"
        response.close()  # never read: the stream does not end by itself


# --- Nothing was stored -------------------------------------------------------------------


def test_refused_writes_leave_no_rows(api):
    send(api, "post", f"{PROJECT}/segments", json.dumps({"key": "beta", "included": [NUL]}))
    send(api, "post", f"{PROJECT}/flags", json.dumps(flag_with(name=NUL)))
    assert not Segment.objects.exists()
    assert not Flag.objects.filter(key="banner").exists()
