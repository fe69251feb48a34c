"""The client against a real server process: stream, polling, fork, exposures, outage."""

from __future__ import annotations

import os
import threading
import time

import pytest
from flagclient import FlagClient

from tests.sdk.server import exposure_counts, kill, restart, set_enabled
from tests.servers import free_port

pytestmark = pytest.mark.server

CONTEXT = {"targetingKey": "user-1"}


def wait_for(predicate, timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not within {timeout}s")
        time.sleep(0.005)
    return time.monotonic() - started


def flip(cluster, client: FlagClient) -> tuple[bool, float]:
    """Turn new-checkout the other way; (the value now expected, when the API answered)."""
    expected = not client.value("new-checkout", CONTEXT, default=False)
    return expected, set_enabled(cluster, expected)


@pytest.fixture
def client(cluster):
    with FlagClient(cluster.url(0), cluster.seed["server_key"]) as running:
        assert running.wait_until_ready(5)
        yield running


def test_the_first_document_is_served_once_downloaded(cluster, client):
    set_enabled(cluster, True)
    wait_for(lambda: client.value("new-checkout", CONTEXT, default=False) is True, 2)
    details = client.details("new-checkout", CONTEXT, default=False)
    assert (details.variant, details.reason, details.error_code) == ("on", "DEFAULT", None)
    assert not client.stale


def test_a_change_through_the_api_reaches_a_streaming_client_within_a_second(cluster, client):
    for _ in range(3):
        version = client.version
        expected, changed_at = flip(cluster, client)
        wait_for(lambda e=expected: client.value("new-checkout", CONTEXT) is e, 1.0)
        assert client.version > version
        assert time.monotonic() - changed_at < 1.0


def test_with_streaming_off_a_change_arrives_within_the_poll_interval(cluster):
    key = cluster.seed["server_key"]
    with FlagClient(cluster.url(0), key, streaming=False, poll_interval=0.5) as polling:
        assert polling.wait_until_ready(5)
        expected, _ = flip(cluster, polling)
        wait_for(lambda: polling.value("new-checkout", CONTEXT) is expected, 0.5 + 0.3)


def test_with_the_stream_unreachable_the_client_falls_back_to_polling(cluster):
    dead_stream = f"http://127.0.0.1:{free_port()}/api/v1/stream"
    with FlagClient(
        cluster.url(0), cluster.seed["server_key"], stream_url=dead_stream, poll_interval=0.5
    ) as polling:
        assert polling.wait_until_ready(5)
        for _ in range(2):
            expected, _ = flip(cluster, polling)
            wait_for(lambda e=expected: polling.value("new-checkout", CONTEXT) is e, 0.5 + 0.3)
        assert not polling.stale  # the document still comes: not stale, just not pushed


def test_evaluating_from_many_threads_while_documents_swap(cluster, client):
    problems: list[object] = []
    stop = threading.Event()

    def evaluate() -> None:
        while not stop.is_set():
            details = client.details("new-checkout", CONTEXT, default=None)
            if details.error_code is not None or details.value not in (True, False):
                problems.append(details)

    threads = [threading.Thread(target=evaluate) for _ in range(8)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(4):
            expected, _ = flip(cluster, client)
            wait_for(lambda e=expected: client.value("new-checkout", CONTEXT) is e, 2)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert problems == []


def test_a_forked_worker_restarts_its_thread_and_follows_changes(cluster, client):
    """gunicorn's pre-fork model: the client made in the parent works in the child."""
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer with the value it sees once the parent has flipped
        os.close(reader)
        status = 1
        try:
            before = client.value("new-checkout", CONTEXT)  # restarts the thread
            deadline = time.monotonic() + 5
            while client.value("new-checkout", CONTEXT) is before:
                if time.monotonic() > deadline:
                    break
                time.sleep(0.01)
            alive = any(t.name == "flagclient" for t in threading.enumerate())
            os.write(writer, f"{before} {client.value('new-checkout', CONTEXT)} {alive}".encode())
            status = 0
        finally:
            os._exit(status)
    os.close(writer)
    try:
        time.sleep(0.5)  # the child's stream connects
        expected, _ = flip(cluster, client)
        answer = os.read(reader, 100).decode()
    finally:
        os.close(reader)
        os.waitpid(pid, 0)
    assert answer == f"{not expected} {expected} True"


def test_exposure_counts_reach_the_server_in_batches(cluster):
    set_enabled(cluster, True)
    key = cluster.seed["server_key"]
    before = exposure_counts(cluster, "new-checkout").get("on", 0)
    with FlagClient(cluster.url(0), key, report_exposures=True, exposure_interval=60) as client:
        assert client.wait_until_ready(5)
        wait_for(lambda: client.value("new-checkout", CONTEXT) is True, 2)
        for n in range(500):
            client.value("new-checkout", {"targetingKey": f"user-{n}"}, default=False)
    # close() posted the counts; the server's own flush runs every second.
    wait_for(lambda: exposure_counts(cluster, "new-checkout").get("on", 0) >= before + 500, 15)


def test_with_the_server_stopped_the_client_keeps_its_last_snapshot(cluster):
    """Runs last in this module: it stops the server, then starts it again on its port."""
    events: list[str] = []
    key = cluster.seed["server_key"]
    with FlagClient(cluster.url(0), key, poll_interval=0.5, reconnect_delay=(0.1, 0.5)) as client:
        client.add_listener(lambda event, flags: events.append(event))
        assert client.wait_until_ready(5)
        expected, _ = flip(cluster, client)
        wait_for(lambda: client.value("new-checkout", CONTEXT) is expected, 1)
        kill(cluster)
        wait_for(lambda: client.stale, 5)
        assert events[-1] == "stale"
        for _ in range(100):
            details = client.details("new-checkout", CONTEXT, default=None)
            assert (details.value, details.error_code) == (expected, None)
        restart(cluster)
        wait_for(lambda: not client.stale, 5)
        assert events[-1] == "ready"
        expected, _ = flip(cluster, client)
        wait_for(lambda: client.value("new-checkout", CONTEXT) is expected, 2)
