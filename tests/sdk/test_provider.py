"""PyPI's OpenFeature SDK with flagclient's provider, against a real server process."""

from __future__ import annotations

import queue

import pytest
from flagclient.provider import FlagProvider
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus

from tests.sdk.server import kill, restart, set_enabled

pytestmark = pytest.mark.server

DOMAIN = "flagclient-test"
USER = EvaluationContext(targeting_key="user-1", attributes={"country": "US"})


class Events:
    """Every provider event the OpenFeature client hands to its handlers, in order."""

    def __init__(self, client) -> None:
        self.queue: queue.Queue[tuple[ProviderEvent, EventDetails]] = queue.Queue()
        for event in ProviderEvent:
            client.add_handler(event, lambda details, event=event: self.queue.put((event, details)))

    def next(self, timeout: float) -> tuple[ProviderEvent, EventDetails]:
        return self.queue.get(timeout=timeout)

    def wait_for(self, wanted: ProviderEvent, timeout: float) -> EventDetails:
        while True:
            event, details = self.next(timeout)
            if event == wanted:
                return details


@pytest.fixture
def provider(cluster):
    set_enabled(cluster, True)
    provider = FlagProvider(
        url=cluster.url(0),
        server_key=cluster.seed["server_key"],
        poll_interval=0.5,
        reconnect_delay=(0.1, 0.5),
    )
    yield provider
    api.clear_providers()


def test_the_sdk_evaluates_in_process_through_the_provider(provider):
    api.set_provider_and_wait(provider, DOMAIN)
    client = api.get_client(DOMAIN)
    assert client.get_provider_status() == ProviderStatus.READY
    details = client.get_boolean_details("new-checkout", False, USER)
    assert (details.value, details.variant, details.reason) == (True, "on", Reason.DEFAULT)
    assert details.flag_metadata["version"] == provider.client.version
    missing = client.get_string_details("no-such-flag", "fallback", USER)
    assert (missing.value, missing.error_code) == ("fallback", ErrorCode.FLAG_NOT_FOUND)
    wrong = client.get_string_details("new-checkout", "text", USER)
    assert (wrong.value, wrong.error_code) == ("text", ErrorCode.TYPE_MISMATCH)


def test_ready_then_configuration_changed_on_a_change_through_the_api(cluster, provider):
    client = api.get_client(DOMAIN)
    events = Events(client)
    api.set_provider(provider, DOMAIN)
    events.wait_for(ProviderEvent.PROVIDER_READY, timeout=5)
    set_enabled(cluster, False)
    changed = events.wait_for(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, timeout=1)
    assert changed.flags_changed == ["new-checkout"]
    details = client.get_boolean_details("new-checkout", True, USER)
    assert (details.value, details.reason) == (False, Reason.DISABLED)


def test_stale_when_the_server_goes_away_and_ready_when_it_returns(cluster, provider):
    client = api.get_client(DOMAIN)
    events = Events(client)
    api.set_provider_and_wait(provider, DOMAIN)
    kill(cluster)
    try:
        events.wait_for(ProviderEvent.PROVIDER_STALE, timeout=5)
        assert client.get_provider_status() == ProviderStatus.STALE
        assert client.get_boolean_value("new-checkout", False, USER) is True  # last snapshot
    finally:
        restart(cluster)
    events.wait_for(ProviderEvent.PROVIDER_READY, timeout=5)
    assert client.get_provider_status() == ProviderStatus.READY


def test_a_provider_started_without_a_server_serves_defaults_then_becomes_ready(cluster):
    kill(cluster)
    provider = FlagProvider(
        url=cluster.url(0),
        server_key=cluster.seed["server_key"],
        ready_timeout=0.5,
        poll_interval=0.3,
        reconnect_delay=(0.1, 0.3),
    )
    client = api.get_client(DOMAIN)
    events = Events(client)
    try:
        api.set_provider(provider, DOMAIN)
        events.wait_for(ProviderEvent.PROVIDER_ERROR, timeout=5)
        details = client.get_boolean_details("new-checkout", True, USER)
        assert (details.value, details.error_code) == (True, ErrorCode.PROVIDER_NOT_READY)
    finally:
        restart(cluster)
    try:
        events.wait_for(ProviderEvent.PROVIDER_READY, timeout=5)
        assert client.get_boolean_details("new-checkout", True, USER).error_code is None
    finally:
        api.clear_providers()
