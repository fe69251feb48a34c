"""/metrics: who may read it, and what the recording API and requests put in it."""

from dataclasses import dataclass

import pytest
from prometheus_client.parser import text_string_to_metric_families

from flagsite import metrics


@dataclass
class Evaluated:
    flag_key: str
    reason: str


def sample(client, name: str, **labels: str) -> float:
    response = client.get("/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.content.decode()):
        for found in family.samples:
            if found.name == name and all(found.labels.get(k) == v for k, v in labels.items()):
                return found.value
    return 0.0


def test_metrics_is_prometheus_text_for_loopback_callers(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    assert b"flags_http_requests_total" in response.content


@pytest.mark.parametrize("address", ["10.1.2.3", "172.16.0.9", "192.168.1.20", "::1"])
def test_metrics_is_open_to_private_networks(client, address):
    assert client.get("/metrics", REMOTE_ADDR=address).status_code == 200


def test_metrics_refuses_public_callers_without_a_token(client):
    response = client.get("/metrics", REMOTE_ADDR="93.184.216.34")
    assert response.status_code == 403
    assert b"METRICS_TOKEN" in response.content


def test_metrics_refuses_requests_relayed_by_a_proxy(client):
    # The ingress or load balancer is a private peer; the caller behind it is not.
    response = client.get(
        "/metrics", REMOTE_ADDR="10.0.0.5", headers={"X-Forwarded-For": "198.51.100.7"}
    )
    assert response.status_code == 403


def test_metrics_accepts_the_bearer_token_from_anywhere(client, settings):
    settings.METRICS_TOKEN = "scrape-token-0123456789"
    allowed = client.get(
        "/metrics",
        REMOTE_ADDR="93.184.216.34",
        headers={"Authorization": "Bearer scrape-token-0123456789"},
    )
    wrong = client.get(
        "/metrics", REMOTE_ADDR="93.184.216.34", headers={"Authorization": "Bearer nope"}
    )
    assert allowed.status_code == 200
    assert wrong.status_code == 403


def test_requests_are_counted_by_route_name_not_raw_path(client):
    before = sample(
        client, "flags_http_requests_total", route="healthz", method="GET", status="200"
    )
    client.get("/healthz")
    client.get("/healthz?x=1")
    assert (
        sample(client, "flags_http_requests_total", route="healthz", method="GET", status="200")
        == before + 2
    )
    assert (
        sample(client, "flags_http_request_duration_seconds_count", route="healthz", method="GET")
        >= 2
    )


def test_request_latencies_fill_the_histogram_as_one_observation_each(client):
    """Latencies are counted per bucket in process and added at the flush: the histogram is
    what prometheus-client's `observe` of each one would give, bucket by bucket."""
    from prometheus_client import Histogram

    def histogram(route: str) -> dict[str, float]:
        found = {"count": 0.0, "sum": 0.0}
        response = client.get("/metrics")
        for family in text_string_to_metric_families(response.content.decode()):
            for one in family.samples:
                if one.labels.get("route") != route or not one.name.startswith(
                    "flags_http_request_duration_seconds"
                ):
                    continue
                if one.name.endswith("_bucket"):
                    found[one.labels["le"]] = one.value
                elif one.name.endswith(("_count", "_sum")):
                    found[one.name.rsplit("_", 1)[1]] = one.value
        return found

    latencies = [0.0004, 0.001, 0.0010001, 0.003, 0.003, 0.04, 0.9, 1.0, 7.5, 120.0]
    for seconds in latencies:
        metrics.record_request("latency-probe", "POST", 200, seconds)
    measured = histogram("latency-probe")
    expected = Histogram("probe_seconds", "", buckets=metrics._LATENCY_BUCKETS, registry=None)
    for seconds in latencies:
        expected.observe(seconds)
    wanted = {"count": float(len(latencies)), "sum": pytest.approx(sum(latencies))}
    for one in expected.collect()[0].samples:
        if one.name.endswith("_bucket"):
            wanted[one.labels["le"]] = one.value
    assert measured == wanted
    assert measured["0.001"] == 2 and measured["+Inf"] == len(latencies)
    assert sample(
        client, "flags_http_requests_total", route="latency-probe", method="POST", status="200"
    ) == len(latencies)


def test_unresolved_paths_share_one_route_label(client):
    before = sample(
        client, "flags_http_requests_total", route="unresolved", method="GET", status="404"
    )
    client.get("/no-such-page-1")
    client.get("/no-such-page-2")
    after = sample(
        client, "flags_http_requests_total", route="unresolved", method="GET", status="404"
    )
    assert after == before + 2


def test_evaluations_are_counted_by_flag_and_reason(client):
    before = sample(client, "flags_evaluations_total", flag="new-checkout", reason="SPLIT")
    metrics.record_evaluations(
        [Evaluated("new-checkout", "SPLIT"), Evaluated("new-checkout", "SPLIT")]
    )
    after = sample(client, "flags_evaluations_total", flag="new-checkout", reason="SPLIT")
    assert after == before + 2


def test_cache_hits_and_misses_are_counted_apart(client):
    hits = sample(client, "flags_snapshot_cache_total", result="hit")
    misses = sample(client, "flags_snapshot_cache_total", result="miss")
    metrics.record_cache(True)
    metrics.record_cache(True)
    metrics.record_cache(False)
    assert sample(client, "flags_snapshot_cache_total", result="hit") == hits + 2
    assert sample(client, "flags_snapshot_cache_total", result="miss") == misses + 1


def test_open_streams_go_up_and_down(client):
    before = sample(client, "flags_open_streams")
    metrics.stream_opened()
    metrics.stream_opened()
    assert sample(client, "flags_open_streams") == before + 2
    metrics.stream_closed()
    metrics.stream_closed()
    assert sample(client, "flags_open_streams") == before


def test_snapshot_age_is_reported_per_environment(client):
    metrics.set_snapshot_age("production", 12.5)
    metrics.set_snapshot_age("staging", 3)
    assert sample(client, "flags_snapshot_age_seconds", environment="production") == 12.5
    assert sample(client, "flags_snapshot_age_seconds", environment="staging") == 3


@pytest.mark.django_db
def test_evaluations_report_snapshot_cache_hits_misses_and_age(client):
    from evaluation import cache as snapshots
    from tests import factories

    project = factories.project("metered")
    factories.flag(project, "new-checkout")
    development = factories.environment(project, "development")
    snapshots.clear_local()
    hits = sample(client, "flags_snapshot_cache_total", result="hit")
    misses = sample(client, "flags_snapshot_cache_total", result="miss")

    snapshots.snapshot(development.pk)  # compiled from the store: a miss
    snapshots.snapshot(development.pk)  # held by this process: a hit
    snapshots.snapshot(development.pk)

    assert sample(client, "flags_snapshot_cache_total", result="miss") == misses + 1
    assert sample(client, "flags_snapshot_cache_total", result="hit") == hits + 2
    age = sample(client, "flags_snapshot_age_seconds", environment="metered/development")
    assert 0 < age < 5
