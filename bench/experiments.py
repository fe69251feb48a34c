"""Experiment analysis benchmark (`make bench-experiments`): what an experiment's results cost
as its units grow, in PostgreSQL.

For each size (EXPERIMENT_UNITS, default 10,000, 100,000 and 1,000,000 units) it writes, with
`INSERT ... SELECT generate_series` in the shapes the events flush stores: each unit's first
exposure to one of two variants of a 50/50 rollout over the experiment's first day (1% of
units also to the other variant), a `pageview` event row on each of 3 days for every unit,
and a `purchase` row with a value for 30% of the units. Then it times, median of 3 runs:

- `metric_totals` of a conversion metric and of a numeric (sum) metric: the one query each;
- `experiment_analysis` with both metrics: a first view (the cache emptied before each run:
  the watermark, two metric queries, the versions), a repeated view (the totals cached for
  the same watermark), a view after new data (100 first exposures and 100 events
  ingested through `evaluation.events` before each run, which bumps the watermark of
  their day), and a view after 100 events of a day past every unit's window (which leaves
  the totals in use);
- the admin's experiment page, repeated (Django's test client, in process, no server).

$DB_URL names the PostgreSQL server: the script creates a database of its own there,
flags_bench_experiments (dropping one of that name first; never the database $DB_URL
names), and drops it when it ends. Prints a Markdown table.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

SIZES = [
    int(size) for size in os.environ.get("EXPERIMENT_UNITS", "10000,100000,1000000").split(",")
]
RUNS = 3
START = datetime(2026, 11, 2, tzinfo=UTC)

from statistics import median  # noqa: E402  (bench/statistics.py is off the path now)

from bench.databases import database, own_database  # noqa: E402

DB_URL = own_database(
    "bench/experiments.py", "postgres://postgres@127.0.0.1:5432/flags_bench_experiments"
)

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.test import Client  # noqa: E402

from evaluation import events as ingestion  # noqa: E402
from flags import services  # noqa: E402
from flags.experiments import experiment_analysis, metric_totals  # noqa: E402
from flags.ingested import ingested_bump  # noqa: E402
from flags.models import Experiment, FlagConfig, IngestedData  # noqa: E402

SYSTEM = {"actor": None, "source": "system"}
EVENTS = ("pageview", "purchase")
NEW_UNITS = 100  # first exposures (and as many purchases) ingested before each "after" run


def _experiment(size: int) -> Experiment:
    project = services.project_create(key=f"bench-{size}", name="", **SYSTEM)
    flag = services.flag_create(project=project, key="checkout", **SYSTEM)
    production = project.environments.get(key="production")
    variants = [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}]
    services.flag_config_update(
        config=FlagConfig.objects.get(flag=flag, environment=production),
        data={"enabled": True, "defaultServe": {"rollout": {"variants": variants}}},
        **SYSTEM,
    )
    metrics = [
        services.metric_create(
            project=project, key="purchases", data={"event": "purchase"}, **SYSTEM
        ),
        services.metric_create(
            project=project,
            key="revenue",
            data={"event": "purchase", "kind": "numeric", "aggregation": "sum"},
            **SYSTEM,
        ),
    ]
    experiment = services.experiment_create(
        project=project,
        key="checkout-v2",
        data={
            "flag": flag,
            "environment": production,
            "control_variant": "off",
            "metrics": metrics,
        },
        **SYSTEM,
    )
    services.experiment_start(experiment=experiment, **SYSTEM)
    Experiment.objects.filter(pk=experiment.pk).update(starts_at=START)
    experiment.refresh_from_db()
    return experiment


def _rows(experiment: Experiment, size: int) -> int:
    """Write the exposures and event rows; the number of event rows."""
    environment = experiment.environment_id
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO flags_unitexposure (environment_id, flag_key, variant, unit, first_seen)
            SELECT %s, 'checkout', CASE WHEN i %% 2 = 0 THEN 'on' ELSE 'off' END, 'user-' || i,
                   %s + (i %% 86400) * interval '1 second'
            FROM generate_series(1, %s) i
            UNION ALL
            SELECT %s, 'checkout', CASE WHEN i %% 2 = 0 THEN 'off' ELSE 'on' END, 'user-' || i,
                   %s + interval '1 day'
            FROM generate_series(100, %s, 100) i
            """,
            [environment, START, size, environment, START, size],
        )
        cursor.execute(
            """
            INSERT INTO flags_uniteventday (environment_id, event, unit, day, count, valued,
                value_sum, value_squares, first_at, last_at)
            SELECT %s, 'pageview', 'user-' || i, CAST(%s AS date) + d, 2, 0, 0, 0,
                   %s + d * interval '1 day' + interval '23 hours',
                   %s + d * interval '1 day' + interval '23 hours'
            FROM generate_series(1, %s) i, generate_series(0, 2) d
            UNION ALL
            SELECT %s, 'purchase', 'user-' || i, CAST(%s AS date) + 1, 1, 1,
                   10 + i %% 50, (10 + i %% 50) ^ 2,
                   %s + interval '1 day 12 hours', %s + interval '1 day 12 hours'
            FROM generate_series(1, %s) i WHERE i %% 10 < 3
            """,
            [environment, START, START, START, size, environment, START, START, START, size],
        )
        # What ingestion records with the rows it writes (flags.ingested).
        days = [START + timedelta(days=day) for day in range(3)]
        ingested_bump(
            [
                (environment, IngestedData.Kind.EXPOSURES, "checkout", at.date(), at)
                for at in days[:2]
            ]
            + [
                (environment, IngestedData.Kind.EVENTS, name, at.date(), at)
                for name in EVENTS
                for at in days
            ]
        )
        cursor.execute("ANALYZE flags_unitexposure")
        cursor.execute("ANALYZE flags_uniteventday")
        cursor.execute(
            "SELECT COUNT(*) FROM flags_uniteventday WHERE environment_id = %s", [environment]
        )
        return int(cursor.fetchone()[0])


def _median_ms(call, before=None) -> float:
    times = []
    for _ in range(RUNS):
        if before is not None:
            before()
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return median(times)


def _format(ms: float) -> str:
    return f"{ms:,.1f} ms" if ms < 1000 else f"{ms / 1000:,.2f} s"


def measure(client: Client, size: int) -> str:
    """One row of the table: the size, its event rows and the median times."""
    experiment = _experiment(size)
    events = _rows(experiment, size)
    stop = START + timedelta(days=10)
    conversion, numeric = experiment.metrics.order_by("key")
    totals, mixed = metric_totals(experiment, conversion, start=START, stop=stop)
    assert totals["on"].units + totals["off"].units + mixed == size, (totals, mixed)
    page = f"/admin/flags/experiment/{experiment.pk}/change/"
    batches, later = iter(range(RUNS)), iter(range(RUNS))

    def analysis() -> None:
        experiment_analysis(experiment, now=stop)

    def new_data() -> None:
        """Units new to the flag, exposed within the experiment, and purchases of old ones."""
        at = (START + timedelta(days=1)).timestamp()
        batch = next(batches)
        for index in range(NEW_UNITS):
            unit = f"new-{batch}-{index}"
            ingestion.expose_at(experiment.environment_id, "checkout", "on", unit, at)
            ingestion.track(experiment.environment_id, "purchase", f"user-{index}", 10.0, at)
        ingestion.drain()  # into the database, through Redis when it is configured

    def later_data() -> None:
        """Purchases of a day after every unit's window has closed."""
        at = (START + timedelta(days=9)).timestamp()
        batch = next(later)
        for index in range(NEW_UNITS):
            ingestion.track(experiment.environment_id, "purchase", f"user-{batch}-{index}", 1.0, at)
        ingestion.drain()

    figures = [
        _median_ms(lambda: metric_totals(experiment, conversion, start=START, stop=stop)),
        _median_ms(lambda: metric_totals(experiment, numeric, start=START, stop=stop)),
        _median_ms(analysis, before=cache.clear),
        _median_ms(analysis),
        _median_ms(analysis, before=new_data),
        _median_ms(analysis, before=later_data),
        _median_ms(lambda: client.get(page).content),
    ]
    return f"| {size:,} | {events:,} | " + " | ".join(_format(ms) for ms in figures) + " |"


COLUMNS = [
    "conversion query",
    "numeric query",
    "analysis, first view",
    "repeated view",
    "after new data",
    "after later days' data",
    "admin page, repeated",
]
TABLE_HEAD = (
    "| units | event rows | " + " | ".join(COLUMNS) + " |\n|---" + "|---" * (len(COLUMNS) + 1) + "|"
)


def admin_client() -> Client:
    admin = get_user_model().objects.create_superuser("bench", "bench@example.com", "bench")
    client = Client()
    client.force_login(admin)
    return client


def main() -> None:
    call_command("migrate", verbosity=0)
    client = admin_client()
    print(TABLE_HEAD)
    for size in SIZES:
        print(measure(client, size), flush=True)


if __name__ == "__main__":
    try:
        main()
    finally:
        connections.close_all()
        database(DB_URL, "drop")
