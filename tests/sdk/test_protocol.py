"""The SDK's side of the protocol against a misbehaving server: versions that go back,
`retry:` and `Retry-After`, back-off, refused keys, floods, garbage, silence, outages."""

from __future__ import annotations

import json
import logging
import time
from email.utils import formatdate

import pytest
from flagclient import FlagClient

from tests.sdk.caller import US, Caller, sdk_threads, wait_for
from tests.sdk.documents import document
from tests.sdk.misbehaving import (
    DOCUMENT,
    STREAM,
    MisbehavingServer,
    dribble,
    event,
    hang,
    open_stream,
    serve_document,
    serve_stream,
    silent_stream,
    status,
    stream_of,
)


def changes(client: FlagClient) -> list[int]:
    """The versions the client serves, one per "changed" event."""
    versions: list[int] = []
    client.add_listener(
        lambda name, keys: versions.append(client.version) if name == "changed" else None
    )
    return versions


def events(client: FlagClient) -> list[str]:
    names: list[str] = []
    client.add_listener(lambda name, keys: names.append(name))
    return names


def gaps(moments: list[float]) -> list[float]:
    return [later - earlier for earlier, later in zip(moments, moments[1:], strict=False)]


# --- versions ----------------------------------------------------------------------------


def test_a_version_that_goes_back_and_stays_back_is_served(server, make_client, tmp_path):
    """The server restored from a backup: 1,000 before, 5 now. The server is the truth."""
    bootstrap = tmp_path / "flags.json"
    server.doc = document(1000)
    client = make_client(bootstrap_path=bootstrap)
    wait_for(lambda: client.version == 1000 and not client.stale, 5)
    served = changes(client)
    server.doc = document(5)
    server.publish(event(5))
    took = wait_for(lambda: served == [5], 15)  # "changed" follows the swap (and the file)
    assert took > 1.0  # first doubted: a lagging instance answers lower for a moment
    assert client.version == 5 and not client.stale
    assert json.loads(bootstrap.read_text())["version"] == 5
    server.change(6)  # and changes go on from there
    wait_for(lambda: client.version == 6, 3)

    # A client starting from the old file follows the server too. (The first one is gone,
    # as in a restart: it saves each version it serves, just after it serves it.)
    client.close()
    bootstrap.write_text(json.dumps(document(1000)))
    restarted = make_client(bootstrap_path=bootstrap)
    assert restarted.version == 1000
    wait_for(lambda: restarted.version == 6 and not restarted.stale, 5)


def test_a_lower_version_answered_once_is_never_served(server, make_client):
    """An instance behind the others (load balancer): lower once, then it catches up."""
    client = make_client()
    wait_for(lambda: client.version == 7, 5)
    served = changes(client)
    answers = iter([document(6)])

    def lagging(server, request):
        server.doc, newest = next(answers, newest_doc), server.doc
        serve_document(server, request)
        server.doc = newest

    server.change(8, announce=False)
    newest_doc = server.doc
    server.document = lagging
    server.publish(event(8))
    wait_for(lambda: client.version == 8, 3)
    time.sleep(0.3)
    assert served == [8]


def test_a_version_announced_but_served_late_is_fetched_without_waiting_for_the_poll(
    server, make_client
):
    """The instance answering is still compiling the change (a busy machine) past the
    catch-up window: the client keeps asking, less and less often, instead of serving the
    old version until the stream's safety poll (300 s) or another change."""
    client = make_client()
    wait_for(lambda: client.version == 7 and server.hits[DOCUMENT] >= 2, 5)
    old = server.doc
    server.change(8, announce=False)
    newest, server.doc = server.doc, old
    started = time.monotonic()
    server.publish(event(8))
    time.sleep(3.5)  # past the catch-up window (about 1.5 s)
    assert client.version == 7
    asked = server.hits_since(DOCUMENT, started)
    server.doc = newest

    wait_for(lambda: client.version == 8, 5)
    # The five quick retries, then about one a second (`poll_interval` here, 30 s by
    # default, is the slowest): no flood while the instance lags.
    assert asked <= 12, asked


def test_a_new_version_compiles_only_the_flags_it_changed(server, make_client):
    client = make_client()
    wait_for(lambda: client.version == 7, 5)
    before = client.snapshot.evaluate("new-checkout", US)
    assert len(server.doc["flags"]) > 1

    server.change(8)  # new-checkout turned around, the other flags as they were

    wait_for(lambda: client.version == 8, 3)
    assert client.snapshot.compiled_flags == 1
    assert client.snapshot.evaluate("new-checkout", US).reason != before.reason


def test_an_event_for_the_version_served_fetches_nothing(server, make_client):
    client = make_client()
    wait_for(lambda: client.version == 7 and server.hits[DOCUMENT] >= 2, 5)  # start, connect
    before = server.hits[DOCUMENT]
    for _ in range(20):
        server.publish(event(7))
    time.sleep(0.5)
    assert server.hits[DOCUMENT] == before


# --- floods, garbage, silence ------------------------------------------------------------


def test_a_flood_of_events_is_coalesced(server, make_client):
    client = make_client()
    wait_for(lambda: client.version == 7 and server.hits[DOCUMENT] >= 2, 5)
    base, before = server.doc, server.hits[DOCUMENT]
    started = time.monotonic()
    version = 8
    while time.monotonic() - started < 2.0:  # an event every millisecond or so
        server.doc = {**base, "version": version}
        server.publish(event(version))
        version += 1
        time.sleep(0.001)
    wait_for(lambda: client.version == version - 1, 3)
    flooded = time.monotonic() - started
    assert version > 500
    # At most one fetch per 0.25 s, plus catch-up retries when a fetch finds the document
    # older than the event (more of those on a busy machine); unbounded it was one per
    # event, over 500 here.
    assert server.hits[DOCUMENT] - before <= flooded / 0.25 + 15


GARBAGE = [
    b"data: not json\n\n",
    b"data: [1, 2]\n\n",
    b'data: {"type": "somethingElse", "version": 9}\n\n',
    b'data: {"type": "refetchEvaluation", "version": "9"}\n\n',
    b'data: {"type": "refetchEvaluation", "version": -1}\n\n',
    b'data: {"type": "refetchEvaluation", "version": true}\n\n',
    b'data: {"type": "refetchEvaluation", "version": 1e400}\n\n',
    b'event: surprise\ndata: {"type": "refetchEvaluation", "version": 9}\n\n',
    b"data: \xff\xfe\xfd\n\n",
    b"data: \xed\xa0\x80\n\n",  # a lone surrogate, encoded
    b"data: " + b"[" * 10_000 + b"\n\n",
    b'data: {"type": "refetchEvaluation", "version": ' + b"9" * 5000 + b"}\n\n",
]


def test_malformed_events_are_counted_and_fetch_nothing(server, make_client, caplog):
    client = make_client()
    wait_for(lambda: client.version == 7 and server.hits[DOCUMENT] >= 2, 5)
    before = server.hits[DOCUMENT]
    with Caller(client):
        server.publish(b"".join(GARBAGE))
        wait_for(lambda: client.stats.get("malformed_events", 0) == len(GARBAGE), 3)
        time.sleep(0.3)
    assert server.hits[DOCUMENT] == before
    assert client.stats.get("stream_connections") == 1  # garbage does not cost the stream
    warned = [r for r in caplog.records if "malformed" in r.getMessage()]
    assert len(warned) == 1  # once per connection, not once per event
    server.change(8)  # a good event after the garbage still works
    wait_for(lambda: client.version == 8, 3)


@pytest.mark.parametrize(
    "answer", [silent_stream, dribble, hang], ids=["silent", "a-byte-at-a-time", "no-headers"]
)
def test_a_stream_that_goes_quiet_is_reconnected(server, make_client, answer):
    server.stream = answer
    client = make_client(stream_read_timeout=0.5, timeout=0.5)
    wait_for(lambda: server.hits[STREAM] >= 3, 6)
    assert client.version == 7 and not client.stale  # the document still comes


def test_a_stream_that_stays_open_but_says_nothing_is_backed_by_a_poll(server, make_client):
    client = make_client(stream_poll_interval=0.5)
    wait_for(lambda: client.stats.get("stream_connections") == 1 and client.version == 7, 5)
    server.change(8, announce=False)  # the server's pub/sub is broken: no event comes
    wait_for(lambda: client.version == 8, 2)
    assert client.stats.get("stream_connections") == 1  # the stream itself stayed up


# --- retry and back-off ------------------------------------------------------------------


def test_a_huge_retry_from_the_stream_is_capped_at_the_longest_delay(server, make_client):
    server.stream = stream_of(b"retry: 999999999999\n: bye\n\n")
    make_client(reconnect_delay=(0.05, 0.3))
    wait_for(lambda: server.hits[STREAM] >= 4, 4)


def test_a_stream_that_opens_and_closes_backs_off(server, make_client):
    server.stream = stream_of(b"")
    make_client(reconnect_delay=(0.1, 1.6))
    time.sleep(4.0)
    connects = server.hits[STREAM]
    # 0.05-0.1, 0.1-0.2, ... 0.8-1.6 s between tries: at most 9 in 4 s. Resetting the
    # back-off on every connect, it was a try every 0.1 s.
    assert 3 <= connects <= 9
    assert server.hits[DOCUMENT] <= 2 * connects + 2


def test_the_back_off_starts_over_only_after_a_healthy_connection(server, make_client):
    held: list[float] = []

    def flapping_then_healthy(server, request):
        if server.hits[STREAM] <= 5:
            open_stream(request)  # and close at once
            return
        open_stream(request, b": healthy\n\n")
        held.append(time.monotonic())
        server.stopping.wait(0.8)  # longer than stream_healthy_after

    server.stream = flapping_then_healthy
    make_client(reconnect_delay=(0.1, 3.0), stream_healthy_after=0.5)
    wait_for(lambda: len(held) >= 2, 10)
    flaps = server.times[STREAM][:6]
    assert max(gaps(flaps)) >= 0.4  # it had backed off (0.8-1.6 s by the fifth)
    # After a healthy connection the next try is at the first delay (at most 0.1 s), not
    # at the grown one (1.5-3 s).
    assert held[1] - (held[0] + 0.8) < 1.0


@pytest.mark.parametrize("code", [429, 503])
def test_retry_after_on_the_document_is_honoured(server, make_client, code):
    server.document = status(code, {"Retry-After": "2"})
    make_client(streaming=False, poll_interval=5.0)
    wait_for(lambda: server.hits[DOCUMENT] >= 2, 5)
    # Without it, the first retry is within 0.5 s.
    assert 1.9 <= gaps(server.times[DOCUMENT])[0] < 4.0


def test_retry_after_as_a_date_and_its_cap(server, make_client):
    server.document = status(503, {"Retry-After": formatdate(time.time() + 3, usegmt=True)})
    make_client(streaming=False, poll_interval=5.0)
    wait_for(lambda: server.hits[DOCUMENT] >= 2, 6)
    assert gaps(server.times[DOCUMENT])[0] >= 1.5
    # A Retry-After longer than the poll interval waits the poll interval.
    capped = MisbehavingServer()
    capped.document = status(503, {"Retry-After": "86400"})
    with capped:
        make_client(url=capped.url, streaming=False, poll_interval=0.5)
        wait_for(lambda: capped.hits[DOCUMENT] >= 3, 4)


def test_retry_after_on_the_stream_is_honoured(server, make_client):
    server.stream = status(503, {"Retry-After": "1"})
    make_client(reconnect_delay=(0.05, 3.0))
    wait_for(lambda: server.hits[STREAM] >= 3, 6)
    assert min(gaps(server.times[STREAM])) >= 0.95


# --- refused keys ------------------------------------------------------------------------


@pytest.mark.parametrize("code", [401, 403])
@pytest.mark.parametrize("where", ["document", "stream"])
def test_a_refused_key_stops_every_request_with_one_log_line(
    server, make_client, caplog, code, where
):
    if where == "document":
        server.document = status(code)
    client = make_client(start=False)
    seen = events(client)
    client.start()
    if where == "stream":  # refused later, on a reconnection, with a document served
        wait_for(lambda: client.ready and client.stats.get("stream_connections"), 5)
        server.stream = status(code)
        server.drop_streams()
    with Caller(client):
        wait_for(lambda: client.error is not None, 5)
        wait_for(lambda: sdk_threads() == [], 3)  # every thread stopped on its own
        requests = server.settle()  # what was sent before the refusal, counted
        time.sleep(1.0)
    assert sum(server.hits.values()) == requests
    assert str(code) in client.error and client.stale
    assert seen.count("error") == 1
    errors = [r for r in caplog.records if r.name == "flagclient" and r.levelno >= logging.ERROR]
    assert len(errors) == 1 and str(code) in errors[0].getMessage()
    assert client.wait_until_ready(10) is (where == "stream")  # nobody waits in vain
    assert client.value("new-checkout", US, default=False) is (where == "stream")


# --- outages -----------------------------------------------------------------------------


def test_server_down_at_start_the_client_is_current_within_the_poll_interval(no_crashes):
    server = MisbehavingServer()  # not started yet: nothing listens on its port
    client = FlagClient(
        server.url, "ffs_test", poll_interval=1.0, reconnect_delay=(0.1, 1.0), timeout=1.0
    )
    seen = events(client)
    try:
        wait_for(lambda: client.stale, 3)
        assert client.value("new-checkout", US, default=True) is True
        time.sleep(2.0)  # the outage
        with server:
            recovered = wait_for(lambda: client.ready and not client.stale, 4)
            assert recovered < 2.5  # the poll interval (and the back-off capped at it)
            time.sleep(0.5)
    finally:
        client.close()
    assert seen == ["ready"]  # once, on the first success after the failures


def test_ready_once_per_recovery_and_stale_once_per_outage(server, make_client, tmp_path):
    bootstrap = tmp_path / "flags.json"
    bootstrap.write_text(json.dumps(document(7)))
    server.document = server.stream = status(500)
    client = make_client(bootstrap_path=bootstrap, poll_interval=0.3, reconnect_delay=(0.05, 0.3))
    seen = events(client)
    wait_for(lambda: server.hits[DOCUMENT] >= 3, 5)
    assert client.stale and seen == []  # the file was never confirmed: nothing went stale
    server.document, server.stream = serve_document, serve_stream
    wait_for(lambda: not client.stale, 5)
    server.document = status(500)
    server.stream = stream_of(b"")
    server.drop_streams()
    wait_for(lambda: client.stale, 5)
    time.sleep(0.8)  # more failures: no more events
    server.document, server.stream = serve_document, serve_stream
    wait_for(lambda: not client.stale, 5)
    time.sleep(0.5)
    assert seen == ["ready", "stale", "ready"]


def test_a_client_shared_by_many_threads_survives_every_fault_in_turn(server, make_client):
    """Zero exceptions into the caller while the server goes through its whole repertoire."""
    from tests.sdk.misbehaving import endless_line, large_document, trickle

    client = make_client(max_document_bytes=100_000, stream_read_timeout=0.5, timeout=0.5)
    callers = [Caller(client) for _ in range(4)]
    for caller in callers:
        caller.start()
    try:
        for document_answer, stream_answer in [
            (trickle(1), endless_line),
            (large_document(1_000_000, declared=False), stream_of(b"".join(GARBAGE))),
            (status(503, {"Retry-After": "1"}), dribble),
            (hang, silent_stream),
        ]:
            server.document, server.stream = document_answer, stream_answer
            server.drop_streams()  # the good stream of the start, the first time
            time.sleep(0.7)
        server.document, server.stream = serve_document, serve_stream
        server.change(8)
        wait_for(lambda: client.version == 8 and not client.stale, 5)
    finally:
        for caller in callers:
            caller.__exit__()  # no exception, no wrong type, no blocked call in any of them
    assert client.stats.get("streams_dropped", 0) >= 1  # the faults did happen
    assert client.stats.get("malformed_events", 0) >= 1
    assert client.stats.get("documents_too_large", 0) >= 1


def test_the_proxy_named_by_the_environment_is_used(server, make_client, monkeypatch):
    """HTTP_PROXY, as httpx honours it: the test server answers absolute-form requests."""
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    client = make_client(url="http://flags.example.invalid")  # resolvable only by the proxy
    wait_for(lambda: client.version == 7 and client.stats.get("stream_connections"), 5)
    server.change(8)
    wait_for(lambda: client.version == 8, 3)
