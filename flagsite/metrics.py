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


# Evaluations are counted here first and added to the counter about every
# EVALUATION_FLUSH_SECONDS (and before this process answers /metrics): a bulk evaluation
# counts fifty flags, and fifty counter increments would cost more than the evaluation.
EVALUATION_FLUSH_SECONDS = 1.0
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


def flush_evaluations() -> None:
    """Add the evaluations counted since the last flush to `flags_evaluations_total`."""
    taken = take_evaluations()
    for (flag, reason), count in taken.items():
        EVALUATIONS.labels(flag, str(reason)).inc(count)


def _start_flusher() -> None:
    global _flusher
    with _pending_lock:
        if _flusher is not None:
            return
        _flusher = threading.Thread(target=_flush_forever, name="metrics-flusher", daemon=True)
    _flusher.start()


def _flush_forever() -> None:
    while True:
        time.sleep(EVALUATION_FLUSH_SECONDS)
        flush_evaluations()


def record_cache(hit: bool) -> None:
    """Count one snapshot cache look-up."""
    (_CACHE_HIT if hit else _CACHE_MISS).inc()


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
_requests: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}


def set_snapshot_age(environment_key: str, seconds: float) -> None:
    """Record how old the snapshot version served for an environment is."""
    gauge = _ages.get(environment_key)
    if gauge is None:
        gauge = _ages[environment_key] = SNAPSHOT_AGE.labels(environment_key)
    gauge.set(seconds)


def record_request(route: str, method: str, status: int, seconds: float) -> None:
    """Count one answered request; called by flagsite.requestlog for every request."""
    children = _requests.get((route, method, status))
    if children is None:
        if len(_requests) > 10_000:
            _requests.clear()  # bounded, whatever methods clients make up
        children = _requests[(route, method, status)] = (
            REQUESTS.labels(route, method, str(status)),
            REQUEST_LATENCY.labels(route, method),
        )
    children[0].inc()
    children[1].observe(seconds)


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
    flush_evaluations()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    return HttpResponse(generate_latest(registry), content_type=CONTENT_TYPE_LATEST)
