"""Exposure counts against a misbehaving server: nothing lost to retries, nothing kept for
threads that ended, nothing that blocks or breaks the caller, a bounded `close()`."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import threading
import time
import tracemalloc

import pytest

from tests.sdk.caller import US, Caller, sdk_threads, wait_for
from tests.sdk.misbehaving import EXPOSURES, accept_exposures, hang, status, trickle

ON = ("new-checkout", "on")


def evaluate(client, times: int) -> None:
    for n in range(times):
        assert client.value("new-checkout", {**US, "targetingKey": f"user-{n}"}, False) is True


@pytest.fixture
def counting(server, make_client):
    client = make_client(report_exposures=True, exposure_interval=0.1)
    wait_for(lambda: client.ready, 5)
    return client


@pytest.mark.parametrize("refusal", [status(503), status(500), hang], ids=["503", "500", "hang"])
def test_counts_survive_a_server_that_fails_for_a_while_and_merge_into_one_counter(
    server, make_client, refusal
):
    server.exposures = refusal
    client = make_client(report_exposures=True, exposure_interval=0.1, timeout=0.3)
    wait_for(lambda: client.ready, 5)
    evaluate(client, 3000)
    wait_for(lambda: server.hits[EXPOSURES] >= 3, 5)  # three failed posts at least
    evaluate(client, 3000)
    time.sleep(0.3)
    server.exposures = accept_exposures
    wait_for(lambda: server.received[ON] >= 6000, 5)
    client.close()
    assert server.received == {ON: 6000}
    # Every retry merged into the same counter: one item reached the server, not one a try.
    assert sum(len(items) for items in server.posts) == 1


def test_retry_after_on_exposures_is_honoured(server, counting):
    server.exposures = status(429, {"Retry-After": "1"})
    evaluate(counting, 10)
    wait_for(lambda: server.hits[EXPOSURES] >= 1, 3)
    refused_at = server.times[EXPOSURES][0]
    server.exposures = accept_exposures
    evaluate(counting, 10)
    wait_for(lambda: server.received[ON] == 20, 4)
    assert server.times[EXPOSURES][1] - refused_at >= 0.9  # every 0.1 s without it


FRESH = "FLAGCLIENT_TEST_FRESH_PROCESS"


def test_short_lived_threads_leave_no_tally_behind_in_a_fresh_process():
    """The memory measurement below runs in an interpreter of its own: in the process of the
    whole suite (servers, browsers, thousands of threads before it) what is still held is
    not the SDK's alone to account for."""
    test = f"{__file__}::test_short_lived_threads_leave_no_tally_behind"
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test],
        env={**os.environ, FRESH: "1"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout


@pytest.mark.skipif(not os.environ.get(FRESH), reason="run in a fresh process by the test above")
def test_short_lived_threads_leave_no_tally_behind(server, make_client):
    client = make_client(report_exposures=True, exposure_interval=60.0)
    wait_for(lambda: client.ready, 5)

    def run_threads(count: int) -> None:
        for _ in range(count // 250):
            threads = [threading.Thread(target=evaluate, args=(client, 1)) for _ in range(250)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

    run_threads(250)  # warm up
    tracemalloc.start(30)
    try:
        before = _held_by_sdk("exposures.py")
        run_threads(4000)
        # A joined thread's local storage (whose end hands its tally over) is freed a moment
        # after join() returns, or at the next garbage collection on a busy machine: give
        # the last threads up to 2 s to be gone, then measure.
        for _ in range(20):
            gc.collect()
            grown = _held_by_sdk("exposures.py") - before
            if grown < 500_000:
                break
            time.sleep(0.1)
    finally:
        tracemalloc.stop()
    # Counted only what the SDK's exposure counting allocated and still holds, so the test
    # server's threads, a document the client fetched meanwhile and the rest of the process
    # do not blur it. Kept for every thread that ever counted, this
    # was about 1.9 MB.
    assert grown < 500_000
    client.close()
    assert server.received == {ON: 4250}


def _held_by_sdk(module: str = "*") -> int:
    """Bytes still alive that were allocated with SDK code (of `module`) on the stack."""
    snapshot = tracemalloc.take_snapshot().filter_traces(
        [tracemalloc.Filter(True, f"*/flagclient/{module}", all_frames=True)]
    )
    return sum(stat.size for stat in snapshot.statistics("filename"))


def test_flags_that_do_not_exist_are_not_counted_and_cost_no_memory(server, counting):
    evaluate(counting, 1)
    tracemalloc.start(30)
    try:
        before = _held_by_sdk()
        for n in range(50_000):
            assert counting.value(f"no-such-flag-{n}", US, default=7) == 7
        grown = _held_by_sdk() - before
    finally:
        tracemalloc.stop()
    assert grown < 1_000_000  # 50,000 counters would be several MB
    counting.close()
    assert server.received == {ON: 1}


HOSTILE_KEYS = [b"new-checkout", "\ud800", "new-checkout\x00", "x" * 100_000, None, 42, ("t",)]


def test_hostile_flag_keys_answer_the_default_and_never_break_reporting(server, counting):
    for key in [*HOSTILE_KEYS, ["unhashable"], {"also": "unhashable"}]:
        assert counting.value(key, US, default="d") == "d"
        assert counting.details(key, US, default="d").value == "d"
    assert counting.details(b"new-checkout", US, True).error_code == "FLAG_NOT_FOUND"
    evaluate(counting, 5)
    wait_for(lambda: server.received[ON] == 5, 3)
    assert any(t.name == "flagclient-exposures" for t in sdk_threads())  # still reporting
    evaluate(counting, 5)
    counting.close()  # posts the last counts, and does not raise
    assert server.received == {ON: 10}


@pytest.mark.parametrize("slow", [hang, trickle(1)], ids=["hung", "one-byte-a-second"])
def test_close_is_bounded_with_a_slow_or_hung_exposures_endpoint(server, make_client, slow):
    server.exposures = slow
    client = make_client(report_exposures=True, exposure_interval=0.1, timeout=60.0)
    wait_for(lambda: client.ready, 5)
    with Caller(client):  # evaluations never wait for a post
        wait_for(lambda: server.hits[EXPOSURES] >= 1, 3)
        time.sleep(0.3)
    started = time.monotonic()
    client.close()
    assert time.monotonic() - started < 3.0  # close's bound (2 s), not the 60 s timeout
    assert sdk_threads() == []


def test_a_refused_key_stops_reporting_with_one_log_line(server, counting, caplog):
    server.exposures = status(401)
    evaluate(counting, 5)
    wait_for(lambda: server.hits[EXPOSURES] >= 1, 3)
    time.sleep(0.5)
    evaluate(counting, 5)
    assert server.hits[EXPOSURES] == 1
    errors = [r for r in caplog.records if r.name == "flagclient" and r.levelno >= logging.ERROR]
    assert len(errors) == 1 and "401" in errors[0].getMessage()
