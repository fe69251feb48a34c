"""The SDK's tests import `flagclient` from sdk/src, as it would be installed."""

import sys
from pathlib import Path

SDK_SOURCE = Path(__file__).resolve().parents[2] / "sdk" / "src"
if str(SDK_SOURCE) not in sys.path:
    sys.path.insert(0, str(SDK_SOURCE))


import pytest  # noqa: E402

from tests.servers import Cluster  # noqa: E402


@pytest.fixture(scope="package")
def cluster():
    """One server process for every SDK test that needs one (exposures flushed each second)."""
    with Cluster(instances=1, extra_env={"EXPOSURE_FLUSH_SECONDS": "1"}) as running:
        yield running


@pytest.fixture
def server():
    """A misbehaving flag server on loopback (tests.sdk.misbehaving), serving version 7."""
    from tests.sdk.misbehaving import MisbehavingServer

    with MisbehavingServer() as running:
        yield running


@pytest.fixture
def no_crashes(caplog):
    """Fails the test if any thread died of an exception, or the SDK caught one of its own
    bugs (`log.exception`): faults are handled, not survived by accident."""
    import threading

    crashes = []
    previous = threading.excepthook
    threading.excepthook = crashes.append
    try:
        yield
    finally:
        threading.excepthook = previous
    bugs = [r for r in caplog.records if r.name == "flagclient" and r.exc_info]
    assert crashes == []
    assert bugs == [], [r.getMessage() for r in bugs]


@pytest.fixture
def make_client(server, no_crashes):
    """FlagClients of `server` with short intervals; each must close within its bound."""
    import time

    from flagclient import FlagClient

    from tests.sdk.caller import sdk_threads

    made = []

    def make(**options):
        options = {
            "poll_interval": 1.0,
            "reconnect_delay": (0.05, 0.5),
            "timeout": 1.0,
            "stream_read_timeout": 2.0,
            **options,
        }
        client = FlagClient(options.pop("url", server.url), "ffs_test", **options)
        made.append(client)
        return client

    yield make
    for client in made:
        started = time.monotonic()
        client.close()
        assert time.monotonic() - started < 3.0
    assert sdk_threads() == []
