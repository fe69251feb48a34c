"""The engine goals' workloads as fixed scripts, for instruction counts that load cannot move.

    python bench/engine_workloads.py WORKLOAD REPEAT [ROOT]

WORKLOAD is `all` (`evaluate_all` of the 200 flags of `bench/engine.py` for one context,
1,000 times), `compile` (10 compiles of its 1,000 flags) or `recompile` (3 recompiles of
its 10,000 flags after one was turned off, given the previous snapshot); each is run REPEAT
times after its setup, or with REPEAT 0 timed (the best and median of 15 runs). ROOT is the
checkout whose engine and bench/engine.py are used (this one by default), e.g. an older
commit's `git archive` in a temporary directory. Run once and twice under
`valgrind --tool=callgrind`, the difference of the two counts is the workload's own.
"""

from __future__ import annotations

import gc
import importlib.util
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

COUNTS = {"all": 1_000, "compile": 10, "recompile": 3}


def workload(root: Path, name: str) -> Callable[[], Any]:
    # This directory off the path (its statistics.py would shadow the standard library's,
    # and import this checkout), the engine's checkout first.
    here = Path(__file__).resolve().parent
    sys.path[:] = [str(root)] + [p for p in sys.path if Path(p or ".").resolve() != here]
    spec = importlib.util.spec_from_file_location("bench_engine", root / "bench" / "engine.py")
    assert spec is not None and spec.loader is not None
    engine = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(engine)
    compile_document = engine.compile_document
    assert Path(sys.modules[compile_document.__module__].__file__ or "").is_relative_to(root)
    if name == "all":
        snapshot = compile_document(engine.ours_document(200))
        context = {"targetingKey": "user-1", "country": "FR", "plan": "pro"}
        snapshot.evaluate_all(context)  # each flag's evaluation is made at its first one
        return lambda: snapshot.evaluate_all(context)
    if name == "compile":
        document = engine.ours_document(1_000)
        return lambda: compile_document(document)
    previous = compile_document(engine.ours_document(10_000))
    changed = engine.toggled(previous.document, "flag-0")
    return lambda: compile_document(changed, previous=previous)


def main() -> None:
    name, repeat = sys.argv[1], int(sys.argv[2])
    root = Path(sys.argv[3]) if len(sys.argv) > 3 else Path(__file__).resolve().parents[1]
    run = workload(root.resolve(), name)
    if repeat:
        for _ in range(COUNTS[name] * repeat):
            run()
        return
    samples = []
    for _ in range(15):
        gc.disable()
        begin = time.perf_counter_ns()
        run()
        samples.append(time.perf_counter_ns() - begin)
        gc.enable()
    samples.sort()
    print(f"{name}: best {samples[0] / 1000:,.1f} µs, median {samples[7] / 1000:,.1f} µs")


if __name__ == "__main__":
    main()
