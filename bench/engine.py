"""Benchmark: ns per evaluation of evaluation.engine against the peers' Python engines.

Run from the repository root (about two minutes):

    python bench/engine.py

Prints a Markdown table. Workloads:
  (a) one flag (rule: country in [US, CA, GB] and plan == "pro"; else a 25% rollout),
      evaluated over 100,000 distinct contexts;
  (b) all of 200 such flags for one context;
  (c) compiling a document of 1,000 such flags.
Then this engine alone: its goals, each row with the figure it must meet (the same
workloads, plus `evaluate_all` of 1,000 flags whose rules share 200 segments, as in
bench/scale.py's M, and recompiling a 10,000-flag document in which one flag changed, given
the previous snapshot); and a `matches` condition (RE2, linear time) on an
ordinary value and on the pathological `(a+)+$` against values of 29 bytes and 10 kB, which
took Python's backtracking `re` 18 s and forever respectively.
Every figure is the median of repeated runs; contexts and documents are built in each
engine's own format before the clock starts.
"""

from __future__ import annotations

import gc
import json
import random
import sys
import time
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

# The repository on the path, and bench/ off it: bench/statistics.py would shadow the
# standard library's module of that name.
ROOT = Path(__file__).resolve().parents[1]
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import statistics  # noqa: E402

from evaluation.engine import compile_document  # noqa: E402

CONTEXTS = 100_000
FLAGS_B = 200
FLAGS_C = 1_000
COUNTRIES = ("US", "CA", "GB", "FR", "DE")
PLANS = ("pro", "free", "team")
REPEATS = 5
BUDGET_SECONDS = 8.0  # per engine and workload: slow engines get fewer repeats

Plain = list[tuple[str, str, str]]  # (targeting key, country, plan)


def plain_contexts(count: int) -> Plain:
    return [(f"user-{i}", COUNTRIES[i % 5], PLANS[i % 3]) for i in range(count)]


def measure(run: Callable[[], Any], operations: int) -> tuple[float, int]:
    """Median ns per operation over repeated runs, and the number of runs."""
    samples: list[float] = []
    started = time.perf_counter()
    gc.disable()
    try:
        while len(samples) < REPEATS:
            begin = time.perf_counter_ns()
            run()
            samples.append((time.perf_counter_ns() - begin) / operations)
            if time.perf_counter() - started > BUDGET_SECONDS:
                break
    finally:
        gc.enable()
    return statistics.median(samples), len(samples)


# --- this project's engine ----------------------------------------------------------------


def ours_flag() -> dict[str, Any]:
    return {
        "type": "boolean",
        "enabled": True,
        "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}],
        "offVariant": "off",
        "rules": [
            {
                "id": "1",
                "conditions": [
                    {"attribute": "country", "operator": "in", "values": ["US", "CA", "GB"]},
                    {"attribute": "plan", "operator": "equals", "values": ["pro"]},
                ],
                "serve": {"variant": "on"},
            }
        ],
        "defaultServe": {
            "rollout": {
                "bucketBy": "targetingKey",
                "variants": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}],
            }
        },
    }


def ours_document(count: int) -> dict[str, Any]:
    return {"version": 1, "flags": {f"flag-{i}": ours_flag() for i in range(count)}}


class Ours:
    name = "evaluation.engine (this project)"

    def check(self) -> None:
        snapshot = compile_document(ours_document(1))
        assert snapshot.evaluate("flag-0", {"country": "US", "plan": "pro"}).value is True

    def one_flag(self, plain: Plain) -> Callable[[], Any]:
        evaluate = compile_document(ours_document(1)).evaluate
        contexts = [{"targetingKey": k, "country": c, "plan": p} for k, c, p in plain]

        def run() -> None:
            for context in contexts:
                evaluate("flag-0", context)

        return run

    def all_flags(self, count: int) -> Callable[[], Any]:
        snapshot = compile_document(ours_document(count))
        context = {"targetingKey": "user-1", "country": "FR", "plan": "pro"}
        return lambda: snapshot.evaluate_all(context)

    def compile(self, count: int) -> Callable[[], Any]:
        document = ours_document(count)
        return lambda: compile_document(document)


# --- GrowthBook ---------------------------------------------------------------------------


class GrowthBookPeer:
    name = "growthbook"

    def __init__(self) -> None:
        from growthbook import GrowthBook

        self.GrowthBook = GrowthBook

    @staticmethod
    def feature() -> dict[str, Any]:
        return {
            "defaultValue": False,
            "rules": [
                {
                    "condition": {"country": {"$in": ["US", "CA", "GB"]}, "plan": "pro"},
                    "force": True,
                },
                {"force": True, "coverage": 0.25, "hashAttribute": "id"},
            ],
        }

    def features(self, count: int) -> dict[str, Any]:
        return {f"flag-{i}": self.feature() for i in range(count)}

    def check(self) -> None:
        book = self.GrowthBook(features=self.features(1))
        book.set_attributes({"id": "u", "country": "US", "plan": "pro"})
        assert book.eval_feature("flag-0").value is True

    def one_flag(self, plain: Plain) -> Callable[[], Any]:
        book = self.GrowthBook(features=self.features(1))
        contexts = [{"id": k, "country": c, "plan": p} for k, c, p in plain]
        set_attributes, eval_feature = book.set_attributes, book.eval_feature

        def run() -> None:
            for context in contexts:
                set_attributes(context)
                eval_feature("flag-0")

        return run

    def all_flags(self, count: int) -> Callable[[], Any]:
        book = self.GrowthBook(features=self.features(count))
        book.set_attributes({"id": "user-1", "country": "FR", "plan": "pro"})
        keys = [f"flag-{i}" for i in range(count)]
        eval_feature = book.eval_feature
        return lambda: [eval_feature(key) for key in keys]

    def compile(self, count: int) -> Callable[[], Any]:
        features = self.features(count)

        def run() -> None:
            # GrowthBook has no compile step; this is the cost of loading features.
            book = self.GrowthBook()
            book.set_features(features)

        return run


# --- Flagsmith ----------------------------------------------------------------------------


class FlagsmithPeer:
    name = "flagsmith-flag-engine"

    def __init__(self) -> None:
        from flag_engine.engine import get_evaluation_result

        self.evaluate = get_evaluation_result

    @staticmethod
    def environment(count: int) -> dict[str, Any]:
        features = {}
        overrides = []
        for i in range(count):
            name = f"flag-{i}"
            features[name] = {
                "key": str(i),
                "name": name,
                "enabled": True,
                "value": False,
                "variants": [{"value": True, "weight": 25, "priority": 0}],
            }
            overrides.append(
                {"key": str(i), "name": name, "enabled": True, "value": True, "priority": 0}
            )
        segment = {
            "key": "1",
            "name": "pro-na",
            "rules": [
                {
                    "type": "ALL",
                    "conditions": [
                        {"property": "country", "operator": "IN", "value": ["US", "CA", "GB"]},
                        {"property": "plan", "operator": "EQUAL", "value": "pro"},
                    ],
                }
            ],
            "overrides": overrides,
        }
        return {
            "environment": {"key": "env", "name": "bench"},
            "features": features,
            "segments": {"1": segment},
        }

    @staticmethod
    def with_identity(environment: dict[str, Any], key: str, country: str, plan: str) -> dict:
        identity = {"identifier": key, "key": key, "traits": {"country": country, "plan": plan}}
        return {**environment, "identity": identity}

    def check(self) -> None:
        context = self.with_identity(self.environment(1), "u", "US", "pro")
        assert self.evaluate(context)["flags"]["flag-0"]["value"] is True

    def one_flag(self, plain: Plain) -> Callable[[], Any]:
        environment = self.environment(1)
        contexts = [self.with_identity(environment, *row) for row in plain]
        evaluate = self.evaluate

        def run() -> None:
            for context in contexts:
                evaluate(context)

        return run

    def all_flags(self, count: int) -> Callable[[], Any]:
        context = self.with_identity(self.environment(count), "user-1", "FR", "pro")
        return lambda: self.evaluate(context)

    def compile(self, count: int) -> None:
        return None  # the engine evaluates the raw context: there is nothing to compile


# --- Unleash's Yggdrasil ------------------------------------------------------------------


class YggdrasilPeer:
    name = "yggdrasil-engine (Unleash, Rust via ctypes)"

    def __init__(self) -> None:
        from yggdrasil_engine.engine import UnleashEngine

        self.Engine = UnleashEngine

    @staticmethod
    def state(count: int) -> str:
        features = []
        for i in range(count):
            name = f"flag-{i}"
            constraints = [
                {"contextName": "country", "operator": "IN", "values": ["US", "CA", "GB"]},
                {"contextName": "plan", "operator": "IN", "values": ["pro"]},
            ]
            strategies = [
                {
                    "name": "flexibleRollout",
                    "parameters": {"rollout": "100", "stickiness": "userId", "groupId": name},
                    "constraints": constraints,
                },
                {
                    "name": "flexibleRollout",
                    "parameters": {"rollout": "25", "stickiness": "userId", "groupId": name},
                    "constraints": [],
                },
            ]
            features.append(
                {"name": name, "enabled": True, "strategies": strategies, "type": "release"}
            )
        return json.dumps({"version": 1, "features": features})

    def engine(self, count: int) -> Any:
        engine = self.Engine()
        engine.take_state(self.state(count))
        return engine

    @staticmethod
    def context(key: str, country: str, plan: str) -> dict[str, Any]:
        return {"userId": key, "properties": {"country": country, "plan": plan}}

    def check(self) -> None:
        engine = self.engine(1)
        assert engine.check_enabled("flag-0", self.context("u", "US", "pro")).is_enabled is True
        assert engine.check_enabled("flag-0", self.context("u", "FR", "pro")).is_found is True

    def one_flag(self, plain: Plain) -> Callable[[], Any]:
        check_enabled = self.engine(1).check_enabled
        contexts = [self.context(*row) for row in plain]

        def run() -> None:
            for context in contexts:
                check_enabled("flag-0", context)

        return run

    def all_flags(self, count: int) -> Callable[[], Any]:
        check_enabled = self.engine(count).check_enabled
        context = self.context("user-1", "FR", "pro")
        keys = [f"flag-{i}" for i in range(count)]
        return lambda: [check_enabled(key, context) for key in keys]

    def compile(self, count: int) -> Callable[[], Any]:
        state = self.state(count)

        def run() -> None:
            self.Engine().take_state(state)

        return run


# --- the table ----------------------------------------------------------------------------

PEERS: list[tuple[str, str, Callable[[], Any]]] = [
    ("growthbook", "growthbook", GrowthBookPeer),
    ("flagsmith-flag-engine", "flagsmith-flag-engine", FlagsmithPeer),
    ("yggdrasil-engine", "yggdrasil-engine", YggdrasilPeer),
]


def version_of(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def cell(ns: float | None, runs: int = 0) -> str:
    if ns is None:
        return "n/a"
    text = f"{ns / 1000:,.2f} µs" if ns >= 10_000 else f"{ns:,.0f} ns"
    return f"{text} ({runs}×)" if runs < REPEATS else text


def bench_engine(engine: Any, plain: Plain) -> list[str]:
    engine.check()
    a_ns, a_runs = measure(engine.one_flag(plain), len(plain))
    b_ns, b_runs = measure(engine.all_flags(FLAGS_B), FLAGS_B)
    compile_run = engine.compile(FLAGS_C)
    c_cell = "no compile step"
    if compile_run is not None:
        c_ns, c_runs = measure(compile_run, 1)
        c_cell = f"{c_ns / 1e6:,.2f} ms" + (f" ({c_runs}×)" if c_runs < REPEATS else "")
    return [cell(a_ns, a_runs), cell(b_ns, b_runs), c_cell]


REGEX_EVALUATIONS = 2_000
REGEX_CASES = (
    (r"^[a-z.]+@example\.com$", "someone@example.com", "an ordinary pattern, 19 B value"),
    (r"(a+)+$", "a" * 28 + "!", "`(a+)+$`, 29 B value"),
    (r"(a+)+$", "a" * 10_000 + "!", "`(a+)+$`, 10 kB value"),
)


def regex_rows() -> list[list[str]]:
    """µs per evaluation of a flag whose one rule is `email matches [pattern]`."""
    rows = []
    for pattern, value, label in REGEX_CASES:
        flag = ours_flag()
        flag["rules"][0]["conditions"] = [
            {"attribute": "email", "operator": "matches", "values": [pattern]}
        ]
        evaluate = compile_document({"flags": {"f": flag}}).evaluate
        context = {"targetingKey": "user-1", "email": value}

        def run(evaluate: Callable[..., Any] = evaluate, context: dict = context) -> None:
            for _ in range(REGEX_EVALUATIONS):
                evaluate("f", context)

        ns, runs = measure(run, REGEX_EVALUATIONS)
        rows.append([label, f"{ns / 1000:,.2f} µs", str(runs)])
    return rows


RECOMPILE_FLAGS = 10_000


def toggled(document: dict[str, Any], key: str) -> dict[str, Any]:
    """A copy of `document`, as a new version loaded from the cache is: new objects
    throughout, with the flag `key` turned off."""
    fresh = json.loads(json.dumps(document))
    fresh["version"] += 1
    fresh["flags"][key]["enabled"] = False
    return fresh


def recompile_run() -> Callable[[], Any]:
    previous = compile_document(ours_document(RECOMPILE_FLAGS))
    changed = toggled(previous.document, "flag-0")
    return lambda: compile_document(changed, previous=previous)


SHARED_FLAGS = 1_000
SHARED_SEGMENTS = 200
SHARED_PLANS = ("free", "pro", "team", "enterprise")


def shared_segments_document() -> dict[str, Any]:
    """`bench/scale.py`'s M environment: 1,000 flags (70% enabled), each with 3 rules of 2
    conditions (`in_segment` of one of 200 segments of 5 conditions, and a plan) and a
    target of 5 keys; every other flag's default and each last rule serve a rollout."""
    rng = random.Random(SHARED_FLAGS)
    countries = [*COUNTRIES, "JP", "BR", "IN", "AU", "NL"]
    segments = {
        f"segment-{i:03}": {
            "conditions": [
                {"attribute": "country", "operator": "in", "values": rng.sample(countries, 3)},
                {"attribute": "plan", "operator": "in", "values": rng.sample(SHARED_PLANS, 2)},
                {"attribute": "email", "operator": "ends_with", "values": ["@example.com"]},
                {"attribute": "appVersion", "operator": "semver_gte", "values": ["2.1.0"]},
                {"attribute": "age", "operator": "gte", "values": [rng.randint(18, 60)]},
            ]
        }
        for i in range(SHARED_SEGMENTS)
    }
    keys = list(segments)
    halves = {"variants": [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}]}

    def serve(rollout: bool) -> dict[str, Any]:
        return {"rollout": halves} if rollout else {"variant": rng.choice(["on", "off"])}

    flags = {}
    for i in range(SHARED_FLAGS):
        flag = ours_flag()
        flag["enabled"] = rng.random() < 0.7
        flag["targets"] = [{"variant": "on", "values": [f"user-{i}-{n}" for n in range(5)]}]
        flag["rules"] = [
            {
                "id": f"r{i}-{position}",
                "conditions": [
                    {"operator": "in_segment", "values": [rng.choice(keys)]},
                    {"attribute": "plan", "operator": "in", "values": rng.sample(SHARED_PLANS, 2)},
                ],
                "serve": serve(position == 2),
            }
            for position in range(3)
        ]
        flag["defaultServe"] = serve(i % 2 == 0)
        flags[f"flag-{i:05}"] = flag
    return {"version": 1, "flags": flags, "segments": segments}


def shared_segments_run() -> Callable[[], Any]:
    """`evaluate_all` of the 1,000 flags sharing 200 segments, for each of 20 contexts."""
    snapshot = compile_document(shared_segments_document())
    contexts = [
        {
            "targetingKey": f"user-{i}",
            "country": ("US", "FR", "JP", "NL")[i % 4],
            "plan": SHARED_PLANS[i % 4],
            "email": f"user-{i}@example.com" if i % 3 else f"user-{i}@test.org",
            "appVersion": "2.3.0",
            "age": 20 + i,
        }
        for i in range(20)
    ]
    evaluate_all = snapshot.evaluate_all

    def run() -> None:
        for context in contexts:
            evaluate_all(context)

    return run


def goal_rows(plain: Plain) -> list[list[str]]:
    """(what, measured, goal, met) for each of the engine's goals."""
    ours = Ours()
    one_ns, _ = measure(ours.one_flag(plain), len(plain))
    all_ns, _ = measure(ours.all_flags(FLAGS_B), 1)
    compile_ns, _ = measure(ours.compile(FLAGS_C), 1)
    recompile_ns, _ = measure(recompile_run(), 1)
    scratch_ns, _ = measure(ours.compile(RECOMPILE_FLAGS), 1)
    shared_ns, _ = measure(shared_segments_run(), 20)
    goals = [
        ("one flag, per evaluation", one_ns, 400, f"{one_ns:,.0f} ns", "≤ 400 ns"),
        (f"{FLAGS_B} flags for one context", all_ns, 50_000, f"{all_ns / 1000:,.2f} µs", "≤ 50 µs"),
        (
            f"{SHARED_FLAGS:,} flags sharing {SHARED_SEGMENTS} segments, one context",
            shared_ns,
            1_000_000,
            f"{shared_ns / 1000:,.0f} µs",
            "≤ 1 ms",
        ),
        (
            f"compile {FLAGS_C:,} flags",
            compile_ns,
            10_000_000,
            f"{compile_ns / 1e6:,.2f} ms",
            "≤ 10 ms",
        ),
        (
            f"recompile {RECOMPILE_FLAGS:,} flags after 1 changed",
            recompile_ns,
            10_000_000,
            f"{recompile_ns / 1e6:,.2f} ms",
            "≤ 10 ms",
        ),
    ]
    rows = [
        [what, shown, goal, "yes" if ns <= limit else "no"]
        for what, ns, limit, shown, goal in goals
    ]
    scratch = f"{scratch_ns / 1e6:,.2f} ms"
    rows.append([f"(for scale) compile {RECOMPILE_FLAGS:,} flags from scratch", scratch, "-", "-"])
    return rows


def main() -> None:
    plain = plain_contexts(CONTEXTS)
    header = [
        "engine",
        "version",
        f"(a) 1 flag × {CONTEXTS:,} contexts, per eval",
        f"(b) {FLAGS_B} flags × 1 context, per flag",
        f"(c) compile {FLAGS_C:,} flags",
    ]
    rows = [[Ours.name, "-", *bench_engine(Ours(), plain)]]
    for label, distribution, make in PEERS:
        version = version_of(distribution)
        try:
            rows.append([label, version, *bench_engine(make(), plain)])
        except Exception as exc:  # noqa: BLE001 - report the peer as unusable, keep going
            reason = f"{type(exc).__name__}: {exc}".replace("|", "/")[:120]
            rows.append([label, version, f"unusable: {reason}", "", ""])
    print(f"Python {sys.version.split()[0]}, median of up to {REPEATS} runs.\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join(["---"] * len(header)) + "|")
    for row in rows:
        print("| " + " | ".join(row) + " |")
    print("\n| goal (this engine) | measured | goal | met |\n|---|---|---|---|")
    for row in goal_rows(plain):
        print("| " + " | ".join(row) + " |")
    print("\n| `matches` (RE2) | per evaluation | runs |\n|---|---|---|")
    for row in regex_rows():
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
