"""PyPI's OpenFeature SDK with its OFREP provider, driving a real server (live_server)."""

import pytest
from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason

from tests.evaluation.document_loader import (  # noqa: F401 - fixture
    SAMPLE_DOCUMENT,
    api_key,
    fresh_credentials,
    load_document,
)


@pytest.fixture
def openfeature_client(live_server, transactional_db):
    environment = load_document(SAMPLE_DOCUMENT).environment
    key = api_key(environment, "server")
    provider = OFREPProvider(live_server.url, headers_factory=lambda: {"X-API-Key": key})
    api.set_provider(provider, domain="flags-test")
    yield api.get_client("flags-test")
    api.clear_providers()


def context(targeting_key: str = "user-1", **attributes) -> EvaluationContext:
    return EvaluationContext(targeting_key=targeting_key, attributes=attributes)


def test_boolean_flag(openfeature_client):
    details = openfeature_client.get_boolean_details("new-checkout", False, context(country="US"))
    assert details.value is True
    assert details.variant == "on"
    assert details.reason == Reason.TARGETING_MATCH
    assert details.error_code is None
    assert details.flag_metadata["name"] == "New checkout"
    other = openfeature_client.get_boolean_details("new-checkout", True, context(country="FR"))
    assert (other.value, other.variant, other.reason) == (False, "off", Reason.STATIC)


def test_string_flag(openfeature_client):
    assert openfeature_client.get_string_value("banner-text", "x", context()) == "Hello"
    details = openfeature_client.get_string_details("banner-text", "x", context("user-9"))
    assert (details.value, details.reason) == ("Bye", Reason.TARGETING_MATCH)


def test_number_flags(openfeature_client):
    values = {
        openfeature_client.get_integer_value("max-items", 0, context(f"user-{n}"))
        for n in range(40)
    }
    assert values == {3, 10}
    details = openfeature_client.get_integer_details("max-items", 0, context("user-1"))
    assert details.reason == Reason.SPLIT
    details = openfeature_client.get_float_details("price-factor", 1.0, context())
    assert (details.value, details.variant) == (0.75, "sale")


def test_object_flag(openfeature_client):
    details = openfeature_client.get_object_details("theme", {}, context())
    assert details.value == {"color": "black", "size": 2}
    assert details.variant == "dark"


def test_missing_flag_returns_the_default_with_flag_not_found(openfeature_client):
    details = openfeature_client.get_boolean_details("no-such-flag", True, context())
    assert details.value is True
    assert details.reason == Reason.ERROR
    assert details.error_code == ErrorCode.FLAG_NOT_FOUND


def test_disabled_flag_serves_its_off_variant(openfeature_client):
    details = openfeature_client.get_boolean_details("old-feature", True, context())
    assert details.value is False
    assert details.variant == "off"
    assert details.reason == Reason.DISABLED


def test_an_evaluation_error_returns_the_default_with_its_code(openfeature_client):
    details = openfeature_client.get_integer_details("max-items", 7, EvaluationContext())
    assert details.value == 7
    assert details.error_code == ErrorCode.TARGETING_KEY_MISSING


def test_a_wrong_type_returns_the_default_with_type_mismatch(openfeature_client):
    details = openfeature_client.get_string_details("new-checkout", "x", context())
    assert details.value == "x"
    assert details.error_code == ErrorCode.TYPE_MISMATCH


def test_a_bad_key_is_a_general_error(live_server, transactional_db):
    provider = OFREPProvider(live_server.url, headers_factory=lambda: {"X-API-Key": "ffs_bad"})
    api.set_provider(provider, domain="bad-key")
    try:
        details = api.get_client("bad-key").get_boolean_details("new-checkout", True, context())
    finally:
        api.clear_providers()
    assert details.value is True
    assert details.error_code == ErrorCode.GENERAL
