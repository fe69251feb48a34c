"""Prometheus metrics of the service: the recording API other modules call, and /metrics.

Other modules record through the small functions below and never touch prometheus-client
directly, so metric names and labels live in this one place. Under gunicorn with several
workers, prometheus-client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR, set by
flagsite/gunicorn.py) lets any worker answer /metrics with the sum of all of them.
"""

import hmac
import ipaddress
import os
import threading
import time
from bisect import bisect_left
from collections.abc import Iterable
from typing import Protocol

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# Few buckets keep each observation cheap; evaluation requests sit in the low milliseconds.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

REQUESTS = Counter(
    "flags_http_requests_total",
    "HTTP requests answered, by route name, method and status code.",
    ["route", "method", "status"],
)
REQUEST_LATENCY = Histogram(
    "flags_http_request_duration_seconds",
    "Time to answer an HTTP request (until the response starts), by route name and method.",
    ["route", "method"],
    buckets=_LATENCY_BUCKETS,
)
EVALUATIONS = Counter(
    "flags_evaluations_total",
    "Flag evaluations, by flag key and evaluation reason.",
    ["flag", "reason"],
)
SNAPSHOT_CACHE = Counter(
    "flags_snapshot_cache_total",
    "Snapshot cache look-ups, by result (hit or miss).",
    ["result"],
)
OPEN_STREAMS = Gauge(
    "flags_open_streams",
    "Event streams currently open.",
    multiprocess_mode="livesum",
)
SNAPSHOT_AGE = Gauge(
    "flags_snapshot_age_seconds",
    "Age of the snapshot version served, by environment (the oldest among live workers).",
    ["environment"],
    multiprocess_mode="livemax",
)

EXPOSURES_DROPPED = Counter(
    "flags_exposures_dropped_total",
    "Exposure counters dropped instead of stored, by why: naming no flag, variant or reason "
    "of the key's environment, or text the store cannot hold (evaluation.exposures).",
    ["why"],
)

EVENTS_DROPPED = Counter(
    "flags_events_dropped_total",
    "Events and first unit exposures dropped instead of stored, by why: a targetingKey or "
    "name the store cannot hold, or a row the database refused (evaluation.events).",
    ["why"],
)

_CACHE_HIT = SNAPSHOT_CACHE.labels("hit")
_CACHE_MISS = SNAPSHOT_CACHE.labels("miss")


class EvaluationResult(Protocol):
    @property
    def flag_key(self) -> str: ...
    @property
    def reason(self) -> str: ...


# Samples taken on the request path are counted here first and added to prometheus-client
# about every FLUSH_SECONDS, and before this process answers /metrics (`flush_pending`): a
# bulk evaluation counts fifty flags, and in multiprocess mode every increment writes to a
# memory-mapped file, so the counters and histogram of every request, one at a time, cost
# more than the evaluation itself.
FLUSH_SECONDS = 1.0
_pending: dict[tuple[str, str], int] = {}
_pending_lock = threading.Lock()


class CountedTogether:
    """Evaluations a bulk answer makes on every request (its flags whose answer is the same
    for every context): counted as one entry a request, spread over them at the flush, so
    a thousand fixed flags cost one increment instead of a thousand."""

    __slots__ = ("keys",)

    def __init__(self, results: Iterable[EvaluationResult]) -> None:
        self.keys = tuple((result.flag_key, result.reason) for result in results)


_pending_together: dict[CountedTogether, int] = {}
# (route, method, status) -> [requests, seconds in all, requests per latency bucket]; the
# last bucket is the histogram's +Inf.
_pending_requests: dict[tuple[str, str, int], list] = {}
# [hits, misses] of the snapshot cache; environment -> (age of the snapshot served, when).
_pending_cache = [0, 0]
_pending_ages: dict[str, float] = {}
_flusher: threading.Thread | None = None


def record_evaluations(results: Iterable[EvaluationResult]) -> None:
    """Count each evaluation by its flag key and reason."""
    with _pending_lock:
        pending = _pending
        for result in results:
            key = (result.flag_key, result.reason)
            pending[key] = pending.get(key, 0) + 1
    if _flusher is None:
        _start_flusher()


def record_evaluations_together(together: CountedTogether) -> None:
    """Count each of `together`'s evaluations once."""
    with _pending_lock:
        _pending_together[together] = _pending_together.get(together, 0) + 1
    if _flusher is None:
        _start_flusher()


def take_evaluations() -> dict[tuple[str, str], int]:
    """The evaluations counted since the last flush, by flag key and reason; taken."""
    with _pending_lock:
        taken = dict(_pending)
        _pending.clear()
        together = dict(_pending_together)
        _pending_together.clear()
    for group, times in together.items():
        for key in group.keys:
            taken[key] = taken.get(key, 0) + times
    return taken


def flush_pending() -> None:
    """Add what was counted since the last flush to the metrics: evaluations, requests and
    their latency, snapshot cache look-ups and ages."""
    for (flag, reason), count in take_evaluations().items():
        EVALUATIONS.labels(flag, str(reason)).inc(count)
    with _pending_lock:
        requests = dict(_pending_requests)
        _pending_requests.clear()
        hits, misses = _pending_cache
        _pending_cache[:] = [0, 0]
        ages = dict(_pending_ages)
        _pending_ages.clear()
    for (route, method, status), (count, seconds, buckets) in requests.items():
        REQUESTS.labels(route, method, str(status)).inc(count)
        _add_latencies(REQUEST_LATENCY.labels(route, method), seconds, buckets)
    if hits:
        _CACHE_HIT.inc(hits)
    if misses:
        _CACHE_MISS.inc(misses)
    for environment_key, age in ages.items():
        gauge = _ages.get(environment_key)
        if gauge is None:
            gauge = _ages[environment_key] = SNAPSHOT_AGE.labels(environment_key)
        gauge.set(age)


def _add_latencies(histogram: Histogram, seconds: float, buckets: list[int]) -> None:
    """Add requests counted per bucket to a histogram child, as that many `observe` calls
    would (prometheus-client 0.26: a value per bucket, not cumulative, and the sum)."""
    histogram._sum.inc(seconds)  # noqa: SLF001 - one write for many observations
    for index, count in enumerate(buckets):
        if count:
            histogram._buckets[index].inc(count)  # noqa: SLF001


def _start_flusher() -> None:
    global _flusher
    with _pending_lock:
        if _flusher is not None:
            return
        _flusher = threading.Thread(target=_flush_forever, name="metrics-flusher", daemon=True)
    _flusher.start()


def _flush_forever() -> None:
    while True:
        time.sleep(FLUSH_SECONDS)
        flush_pending()


def record_cache(hit: bool) -> None:
    """Count one snapshot cache look-up."""
    with _pending_lock:
        _pending_cache[0 if hit else 1] += 1
    if _flusher is None:
        _start_flusher()


def record_dropped_exposures(why: str, count: int = 1) -> None:
    """Count exposure counters dropped for `why` (unknown_flag, unstorable, ...)."""
    EXPOSURES_DROPPED.labels(why).inc(count)


def record_dropped_events(why: str, count: int = 1) -> None:
    """Count events or unit exposures dropped for `why` (bad_targeting_key, refused, ...)."""
    EVENTS_DROPPED.labels(why).inc(count)


def stream_opened() -> None:
    OPEN_STREAMS.inc()


def stream_closed() -> None:
    OPEN_STREAMS.dec()


# Labelled children, looked up once: `labels()` costs more than the increment.
_ages: dict[str, Gauge] = {}


def set_snapshot_age(environment_key: str, seconds: float) -> None:
    """Record how old the snapshot version served for an environment is (the gauge shows
    the last age recorded before each flush)."""
    with _pending_lock:
        _pending_ages[environment_key] = seconds
    if _flusher is None:
        _start_flusher()


_BUCKETS = len(_LATENCY_BUCKETS) + 1  # and +Inf


def record_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request; called by flagsite.requestlog for every request."""
    key = (route, method, status)
    with _pending_lock:
        sample = _pending_requests.get(key)
        if sample is None:
            sample = _pending_requests[key] = [0, 0.0, [0] * _BUCKETS]
        sample[0] += 1
        sample[1] += seconds
        # The first bucket whose bound is at least `seconds`, as Histogram.observe picks.
        sample[2][bisect_left(_LATENCY_BUCKETS, seconds)] += 1
    if _flusher is None:
        _start_flusher()


def _from_private_network(request: HttpRequest) -> bool:
    # A request relayed by a proxy or load balancer came from outside, whatever the peer.
    if "HTTP_X_FORWARDED_FOR" in request.META or "HTTP_FORWARDED" in request.META:
        return False
    try:
        address = ipaddress.ip_address(request.META.get("REMOTE_ADDR", ""))
    except ValueError:
        return False
    return address.is_loopback or address.is_private


def _has_token(request: HttpRequest) -> bool:
    token = settings.METRICS_TOKEN
    if not token:
        return False
    given = request.META.get("HTTP_AUTHORIZATION", "")
    return hmac.compare_digest(given.encode(), f"Bearer {token}".encode())


def metrics(request: HttpRequest) -> HttpResponse:
    """Prometheus exposition: open to loopback and private peers, else needs METRICS_TOKEN."""
    if not (_from_private_network(request) or _has_token(request)):
        return HttpResponse(
            "metrics: allowed from private networks or with Authorization: Bearer $METRICS_TOKEN\n",
            status=403,
            content_type="text/plain",
        )
    flush_pending()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
