"""What a misbehaving server can cost the service embedding the SDK: bounded memory, bounded
waits, a `stale` that tells the truth, a `close()` that returns, and recovery once fixed."""

from __future__ import annotations

import json
import threading
import time
import tracemalloc

import pytest

from tests.sdk.caller import US, Caller, sdk_threads, wait_for
from tests.sdk.documents import document
from tests.sdk.misbehaving import (
    DOCUMENT,
    EXPOSURES,
    STREAM,
    endless_event,
    endless_line,
    event,
    hang,
    large_document,
    serve_document,
    serve_stream,
    trickle,
)

MB = 1024 * 1024


@pytest.fixture
def bootstrap(tmp_path):
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(document(7)))
    return path


class Peak:
    """The most memory Python allocated (tracemalloc) inside the block, above its start."""

    def __enter__(self) -> Peak:
        tracemalloc.start()
        self.base = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(self, *exc: object) -> None:
        self.bytes = tracemalloc.get_traced_memory()[1] - self.base
        tracemalloc.stop()


@pytest.mark.parametrize("answer", [endless_line, endless_event], ids=["line", "event"])
def test_a_stream_line_or_event_that_never_ends_is_dropped_at_the_cap(server, make_client, answer):
    server.stream = answer
    with Peak() as peak:
        client = make_client()
        with Caller(client):
            wait_for(lambda: client.stats.get("streams_dropped", 0) >= 3, 10)
    assert peak.bytes < 4 * MB  # unbounded, this grew by ~90 MB a second
    assert server.hits[STREAM] >= 3  # dropped, then reconnected (after a back-off)
    assert client.version == 7 and not client.stale  # the document still comes

    server.stream = serve_stream  # the server is fixed: events flow again
    wait_for(lambda: client.stats.get("stream_connections", 0) >= 1, 3)
    server.change(8)
    wait_for(lambda: client.version == 8, 3)


@pytest.mark.parametrize("headers_too", [False, True], ids=["body", "headers-and-body"])
def test_a_document_at_one_byte_a_second_fails_at_the_deadline_then_recovers(
    server, make_client, bootstrap, headers_too
):
    server.document = trickle(1, headers_too=headers_too)
    client = make_client(bootstrap_path=bootstrap, timeout=1.0)
    with Caller(client):
        # Unbounded, this one request lasted minutes and `stale` stayed False throughout.
        took = wait_for(lambda: client.stats.get("document_failures", 0) >= 1 and client.stale, 4)
        assert 0.8 < took < 4.0
        assert client.version == 7  # the bootstrap file answers meanwhile
        server.document = serve_document
        server.change(8)  # announced while a trickling request may still be in flight
        recovered = wait_for(lambda: client.version == 8 and not client.stale, 6)
    assert recovered < 5.0  # the deadline, then the first back-off (at most a second)


def test_a_request_that_is_never_answered_ends_at_the_deadline(server, make_client):
    server.document = hang
    client = make_client(timeout=0.5)
    took = wait_for(lambda: client.stats.get("document_failures", 0) >= 1 and client.stale, 4)
    assert 0.4 < took < 3.0
    assert not client.ready


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_document_over_the_cap_is_refused_and_the_last_good_snapshot_kept(
    server, make_client, declared
):
    client = make_client(max_document_bytes=MB)
    wait_for(lambda: client.version == 7 and not client.stale, 5)
    server.document = large_document(30 * MB, declared=declared)
    with Peak() as peak, Caller(client):
        server.publish(event(8))
        wait_for(lambda: client.stats.get("documents_too_large", 0) >= 1 and client.stale, 5)
        assert client.version == 7
    assert peak.bytes < 4 * MB  # uncapped, 50 MB cost 300-800 MB

    server.document = serve_document
    server.change(9)
    wait_for(lambda: client.version == 9 and not client.stale, 5)


def test_the_default_cap_is_ten_megabytes(server, make_client):
    server.document = large_document(10 * MB + 1, declared=True)
    client = make_client()
    wait_for(lambda: client.stats.get("documents_too_large", 0) >= 1, 5)
    assert not client.ready
    server.document = large_document(9 * MB, declared=True)
    wait_for(lambda: client.ready, 5)


def test_close_returns_within_its_bound_while_every_request_hangs(server, make_client, bootstrap):
    server.document = server.stream = server.exposures = hang
    client = make_client(
        bootstrap_path=bootstrap, report_exposures=True, exposure_interval=0.1, timeout=30.0
    )
    client.value("new-checkout", US, default=False)  # counted: there is a post to hang
    wait_for(lambda: all(server.hits[path] for path in (DOCUMENT, STREAM, EXPOSURES)), 5)
    started = time.monotonic()
    client.close(timeout=0.5)
    assert time.monotonic() - started < 1.0  # the default bound is 2 s
    assert sdk_threads() == []


def test_close_while_a_document_trickles_stops_every_thread(server, make_client):
    server.document = trickle(1)
    client = make_client(timeout=60.0)
    wait_for(lambda: server.hits[DOCUMENT] >= 1, 5)
    time.sleep(0.3)  # the body is trickling
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 1.0  # the socket is shut down, not waited on
    assert sdk_threads() == []


def test_no_thread_outlives_close_with_the_server_gone(server, make_client):
    server.stop()
    client = make_client()
    wait_for(lambda: client.stale, 5)
    before = threading.active_count()
    client.close()
    assert sdk_threads() == []
    assert threading.active_count() <= before - 2  # the update and the stream threads
