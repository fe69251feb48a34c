"""The sample-ratio promise over repeated runs: at 100,000 units, a 52/48 split of a 50/50
rollout raises the warning and a true 50/50 does not, in at least 95% of runs.

Each run is 100,000 units of its own, assigned by the real engine (the flag's document as
the server builds it, compiled, each unit evaluated: the rollout's own hashing), so the runs
are independent draws of the bucketing. In the skewed runs 8% of the "on" arm's exposures
are lost, as when the treatment's page fails before it is shown. The per-variant counts go
to the check the analysis runs on them (`flags.experiments.sample_ratio`). The first run of
each kind goes the whole way instead: its exposures through the ingestion functions
(`evaluation.events.expose_at`, then the drain) into the database, and `experiment_analysis`
reads them, which must count what the engine assigned and reach the same verdict: the
counting in between is exact, so the other runs need only the counts. (One run of each
kind through the SDK and a real server is in test_simulation.py.)
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from evaluation import events
from evaluation.documents import build_document
from evaluation.engine import Reason, compile_document
from flags.experiments import experiment_analysis, sample_ratio
from tests import factories

pytestmark = pytest.mark.django_db

UNITS = 100_000
RUNS = 100  # of each kind
DROPPED = 0.08  # of the "on" arm's exposures, in a skewed run: about 48/52
CHUNK = 40_000  # first exposures handed to ingestion between drains (its batch flushes at 50,000)


@pytest.fixture(autouse=True)
def _no_leftovers():
    events.drain()
    events._seen.clear()
    yield
    events._units.take()
    events._seen.clear()


@pytest.fixture
def experiment():
    project = factories.project("shop")
    flag = factories.flag(project, "checkout")
    factories.split(flag, on=50, off=50)
    start = datetime.now(UTC) - timedelta(days=1)
    return factories.started(factories.experiment(flag), start)


def assigned(experiment, run: str, drop: float) -> list[tuple[str, str]]:
    """(unit, variant) of each unit of the run whose exposure is recorded."""
    snapshot = compile_document(build_document(experiment.environment_id))
    exposures = []
    for n in range(UNITS):
        unit = f"{run}-{n}"
        result = snapshot.evaluate("checkout", {"targetingKey": unit})
        assert result.reason == Reason.SPLIT
        if result.variant == "on" and n % 100 < drop * 100:
            continue
        exposures.append((unit, result.variant))
    return exposures


def counts(exposures: list[tuple[str, str]]) -> dict[str, int]:
    found = {"off": 0, "on": 0}
    for _, variant in exposures:
        found[variant] += 1
    return found


def ingested(experiment, exposures: list[tuple[str, str]]) -> None:
    at = (experiment.starts_at + timedelta(hours=1)).timestamp()
    for index in range(0, len(exposures), CHUNK):
        for unit, variant in exposures[index : index + CHUNK]:
            events.expose_at(experiment.environment_id, "checkout", variant, unit, at)
        events.drain()


def warnings(experiment, kind: str, drop: float) -> int:
    """How many of RUNS runs of the kind raise the sample-ratio warning."""
    warned = 0
    for run in range(RUNS):
        exposures = assigned(experiment, f"{kind}-{run}", drop)
        units = counts(exposures)
        mismatch = sample_ratio(experiment, units).mismatch
        if run == 0:
            ingested(experiment, exposures)
            analysis = experiment_analysis(experiment)
            assert analysis.units == units and analysis.mixed_units == 0
            assert analysis.sample_ratio.mismatch is mismatch
        warned += mismatch
    return warned


def test_a_true_50_50_split_raises_no_warning_in_at_least_95_percent_of_runs(experiment):
    assert warnings(experiment, "even", 0.0) <= RUNS * 0.05


def test_a_52_48_split_raises_the_warning_in_at_least_95_percent_of_runs(experiment):
    assert warnings(experiment, "skewed", DROPPED) >= RUNS * 0.95
