"""Scale benchmark (`make bench-scale`): admin pages, import, export, documents and the flag
list API as a project grows from 100 to 10,000 flags.

For each size it generates a project (S: 100 flags, M: 1,000, L: 10,000) in 3 environments,
with 200 segments of 5 conditions and, per flag and environment, 3 rules of 2 conditions
(one of them `in_segment`), a rollout as the default serve of every other flag and a target
of 5 keys. The rows are written with `bulk_create` in the shapes the services store (the
generated documents are compiled and every flag evaluated, as an import checks a file), so
generating 10,000 flags takes seconds. Then it times, in-process with Django's test client
(no server, no network) and counts the queries with CaptureQueriesContext:

- the admin's segment list, flag list, one flag's change page and the project's page;
- `manage.py flags export` of the whole project, and `manage.py flags import` of that file
  into a new project (every flag added);
- then, with the import's audit entries written (one per flag and per flag and
  environment), the admin's audit log and its index (the dashboard, where every generated
  flag, made a year ago and never evaluated, counts as stale);
- building one environment's document (`build_document`, its size) and compiling it;
- toggles in that environment (`toggles`): the next document and snapshot after one toggle
  (built and compiled from the previous ones), the write until this process serves it,
  and evaluations in another thread meanwhile (their p99 and slowest); SCALE_TOGGLES=N
  toggles N flags each way (default 10);
- `GET /api/v1/projects/{p}/flags?limit=1000`;
- OFREP bulk evaluation of every flag of that environment over HTTP (`http`): the
  production server (`manage.py serve`: gunicorn, WEB_CONCURRENCY uvicorn workers, default
  2) on the same database and cache, driven by wrk as `bench/http.py` drives it
  (BENCH_SECONDS, default 10; BENCH_CONNECTIONS, default 8) with one server key and one
  context: requests/s, p50 and p99. Needs wrk; SCALE_SKIP=http leaves it out.

$DB_URL names the PostgreSQL server: the script creates a database of its own there,
flags_bench_scale (dropping one of that name first; never the database $DB_URL names), and
drops it when it ends; $REDIS_URL the cache. SCALE_SIZES=S,M runs some sizes only;
SCALE_SKIP=import,http leaves out the import, the HTTP measure or both.
Prints a Markdown table.
"""

from __future__ import annotations

import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import urllib.request  # noqa: E402 - once bench/http.py no longer hides the `http` package

SIZES = {"S": 100, "M": 1_000, "L": 10_000}
CHOSEN = [s.strip().upper() for s in os.environ.get("SCALE_SIZES", "S,M,L").split(",") if s]
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/0")

SEGMENTS = 200
RULES = 3
COUNTRIES = ["US", "CA", "GB", "FR", "DE", "JP", "BR", "IN", "AU", "NL"]
PLANS = ["free", "pro", "team", "enterprise"]


from bench import http as bench_http  # noqa: E402
from bench.databases import database, own_database  # noqa: E402

DB_URL = own_database("bench/scale.py", "postgres://postgres@127.0.0.1:5432/flags_bench_scale")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from django.core.cache import cache  # noqa: E402
from django.core.management import call_command  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.test import Client  # noqa: E402
from django.test.utils import CaptureQueriesContext  # noqa: E402
from django.utils import timezone  # noqa: E402

from evaluation.documents import build_document  # noqa: E402
from evaluation.engine import compile_document  # noqa: E402
from flags import services, transfer  # noqa: E402
from flags.models import (  # noqa: E402
    Environment,
    Flag,
    FlagConfig,
    Project,
    Rule,
    Segment,
    Tag,
    Target,
    Variant,
)

SYSTEM = {"actor": None, "source": "system"}


# --- Generation -------------------------------------------------------------------------


def _segment_conditions(rng: random.Random) -> list[dict]:
    return [
        {"attribute": "country", "operator": "in", "values": rng.sample(COUNTRIES, 3)},
        {"attribute": "plan", "operator": "in", "values": rng.sample(PLANS, 2)},
        {"attribute": "email", "operator": "ends_with", "values": ["@example.com"]},
        {"attribute": "appVersion", "operator": "semver_gte", "values": ["2.1.0"]},
        {"attribute": "age", "operator": "gte", "values": [rng.randint(18, 60)]},
    ]


def _rollout(keys: list[str], rng: random.Random) -> list[dict]:
    first = rng.randint(1, 99)
    if len(keys) == 2:
        return [{"variant": keys[0], "weight": first}, {"variant": keys[1], "weight": 100 - first}]
    return [{"variant": key, "weight": 1} for key in keys]


def _serving(keys: list[str], rng: random.Random, rollout: bool) -> dict:
    """The model fields `services.flag_config_update` stores for a variant or a rollout."""
    if rollout:
        return {"serve_variant": "", "rollout": _rollout(keys, rng), "bucket_by": "targetingKey"}
    return {"serve_variant": rng.choice(keys), "rollout": [], "bucket_by": "targetingKey"}


def generate(key: str, count: int) -> Project:
    """A project of `count` flags, written in bulk as the services would have written it."""
    rng = random.Random(count)
    project = services.project_create(key=key, **SYSTEM)
    environments = list(project.environments.order_by("position"))
    tags = Tag.objects.bulk_create(Tag(project=project, name=f"team-{i}") for i in range(10))
    segments = Segment.objects.bulk_create(
        Segment(project=project, key=f"segment-{i:03}", name=f"Segment {i}", conditions=cond)
        for i, cond in enumerate(_segment_conditions(rng) for _ in range(SEGMENTS))
    )
    flags = Flag.objects.bulk_create(
        Flag(
            project=project,
            key=f"flag-{i:05}",
            name=f"flag-{i:05}",
            type=Flag.Type.BOOLEAN if i % 4 else Flag.Type.STRING,
        )
        for i in range(count)
    )
    # Made long ago and never evaluated: every flag is stale, as the dashboard counts them.
    Flag.objects.filter(project=project).update(created_at=timezone.now() - timedelta(days=365))
    variants, keys_of = [], {}
    for flag in flags:
        if flag.type == Flag.Type.BOOLEAN:
            values: list[tuple[str, Any]] = [("on", True), ("off", False)]
        else:
            values = [("red", "red"), ("green", "green"), ("blue", "blue")]
        keys_of[flag.pk] = [k for k, _ in values]
        variants += [
            Variant(flag=flag, key=k, value=v, position=p) for p, (k, v) in enumerate(values)
        ]
    Variant.objects.bulk_create(variants, batch_size=5000)
    Through = Flag.tags.through
    Through.objects.bulk_create(
        (Through(flag_id=flag.pk, tag_id=tag.pk) for flag in flags for tag in rng.sample(tags, 2)),
        batch_size=5000,
    )
    configs, rules, targets = [], [], []
    for index, flag in enumerate(flags):
        keys = keys_of[flag.pk]
        for environment in environments:
            configs.append(
                FlagConfig(
                    flag=flag,
                    environment=environment,
                    enabled=rng.random() < 0.7,
                    off_variant="off" if "off" in keys else keys[-1],
                    **_serving(keys, rng, rollout=index % 2 == 0),
                )
            )
            for position in range(RULES):
                conditions = [
                    {
                        "operator": "in_segment",
                        "values": [rng.choice(segments).key],
                    },
                    {"attribute": "plan", "operator": "in", "values": rng.sample(PLANS, 2)},
                ]
                rules.append(
                    Rule(
                        flag=flag,
                        environment=environment,
                        key=f"r{rng.getrandbits(32):08x}",
                        position=position,
                        conditions=conditions,
                        **_serving(keys, rng, rollout=position == RULES - 1),
                    )
                )
            targets.append(
                Target(
                    flag=flag,
                    environment=environment,
                    variant=keys[0],
                    values=[f"user-{index}-{n}" for n in range(5)],
                )
            )
    FlagConfig.objects.bulk_create(configs, batch_size=5000)
    Rule.objects.bulk_create(rules, batch_size=5000)
    Target.objects.bulk_create(targets, batch_size=5000)
    return project


def check(project: Project) -> None:
    """Compile each environment's document and evaluate every flag, as an import does."""
    documents = transfer.export_project(project=project, actor=None)
    transfer.environment_documents(documents)
    for document in documents["environments"].values():
        assert len(document["flags"]) == project.flags.count()


# --- Measurements -----------------------------------------------------------------------


def timed(call) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


def page(client: Client, url: str) -> tuple[float, int]:
    with CaptureQueriesContext(connection) as queries:
        elapsed, response = timed(lambda: client.get(url))
    assert response.status_code == 200, (url, response.status_code)
    return elapsed, len(queries)


def measure(key: str, count: int, client: Client) -> dict[str, str]:
    elapsed, project = timed(lambda: generate(key, count))
    row = {"generate": _seconds(elapsed)}
    elapsed, _ = timed(lambda: check(project))
    row["check"] = _seconds(elapsed)
    admin = "/admin/flags/"
    for name, url in (
        ("segment list", f"{admin}segment/?project__id__exact={project.pk}"),
        ("flag list", f"{admin}flag/?project__id__exact={project.pk}"),
        ("flag change page", f"{admin}flag/{project.flags.order_by('key').first().pk}/change/"),
        ("project page", f"{admin}project/{project.pk}/change/"),
        ("API flags", f"/api/v1/projects/{key}/flags?limit=1000"),
    ):
        row[name] = _page_row(client, url, queries=name != "API flags")
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "export.json"
        elapsed, _ = timed(lambda: _flags("export", key, "-o", str(path)))
        row["export"] = _seconds(elapsed)
        row["import"] = _import(path, f"{key}-copy")
    for name, url in (("audit log", f"{admin}auditentry/"), ("index", "/admin/")):
        row[name] = _page_row(client, url)
    production = project.environments.get(key="production").pk
    _forget_documents()  # a full build, as in a process that never built this environment
    elapsed, document = timed(lambda: build_document(production))
    size = len(json.dumps(document, separators=(",", ":")))
    row["document"] = f"{_seconds(elapsed)} ({size / 1e6:.1f} MB)"
    elapsed, _ = timed(lambda: compile_document(document))
    row["compile"] = _seconds(elapsed)
    row.update(toggles(production))
    row.update(ofrep_bulk(project.environments.get(key="production")))
    return row


def _page_row(client: Client, url: str, *, queries: bool = True) -> str:
    client.get(url)  # warm: the first request of a process pays for imports
    elapsed, count = page(client, url)
    return _seconds(elapsed) + (f" / {count} q" if queries else "")


# --- Toggles ------------------------------------------------------------------------------

TOGGLES = int(os.environ.get("SCALE_TOGGLES", "10"))


def _forget_documents() -> None:
    from evaluation import documents

    getattr(documents, "clear_fragments", lambda: None)()


def toggles(environment_id: int) -> dict[str, str]:
    """TOGGLES toggles of different flags, each measured twice: as a process that had not
    heard of it builds and compiles the new version from the previous one, then as the
    writer's process serves it (`flag_toggle` returns once its snapshot is in place, or,
    where requests compile, until the next evaluation has compiled it)."""
    import threading

    from evaluation import broadcast
    from evaluation import cache as snapshots

    snapshots.clear_local()
    held = compile_document(build_document(environment_id))
    configs = list(FlagConfig.objects.filter(environment_id=environment_id).order_by("pk"))
    builds, compiles, served, latencies = [], [], [], []
    stop = threading.Event()

    def evaluations() -> None:
        context = {"targetingKey": "user-1", "plan": "pro", "country": "US"}
        while not stop.is_set():
            started = time.perf_counter()
            snapshots.snapshot(environment_id).evaluate("flag-00001", context)
            latencies.append(time.perf_counter() - started)
            time.sleep(0.001)

    def toggle(config: FlagConfig) -> None:
        services.flag_toggle(config=config, enabled=not config.enabled, **SYSTEM)
        config.refresh_from_db()

    silent = broadcast.environments_changed
    for config in configs[:TOGGLES]:
        broadcast.environments_changed = lambda versions: None  # another process wrote it
        try:
            toggle(config)
        finally:
            broadcast.environments_changed = silent
        elapsed, document = timed(lambda: build_document(environment_id))
        builds.append(elapsed)
        elapsed, held = timed(
            lambda document=document, held=held: compile_document(document, previous=held)
        )
        compiles.append(elapsed)
    snapshots.clear_local()
    snapshots.snapshot(environment_id)
    reader = threading.Thread(target=evaluations, daemon=True)
    reader.start()
    try:
        _served(configs[TOGGLES : 2 * TOGGLES], environment_id, toggle, served)
    finally:
        stop.set()
        reader.join()
    return {
        "toggle build": _spread(builds),
        "toggle compile": _spread(compiles),
        "toggle served": _spread(served),
        "toggle p99": f"{_seconds(_percentile(latencies, 0.99))} / {_seconds(max(latencies))}",
    }


def _served(configs: list, environment_id: int, toggle, served: list[float]) -> None:
    from evaluation import cache as snapshots

    for config in configs:
        time.sleep(0.05)
        elapsed, _ = timed(lambda config=config: toggle(config))
        started = time.perf_counter()
        version = Environment.objects.get(pk=environment_id).version
        # Where requests compile, this one or the other thread's does.
        while snapshots.snapshot(environment_id).version < version:
            time.sleep(0.001)
        served.append(elapsed + time.perf_counter() - started)


def _percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(share * (len(ordered) - 1))))]


def _spread(values: list[float]) -> str:
    return f"{_seconds(_percentile(values, 0.5))} (max {_seconds(max(values))})"


# --- OFREP bulk over HTTP ------------------------------------------------------------------

# Matches some segments' conditions (country, plan, email, version and age all vary).
BULK_CONTEXT = {
    "targetingKey": "user-42",
    "country": "US",
    "plan": "pro",
    "email": "someone@example.com",
    "appVersion": "2.3.0",
    "age": 30,
}


def ofrep_bulk(environment: Environment) -> dict[str, str]:
    """wrk against `POST /ofrep/v1/evaluate/flags` for every flag of `environment`, under
    the production server on this database and cache."""
    if "http" in os.environ.get("SCALE_SKIP", ""):
        return {"bulk rate": "skipped", "bulk latency": "skipped"}
    if shutil.which("wrk") is None:
        return {"bulk rate": "no wrk", "bulk latency": "no wrk"}
    _, key = services.api_key_create(
        environment=environment, kind="server", name="bench-scale", **SYSTEM
    )
    live = Flag.objects.filter(project=environment.project, archived=False).count()
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as directory:
        port = bench_http.free_port()
        server = subprocess.Popen(
            [sys.executable, "manage.py", "serve"],
            cwd=ROOT,
            env=bench_http.server_environment(directory, port),
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(directory, "server.log"), "w"),  # noqa: SIM115
        )
        try:
            base = f"http://127.0.0.1:{port}"
            bench_http.wait_until_up(f"{base}/healthz", server)
            return _wrk_bulk(directory, f"{base}/ofrep/v1/evaluate/flags", key, live)
        finally:
            server.terminate()
            server.wait(timeout=15)


def _wrk_bulk(directory: str, url: str, key: str, live: int) -> dict[str, str]:
    body = json.dumps({"context": BULK_CONTEXT})
    headers = {"Content-Type": "application/json", "X-API-Key": key}
    for _ in range(50):  # every worker compiles the snapshot and warms its caches
        request = urllib.request.Request(url, data=body.encode(), headers=headers)
        answer = json.loads(urllib.request.urlopen(request).read())
    assert len(answer["flags"]) == live, (len(answer["flags"]), live)
    result = bench_http.run_wrk(
        url, bench_http.wrk_script(directory, "bulk", "POST", body, headers)
    )
    errors = f", {result['errors']:.0f} non-2xx" if result["errors"] else ""
    return {
        "bulk rate": f"{result['rate']:,.0f} req/s{errors}",
        "bulk latency": f"{result['p50']:.1f} ms / {result['p99']:.1f} ms",
    }


def _import(path: Path, project_key: str) -> str:
    if "import" in os.environ.get("SCALE_SKIP", ""):
        return "skipped"
    elapsed, _ = timed(lambda: _flags("import", str(path), project_key, "--create-missing"))
    return _seconds(elapsed)


def _flags(*args: str) -> None:
    call_command("flags", *args, stdout=io.StringIO(), stderr=io.StringIO())


def _seconds(value: float) -> str:
    return f"{value * 1000:.0f} ms" if value < 1 else f"{value:.2f} s"


ROWS = [
    ("generate (bulk_create)", "generate"),
    ("compile + evaluate every flag (check)", "check"),
    ("admin segment list (time / queries)", "segment list"),
    ("admin flag list (time / queries)", "flag list"),
    ("admin flag change page (time / queries)", "flag change page"),
    ("admin project page (time / queries)", "project page"),
    ("admin audit log, after the import (time / queries)", "audit log"),
    ("admin index (dashboard), after the import (time / queries)", "index"),
    ("`flags import` of the export (new project)", "import"),
    ("`flags export` (3 environments)", "export"),
    ("build one environment's document (size)", "document"),
    ("compile that document", "compile"),
    ("after one toggle: build the next document (median, max)", "toggle build"),
    ("after one toggle: compile it from the previous snapshot", "toggle compile"),
    ("toggle until the writer's process serves it", "toggle served"),
    ("evaluation in another thread during toggles (p99 / slowest)", "toggle p99"),
    ("`GET /api/v1/projects/{p}/flags?limit=1000`", "API flags"),
    ("OFREP bulk, every flag, over HTTP (wrk): throughput", "bulk rate"),
    ("OFREP bulk, every flag, over HTTP (wrk): p50 / p99", "bulk latency"),
]


def main() -> None:
    try:
        call_command("migrate", verbosity=0)
        cache.clear()  # a former run's documents, under the same ids and versions
        user = get_user_model().objects.create_superuser("bench", "bench@example.com", "x")
        client = Client()
        client.force_login(user)
        columns = {}
        for size in CHOSEN:
            columns[size] = measure(f"scale-{size.lower()}", SIZES[size], client)
            print(f"{size} done: {columns[size]}", file=sys.stderr, flush=True)
        flags = ", ".join(f"{size} {SIZES[size]:,} flags" for size in columns)
        print(
            f"PostgreSQL + Redis, in-process (Django's test client, no server); {flags} in "
            f"3 environments, {SEGMENTS} segments. Queries counted with CaptureQueriesContext."
            f" OFREP bulk rows: wrk -t2 -c{bench_http.CONNECTIONS} -d{bench_http.SECONDS}s"
            f" against the production server, {os.cpu_count()} CPUs.\n"
        )
        print("| measure | " + " | ".join(columns) + " |")
        print("|---|" + "---:|" * len(columns))
        for label, name in ROWS:
            print(f"| {label} | " + " | ".join(col[name] for col in columns.values()) + " |")
    finally:
        connections.close_all()
        database(DB_URL, "drop")


if __name__ == "__main__":
    main()
