"""What client keys see: only flags available to client-side keys, only what evaluation needs,
their own ETags, secure mode's targetingKeyHash, and no server keys in the stream's URL."""

import hashlib
import hmac
import json
import logging

import pytest
from rest_framework.test import APIClient

from evaluation import secure_mode
from flags import services
from flags.models import AuditEntry, Flag
from tests import factories
from tests.evaluation.document_loader import (  # noqa: F401 - fixture
    api_key,
    fresh_credentials,
    load_document,
)

pytestmark = pytest.mark.django_db

SYSTEM = factories.SYSTEM
OFREP = "/ofrep/v1/evaluate/flags"
NATIVE = "/api/v1/evaluate"


def _boolean(client_side: bool, **extra) -> dict:
    return {
        "type": "boolean",
        "enabled": True,
        "clientSide": client_side,
        "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}],
        "offVariant": "off",
        "defaultServe": {"variant": "on"},
        **extra,
    }


DOCUMENT = {
    "flags": {
        "public-banner": _boolean(
            True,
            rules=[
                {
                    "conditions": [{"attribute": "country", "operator": "in", "values": ["US"]}],
                    "serve": {"variant": "off"},
                }
            ],
            metadata={
                "name": "Public banner name",
                "description": "Banner description text",
                "tags": ["marketing-tag"],
            },
        ),
        "internal-limit": _boolean(
            False,
            metadata={
                "name": "Internal limit name",
                "description": "Secret roadmap item",
                "tags": ["internal-tag"],
            },
        ),
        # Client-side, but its prerequisite is not: it still evaluates through it.
        "public-gated": _boolean(
            True, prerequisites=[{"flag": "internal-limit", "variants": ["on"]}]
        ),
        "retired": _boolean(True, archived=True),
    }
}
CLIENT_SIDE = ["public-banner", "public-gated"]
HIDDEN = ["internal-limit", "retired"]
# What a client key's answers may never carry.
METADATA_WORDS = [
    "Public banner name",
    "Banner description text",
    "marketing-tag",
    "Internal limit name",
    "Secret roadmap item",
    "internal-tag",
    "the-owner",
    "ruleId",
]


@pytest.fixture(autouse=True)
def fresh_settings():
    secure_mode.clear_local()
    yield
    secure_mode.clear_local()


@pytest.fixture
def environment():
    loaded = load_document(DOCUMENT)
    assert not loaded.refused, loaded.refused
    project = loaded.environment.project
    owner = factories.member(project, "editor", username="the-owner")
    for flag in project.flags.all():
        services.flag_update(flag=flag, data={"owner": owner}, **SYSTEM)
    loaded.environment.refresh_from_db()
    return loaded.environment


@pytest.fixture
def client_key(environment):
    return api_key(environment, "client")


@pytest.fixture
def server_key(environment):
    return api_key(environment, "server")


def post(client, path, key, context=None, **headers):
    body = json.dumps({"context": {"targetingKey": "u1"} if context is None else context})
    return client.post(path, body, content_type="application/json", HTTP_X_API_KEY=key, **headers)


# --- Only flags available to client-side keys --------------------------------------------


@pytest.mark.parametrize("path", [OFREP, NATIVE])
@pytest.mark.parametrize("hidden", HIDDEN)
def test_a_flag_hidden_from_client_keys_answers_exactly_as_an_unknown_flag(
    client, client_key, path, hidden
):
    hidden_answer = post(client, f"{path}/{hidden}", client_key)
    unknown_answer = post(client, f"{path}/no-such-flag", client_key)

    assert hidden_answer.status_code == unknown_answer.status_code == 404
    assert hidden_answer.json()["errorCode"] == "FLAG_NOT_FOUND"
    unknown = json.dumps(unknown_answer.json()).replace("no-such-flag", hidden)
    assert json.dumps(hidden_answer.json()) == unknown
    assert hidden_answer.get("ETag") is unknown_answer.get("ETag") is None


@pytest.mark.parametrize("path", [OFREP, NATIVE])
def test_server_keys_still_evaluate_every_flag(client, server_key, path):
    answer = post(client, f"{path}/internal-limit", server_key)
    assert answer.status_code == 200
    assert answer.json()["value"] is True


def test_ofrep_bulk_omits_flags_hidden_from_client_keys(client, client_key, server_key):
    client_flags = [item["key"] for item in post(client, OFREP, client_key).json()["flags"]]
    server_flags = [item["key"] for item in post(client, OFREP, server_key).json()["flags"]]
    assert client_flags == CLIENT_SIDE
    assert server_flags == ["internal-limit", *CLIENT_SIDE]


def test_native_bulk_omits_flags_hidden_from_client_keys(client, client_key, server_key):
    assert sorted(post(client, NATIVE, client_key).json()["flags"]) == CLIENT_SIDE
    assert sorted(post(client, NATIVE, server_key).json()["flags"]) == sorted(
        ["internal-limit", *CLIENT_SIDE]
    )


def test_a_client_side_flag_evaluates_through_a_hidden_prerequisite(client, client_key):
    answer = post(client, f"{OFREP}/public-gated", client_key).json()
    assert (answer["value"], answer["reason"]) == (True, "STATIC")
    assert "internal-limit" not in json.dumps(answer)


def test_the_document_and_exposures_stay_server_only(client, client_key):
    document = client.get("/api/v1/sdk/flags", HTTP_X_API_KEY=client_key)
    assert document.status_code == 403
    assert "internal-limit" not in document.content.decode()
    exposures = client.post(
        "/api/v1/sdk/exposures", "{}", content_type="application/json", HTTP_X_API_KEY=client_key
    )
    assert exposures.status_code == 403


def test_the_stream_tells_client_keys_a_version_and_nothing_about_flags(client_key):
    api = APIClient()
    response = api.get("/api/v1/stream", {"key": client_key})
    assert response.status_code == 200
    assert response["Content-Type"] == "text/event-stream"
    response.close()  # never read past the opening: the stream does not end by itself


def test_making_a_flag_client_side_shows_it_to_client_keys(
    client, environment, client_key, django_capture_on_commit_callbacks
):
    assert post(client, f"{OFREP}/internal-limit", client_key).status_code == 404
    flag = Flag.objects.get(project=environment.project, key="internal-limit")
    with django_capture_on_commit_callbacks(execute=True):
        services.flag_update(flag=flag, data={"client_side": True}, **SYSTEM)
    assert post(client, f"{OFREP}/internal-limit", client_key).status_code == 200


# --- Only what evaluation needs ------------------------------------------------------------


def test_client_keys_see_no_names_descriptions_tags_owner_or_rules(client, client_key):
    answers = [
        post(client, OFREP, client_key),
        post(client, NATIVE, client_key),
        post(client, f"{OFREP}/public-banner", client_key, {"country": "US"}),
        post(client, f"{NATIVE}/public-banner", client_key, {"country": "US"}),
    ]
    for answer in answers:
        assert answer.status_code == 200
        text = answer.content.decode()
        for word in METADATA_WORDS:
            assert word not in text, (answer.request["PATH_INFO"], word)
    single = answers[2].json()
    assert single["reason"] == "TARGETING_MATCH"
    assert set(single["metadata"]) == {"flagType", "version"}


def test_server_keys_still_see_names_descriptions_and_tags(client, server_key):
    metadata = post(client, f"{OFREP}/public-banner", server_key, {"country": "US"}).json()[
        "metadata"
    ]
    assert metadata["name"] == "Public banner name"
    assert metadata["description"] == "Banner description text"
    assert metadata["tags"] == "marketing-tag"
    assert "ruleId" in metadata


# --- ETags per audience --------------------------------------------------------------------


@pytest.mark.parametrize("path", [OFREP, f"{OFREP}/public-banner", NATIVE])
def test_an_etag_of_one_audience_is_never_a_304_for_the_other(client, client_key, server_key, path):
    server_answer = post(client, path, server_key)
    client_answer = post(client, path, client_key)
    assert server_answer["ETag"] != client_answer["ETag"]

    crossed = post(client, path, client_key, HTTP_IF_NONE_MATCH=server_answer["ETag"])
    assert crossed.status_code == 200
    assert "internal-limit" not in crossed.content.decode()
    crossed = post(client, path, server_key, HTTP_IF_NONE_MATCH=client_answer["ETag"])
    assert crossed.status_code == 200
    own = post(client, path, client_key, HTTP_IF_NONE_MATCH=client_answer["ETag"])
    assert own.status_code == 304


# --- Secure mode ---------------------------------------------------------------------------


@pytest.fixture
def secret(environment):
    _, made = services.environment_secure_mode_secret_rotate(environment=environment, **SYSTEM)
    services.environment_update(environment=environment, data={"secure_mode": True}, **SYSTEM)
    return made


def signed(secret: str, targeting_key: str = "u1", **extra) -> dict:
    digest = hmac.new(secret.encode(), targeting_key.encode(), hashlib.sha256).hexdigest()
    return {"targetingKey": targeting_key, "targetingKeyHash": digest, **extra}


ALL_DOORS = [OFREP, f"{OFREP}/public-banner", NATIVE, f"{NATIVE}/public-banner"]


def test_secure_mode_is_off_by_default(client, environment, client_key):
    assert environment.secure_mode is False
    assert post(client, f"{OFREP}/public-banner", client_key).status_code == 200


@pytest.mark.parametrize("path", ALL_DOORS)
def test_secure_mode_evaluates_a_context_with_the_right_hash(client, secret, client_key, path):
    answer = post(client, path, client_key, signed(secret))
    assert answer.status_code == 200, answer.content
    assert "targetingKeyHash" not in answer.content.decode()


@pytest.mark.parametrize("path", ALL_DOORS)
def test_secure_mode_refuses_a_missing_hash_with_403_invalid_context(
    client, secret, client_key, path
):
    answer = post(client, path, client_key, {"targetingKey": "u1"})
    assert answer.status_code == 403
    assert answer["Content-Type"] == "application/json"
    body = answer.json()
    assert body["errorCode"] == "INVALID_CONTEXT"
    assert "targetingKeyHash" in json.dumps(body)


@pytest.mark.parametrize(
    "context",
    [
        {"country": "US"},  # no targetingKey at all
        {"targetingKeyHash": "0" * 64},
    ],
    ids=["nothing", "hash-without-key"],
)
def test_secure_mode_refuses_a_context_without_a_targeting_key(client, secret, client_key, context):
    answer = post(client, OFREP, client_key, context)
    assert answer.status_code == 403
    assert answer.json()["errorCode"] == "INVALID_CONTEXT"


def test_secure_mode_refuses_another_users_hash(client, secret, client_key):
    borrowed = signed(secret, "alice")["targetingKeyHash"]
    context = {"targetingKey": "bob", "targetingKeyHash": borrowed}
    for path in ALL_DOORS:
        answer = post(client, path, client_key, context)
        assert answer.status_code == 403, path
        assert "does not match" in json.dumps(answer.json())


def test_a_hash_made_with_another_secret_is_refused(client, secret, client_key):
    assert post(client, OFREP, client_key, signed(secret + "x")).status_code == 403


@pytest.mark.parametrize(
    "hostile, status",
    [
        ("\ud800" * 64, 400),  # a lone surrogate: not valid Unicode
        ("\x00" * 64, 403),
        ("a" * 10_000, 403),
        (12345, 400),
        (["a" * 64], 400),
        ({"hash": "a"}, 400),
        (True, 400),
    ],
    ids=["surrogate", "nul", "10kB", "number", "list", "object", "boolean"],
)
def test_secure_mode_refuses_hostile_hashes_cleanly(client, secret, client_key, hostile, status):
    context = {"targetingKey": "u1", "targetingKeyHash": hostile}
    for path in (OFREP, f"{OFREP}/public-banner", NATIVE):
        answer = post(client, path, client_key, context)
        assert answer.status_code == status, (path, answer.content[:200])
        assert answer["Content-Type"] == "application/json"
        body = answer.json()
        assert body["errorCode"] == "INVALID_CONTEXT"
        assert "context" in json.dumps(body)


def test_secure_mode_refuses_a_targeting_key_that_is_not_a_string(client, secret, client_key):
    answer = post(client, f"{OFREP}/public-banner", client_key, {"targetingKey": 7})
    assert answer.status_code == 400
    assert answer.json()["errorDetails"] == "context.targetingKey must be a string"


def test_secure_mode_answers_before_a_304(client, secret, client_key):
    first = post(client, OFREP, client_key, signed(secret))
    unsigned = post(client, OFREP, client_key, {"targetingKey": "u1"}, HTTP_IF_NONE_MATCH="*")
    assert unsigned.status_code == 403
    again = post(client, OFREP, client_key, signed(secret), HTTP_IF_NONE_MATCH=first["ETag"])
    assert again.status_code == 304


def test_secure_mode_does_not_concern_server_keys(client, secret, server_key):
    assert post(client, OFREP, server_key, {"targetingKey": "u1"}).status_code == 200


def test_the_hash_is_not_an_attribute_rules_can_see(client, environment, server_key):
    flag = Flag.objects.get(project=environment.project, key="public-banner")
    config = factories.config(flag, environment.key)
    rule = {
        "conditions": [{"attribute": "targetingKeyHash", "operator": "exists"}],
        "serve": {"variant": "off"},
    }
    services.flag_config_update(config=config, data={"rules": [rule]}, **SYSTEM)
    context = {"targetingKey": "u1", "targetingKeyHash": "0" * 64}
    assert post(client, f"{OFREP}/public-banner", server_key, context).json()["value"] is True


def test_turning_secure_mode_off_lets_unsigned_contexts_in_again(
    client, environment, secret, client_key, django_capture_on_commit_callbacks
):
    assert post(client, OFREP, client_key).status_code == 403
    with django_capture_on_commit_callbacks(execute=True):
        services.environment_update(environment=environment, data={"secure_mode": False}, **SYSTEM)
    assert post(client, OFREP, client_key).status_code == 200


def test_a_rotated_secret_replaces_the_old_one_at_once(
    client, environment, secret, client_key, django_capture_on_commit_callbacks
):
    assert post(client, OFREP, client_key, signed(secret)).status_code == 200
    with django_capture_on_commit_callbacks(execute=True):
        _, rotated = services.environment_secure_mode_secret_rotate(
            environment=environment, **SYSTEM
        )
    assert rotated != secret and rotated.startswith("fsm_")
    assert post(client, OFREP, client_key, signed(secret)).status_code == 403
    assert post(client, OFREP, client_key, signed(rotated)).status_code == 200


def test_secure_mode_needs_a_secret_first(environment):
    admin = APIClient()
    admin.force_authenticate(factories.member(environment.project, "admin"))
    url = f"/api/v1/projects/{environment.project.key}/environments/{environment.key}"
    refused = admin.patch(url, {"secure_mode": True}, format="json")
    assert refused.status_code == 400
    assert "secure_mode" in refused.json()["detail"]

    made = admin.post(f"{url}/secure-mode-secret", {}, format="json")
    assert made.status_code == 201
    shown = made.json()
    assert shown["secret"].startswith("fsm_") and shown["prefix"] == shown["secret"][:10]
    turned_on = admin.patch(url, {"secure_mode": True}, format="json")
    assert turned_on.status_code == 200
    body = turned_on.json()
    assert body["secure_mode"] is True
    assert body["secure_mode_secret"] == shown["prefix"], "only the prefix, ever again"
    listed = admin.get(f"/api/v1/projects/{environment.project.key}/environments").content
    assert shown["secret"] not in listed.decode()


def test_the_secret_is_never_in_the_audit_log_or_the_log_lines(environment, caplog):
    caplog.set_level(logging.DEBUG)
    admin = APIClient()
    admin.force_authenticate(factories.member(environment.project, "admin"))
    url = f"/api/v1/projects/{environment.project.key}/environments/{environment.key}"
    made = admin.post(f"{url}/secure-mode-secret", {}, format="json").json()["secret"]
    admin.patch(url, {"secure_mode": True}, format="json")
    audit = json.dumps(list(AuditEntry.objects.values("before", "after")))
    assert made not in audit and made[:10] in audit
    assert made not in caplog.text


def test_the_sdk_helper_computes_what_the_server_verifies(secret):
    # The same function as flagclient.secure_mode_hash (tests/sdk/test_secure_mode.py).
    assert secure_mode.compute_hash(secret, "u1") == signed(secret)["targetingKeyHash"]


# --- The stream: no server keys in the URL -------------------------------------------------


def test_the_stream_refuses_a_server_key_in_its_url(environment, server_key):
    api = APIClient()
    for key in (server_key, "ffs_not-even-a-real-key"):
        answer = api.get("/api/v1/stream", {"key": key})
        assert answer.status_code == 400
        body = answer.json()
        assert body["error"] == "invalid_request"
        assert "Authorization: Bearer" in body["detail"]
    # ... even when a header carries a key too.
    answer = api.get("/api/v1/stream", {"key": server_key}, HTTP_X_API_KEY=server_key)
    assert answer.status_code == 400


def test_the_stream_takes_a_server_key_in_a_header(environment, server_key):
    answer = APIClient().get("/api/v1/stream", HTTP_AUTHORIZATION=f"Bearer {server_key}")
    assert answer.status_code == 200
    answer.close()


def test_the_stream_refuses_a_server_key_without_its_prefix_in_its_url(
    environment, server_key, monkeypatch
):
    from evaluation import streams

    # A key of the server kind that does not look like one still may not travel in a URL.
    monkeypatch.setattr(streams, "SERVER_KEY_PREFIX", "none_")
    answer = APIClient().get("/api/v1/stream", {"key": server_key})
    assert answer.status_code == 400


@pytest.mark.parametrize("value", ["\ud800", "on\x00", 12, [True], {"on": True}, "x" * 10_000])
def test_the_secure_mode_setting_refuses_hostile_values_naming_the_field(environment, value):
    admin = APIClient()
    admin.force_authenticate(factories.member(environment.project, "admin"))
    url = f"/api/v1/projects/{environment.project.key}/environments/{environment.key}"
    answer = admin.patch(url, json.dumps({"secure_mode": value}), content_type="application/json")
    assert answer.status_code == 400
    assert "secure_mode" in json.dumps(answer.json())
    missing = admin.post(
        f"/api/v1/projects/{environment.project.key}/environments/nope/secure-mode-secret"
    )
    assert missing.status_code == 404
    assert missing["Content-Type"] == "application/json"
    environment.refresh_from_db()
    assert (environment.secure_mode, environment.secure_mode_secret) == (False, "")


@pytest.mark.parametrize(
    "query",
    ["ffc_%00", "x" * 10_000, "%ED%A0%80", "%FF", "%20"],
    ids=["nul", "10kB", "surrogate", "invalid-utf8", "blank"],
)
def test_the_stream_refuses_hostile_keys_in_its_url_cleanly(environment, query):
    answer = APIClient().get(f"/api/v1/stream?key={query}")
    assert answer.status_code == 401
    assert answer.json()["error"] == "not_authenticated"
