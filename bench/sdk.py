"""SDK benchmark (`make bench-sdk`): one flag evaluated in process through flagclient, against
the bare engine, and over HTTP (OFREP) against the server it came from.

Starts one server process (tests.servers.Cluster: `manage.py serve` on a fresh database, or
a fresh PostgreSQL database when $DB_URL points to one), gives the seeded flag
`new-checkout` a rule (`country in [US, CA, GB]` and `plan == "pro"`) and a 25% rollout,
then measures, for 100,000 distinct contexts, ns per evaluation of:
  - the bare engine: `snapshot.evaluate(flag, context)` on the document the client holds;
  - the client: `client.value(flag, context, default=False)` and `client.details(...)`,
    without and with exposure counting;
  - PyPI's OpenFeature SDK with flagclient's provider (`get_boolean_value`);
and the latency of `POST /ofrep/v1/evaluate/flags/new-checkout` from one keep-alive
connection (BENCH_REQUESTS requests, default 2,000). Each in-process figure is the median
of 5 runs. Prints a Markdown table.
"""

from __future__ import annotations

import gc
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# bench/http.py would hide the standard library's `http` package: keep bench/ off the path.
sys.path[:] = [str(ROOT), str(ROOT / "sdk" / "src")] + [
    p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"
]

import statistics  # noqa: E402  (after the path: bench/statistics.py would shadow it)

import httpx  # noqa: E402
from flagclient import FlagClient, compile_document  # noqa: E402

from tests.servers import Cluster  # noqa: E402

FLAG = "new-checkout"
CONTEXTS = 100_000
REPEATS = 5
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "2000"))
COUNTRIES = ("US", "CA", "GB", "FR", "DE")
PLANS = ("pro", "free", "team")

CONFIGURE = """
from flags import services
from flags.models import FlagConfig
config = FlagConfig.objects.get(flag__key="new-checkout", environment__key="production")
rule = {
    "conditions": [
        {"attribute": "country", "operator": "in", "values": ["US", "CA", "GB"]},
        {"attribute": "plan", "operator": "equals", "values": ["pro"]},
    ],
    "serve": {"variant": "on"},
}
weights = [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}]
rollout = {"rollout": {"variants": weights}}
services.flag_config_update(
    config=config, data={"enabled": True, "rules": [rule], "defaultServe": rollout},
    actor=None, source="system",
)
"""


def contexts() -> list[dict]:
    return [
        {
            "targetingKey": f"user-{n}",
            "country": COUNTRIES[n % len(COUNTRIES)],
            "plan": PLANS[n % len(PLANS)],
        }
        for n in range(CONTEXTS)
    ]


def per_call_ns(evaluate: Callable[[dict], object], batch: list[dict]) -> float:
    """Median over REPEATS of the ns per call of `evaluate` over every context of `batch`."""
    runs = []
    for _ in range(REPEATS):
        gc.collect()
        gc.disable()
        try:
            started = time.perf_counter_ns()
            for context in batch:
                evaluate(context)
            runs.append((time.perf_counter_ns() - started) / len(batch))
        finally:
            gc.enable()
    return statistics.median(runs)


def ofrep_latencies(url: str, key: str) -> list[float]:
    body = {"context": {"targetingKey": "user-1", "country": "FR", "plan": "free"}}
    headers = {"Authorization": f"Bearer {key}"}
    latencies = []
    with httpx.Client(base_url=url, headers=headers, timeout=10) as http:
        for _ in range(50):  # warm up: connection, key cache, compiled snapshot
            http.post(f"/ofrep/v1/evaluate/flags/{FLAG}", json=body).raise_for_status()
        for _ in range(REQUESTS):
            started = time.perf_counter_ns()
            http.post(f"/ofrep/v1/evaluate/flags/{FLAG}", json=body).raise_for_status()
            latencies.append(time.perf_counter_ns() - started)
    return sorted(latencies)


def openfeature_client(url: str, key: str):
    from flagclient.provider import FlagProvider
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext

    api.set_provider_and_wait(FlagProvider(url=url, server_key=key), "bench")
    client = api.get_client("bench")

    def evaluate(context: dict) -> object:
        attributes = {"country": context["country"], "plan": context["plan"]}
        return client.get_boolean_value(
            FLAG, False, EvaluationContext(context["targetingKey"], attributes)
        )

    return evaluate, api.clear_providers


def duration(ns: float) -> str:
    return f"{ns / 1000:,.1f} µs" if ns >= 10_000 else f"{ns:,.0f} ns"


def main() -> None:
    batch = contexts()
    with Cluster(instances=1) as cluster:
        cluster.manage("shell", "-c", CONFIGURE)
        url, key = cluster.url(0), cluster.seed["server_key"]
        with (
            FlagClient(url, key) as client,
            FlagClient(url, key, report_exposures=True, exposure_interval=3600) as counting,
        ):
            deadline = time.monotonic() + 10
            while client.snapshot is None or not client.snapshot.document["flags"][FLAG]["rules"]:
                assert time.monotonic() < deadline, "the configured flag did not arrive"
                time.sleep(0.05)
                client.wait_until_ready(0.1)
            counting.wait_until_ready(5)
            snapshot = compile_document(client.snapshot.document)
            assert {r.value for r in snapshot.evaluate_all(batch[0]).values()} <= {True, False}

            rows: list[tuple[str, float]] = []
            engine = per_call_ns(lambda c: snapshot.evaluate(FLAG, c), batch)
            rows.append(("bare engine: `snapshot.evaluate(flag, context)`", engine))
            rows.append(
                (
                    "client: `client.value(flag, context, False)`",
                    per_call_ns(lambda c: client.value(FLAG, c, False), batch),
                )
            )
            rows.append(
                (
                    "client: `client.details(flag, context, False)`",
                    per_call_ns(lambda c: client.details(FLAG, c, False), batch),
                )
            )
            rows.append(
                (
                    "client, exposures counted: `value(...)`",
                    per_call_ns(lambda c: counting.value(FLAG, c, False), batch),
                )
            )
            evaluate, clear = openfeature_client(url, key)
            try:
                rows.append(
                    (
                        "OpenFeature SDK + flagclient provider: `get_boolean_value`",
                        per_call_ns(evaluate, batch[:20_000]),
                    )
                )
            finally:
                clear()
        latencies = ofrep_latencies(url, key)

    print(f"flag `{FLAG}`: a two-condition rule, else a 25% rollout; {CONTEXTS:,} contexts\n")
    print("| path | per evaluation | vs bare engine |")
    print("|---|---|---|")
    for name, ns in rows:
        print(f"| {name} | {duration(ns)} | {ns / engine:.2f}× |")
    p50 = latencies[len(latencies) // 2]
    p99 = latencies[int(len(latencies) * 0.99)]
    print(
        f"| OFREP over HTTP (`POST /ofrep/v1/evaluate/flags/{FLAG}`, one keep-alive connection,"
        f" {REQUESTS:,} requests) | p50 {duration(p50)}, p99 {duration(p99)} |"
        f" {p50 / engine:,.0f}× |"
    )


if __name__ == "__main__":
    main()
