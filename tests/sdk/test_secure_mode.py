"""flagclient.secure_mode_hash: what a customer's server computes, the flag server accepts."""

import json

import flagclient
import pytest

from evaluation import secure_mode
from flags import services
from tests import factories
from tests.evaluation.document_loader import (  # noqa: F401 - fixture
    SAMPLE_DOCUMENT,
    api_key,
    fresh_credentials,
    load_document,
)

SYSTEM = factories.SYSTEM


@pytest.fixture
def secure_environment():
    secure_mode.clear_local()
    environment = load_document(SAMPLE_DOCUMENT).environment
    _, secret = services.environment_secure_mode_secret_rotate(environment=environment, **SYSTEM)
    services.environment_update(environment=environment, data={"secure_mode": True}, **SYSTEM)
    yield environment, secret
    secure_mode.clear_local()


def evaluate(client, key, context):
    return client.post(
        "/ofrep/v1/evaluate/flags/new-checkout",
        json.dumps({"context": context}),
        content_type="application/json",
        HTTP_X_API_KEY=key,
    )


@pytest.mark.django_db
@pytest.mark.parametrize("targeting_key", ["user-7", "ünïcødé@example.com", "", "x" * 5000])
def test_the_helpers_hash_is_accepted_by_the_server(client, secure_environment, targeting_key):
    environment, secret = secure_environment
    key = api_key(environment, "client")
    context = {
        "targetingKey": targeting_key,
        "targetingKeyHash": flagclient.secure_mode_hash(secret, targeting_key),
    }
    assert evaluate(client, key, context).status_code == 200
    someone_else = {**context, "targetingKey": targeting_key + "!"}
    assert evaluate(client, key, someone_else).status_code == 403


def test_the_helper_is_hex_hmac_sha256():
    # RFC 4231, test case 2.
    assert flagclient.secure_mode_hash("Jefe", "what do ya want for nothing?") == (
        "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
    )


@pytest.mark.parametrize("arguments", [(None, "u1"), ("secret", 7), (b"secret", "u1")])
def test_the_helper_refuses_what_is_not_text(arguments):
    with pytest.raises(TypeError):
        flagclient.secure_mode_hash(*arguments)


def test_the_helper_refuses_an_empty_secret():
    with pytest.raises(ValueError, match="empty"):
        flagclient.secure_mode_hash("", "u1")
