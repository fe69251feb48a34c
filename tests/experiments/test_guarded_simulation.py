"""Simulated guarded rollouts through the real SDK, server and scheduler, with known rates.

One server process; every flag is its own stepped rollout (50% of `on`, then 100% ten days
later) with a guard on a 1-day conversion metric, set up through `schedules.rollout_create`
and started by a `run_scheduler --once` pass. One `FlagClient` evaluates them in process with
`report_exposures=True` and `track`s each simulated user's conversion at its variant's
true rate; the server's batches are drained into the database as in test_simulation.py.
Then the scheduler's own pass (`manage.py run_scheduler --once`, as cron runs it) checks
the guards, with the clock moved two days on: a guard judges a unit only once its metric's
window has closed, at the end of the day after its exposure. Three such looks, after
each third of the units, then a pass past the second step's time. What is checked is
what a team relies on: a clearly worse variant is rolled back (the client then serves the
control, and the audit says so), and of 100 rollouts whose variants convert alike at most
5 are (tests/flags/test_guards.py runs the same promise on rows written straight to the
database).
"""

from __future__ import annotations

import copy
import time

import numpy as np
import pytest
from flagclient import FlagClient

from tests.experiments.test_simulation import STORED, Population, shell
from tests.servers import Cluster

pytestmark = pytest.mark.server

AA_ROLLOUTS = 100
AA_UNITS = 300  # per rollout and look: about 150 a variant (a guard waits for 100)
AA_RATES = {"off": 0.10, "on": 0.10}
WORSE_ROLLOUTS = 3
WORSE_UNITS = 2_000  # per rollout and look: after three looks about 3,000 a variant
WORSE_RATES = {"off": 0.10, "on": 0.05}
LOOKS = 3
MINUTE = 60
DAY = 24 * 60 * MINUTE
# When each look's scheduler pass runs, in seconds after the real time: two days on, when
# the windows of today's units have closed; 10 minutes apart, past the guards'
# CHECK_EVERY (5 minutes).
LOOK_SHIFTS = [2 * DAY + 10 * MINUTE * look for look in range(LOOKS)]
# Past the second step (ten days after the first): it is applied where no guard tripped,
# and the next pass finds every step of those rollouts applied.
FINISH_SHIFTS = [10 * DAY + 60 * MINUTE, 10 * DAY + 120 * MINUTE]

SETUP = """
import json
from datetime import timedelta
from django.utils import timezone
from flags import schedules, services
from flags.models import Environment, FlagConfig
SYSTEM = {{"actor": None, "source": "system"}}
environment = Environment.objects.get(pk={environment})
project = environment.project
services.metric_create(project=project, key="purchases",
                       data={{"event": "purchase", "window_days": 1}}, **SYSTEM)
now = timezone.now()
steps = [{{"at": now, "percentage": 50}}, {{"at": now + timedelta(days=10), "percentage": 100}}]
for key in {keys!r}:
    flag = services.flag_create(project=project, key=key, **SYSTEM)
    schedules.rollout_create(
        config=FlagConfig.objects.get(flag=flag, environment=environment), variant="on",
        steps=steps, guards=[{{"metric": "purchases"}}], **SYSTEM,
    )
print(json.dumps("ok"))
"""

# The scheduler's passes with the clock moved on by each of `shifts` seconds, then what
# each guard holds and saw, as of the last pass.
PASSES = """
import json
from datetime import timedelta
from unittest import mock
from django.core.management import call_command
from django.db import connection
from django.utils import timezone
from flags import guards
from flags.models import AuditEntry, RolloutGuard, ScheduledChange
if connection.vendor == "postgresql":  # the planner's statistics, as autovacuum would make them
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE flags_unitexposure, flags_uniteventday")
real_now = timezone.now
for shift in {shifts!r}:
    def later():
        return real_now() + timedelta(seconds=shift)
    with mock.patch("django.utils.timezone.now", later):
        call_command("run_scheduler", "--once")
found = {{}}
for guard in RolloutGuard.objects.select_related("config__flag", "config__environment", "metric"):
    key = guard.config.flag.key
    control, treatment = guards.guard_totals(guard, later())
    steps = ScheduledChange.objects.filter(rollout=guard.rollout).order_by("run_at")
    found[key] = {{
        "status": guard.status, "decision": guard.decision, "p": guard.p_value,
        "totals": {{guard.control_variant: [control.units, control.conversions],
                    guard.treatment_variant: [treatment.units, treatment.conversions]}},
        "steps": [step.status for step in steps],
        "tripped": AuditEntry.objects.filter(flag_key=key, action="guard rollback").count(),
        "rolled_back": AuditEntry.objects.filter(
            flag_key=key, action=f"rollback by guard #{{guard.pk}}"
        ).count(),
    }}
print(json.dumps(found))
"""


class Rollouts(Population):
    """The simulated users of every rollout: who got which variant, and who converted."""

    def __init__(self, client: FlagClient) -> None:
        super().__init__(client)
        self.converted: dict[str, dict[str, int]] = {}  # per flag, reported units that did
        self.controlled: dict[str, int] = {}  # per flag, units served the control outright

    def visit(self, flag: str, unit: str, rates: dict[str, float], rng) -> None:
        details = self.client.details(flag, {"targetingKey": unit}, False)
        split = details.reason == "SPLIT"
        if split:
            counts = self.served.setdefault(flag, {"off": 0, "on": 0})
            counts[details.variant] += 1
        else:  # rolled back: everyone gets the control, and no exposure is reported
            assert details.variant == "off", details
            self.controlled[flag] = self.controlled.get(flag, 0) + 1
        if rng.random() < rates[details.variant]:
            self.track("purchase", unit)
            if split:
                converted = self.converted.setdefault(flag, {"off": 0, "on": 0})
                converted[details.variant] += 1

    def totals(self) -> dict[str, dict[str, list[int]]]:
        """Per flag and variant, [units, conversions] as the guard should count them."""
        return {
            flag: {
                variant: [units, self.converted.get(flag, {}).get(variant, 0)]
                for variant, units in served.items()
            }
            for flag, served in self.served.items()
        }


def aa_flags() -> list[str]:
    return [f"aa-{index:03d}" for index in range(AA_ROLLOUTS)]


def worse_flags() -> list[str]:
    return [f"worse-{index}" for index in range(WORSE_ROLLOUTS)]


def simulate(rollouts: Rollouts, look: int, rng: np.random.Generator) -> None:
    """One third of each rollout's users."""
    for flags, units, rates in (
        (aa_flags(), AA_UNITS, AA_RATES),
        (worse_flags(), WORSE_UNITS, WORSE_RATES),
    ):
        for flag in flags:
            for n in range(look * units, (look + 1) * units):
                rollouts.visit(flag, f"{flag}-{n}", rates, rng)
            rollouts.settle()


def stored(cluster: Cluster, rollouts: Rollouts) -> None:
    """Wait until every reported exposure and event is in the database."""
    rollouts.settle(backlog=0)
    expected = [rollouts.units(), rollouts.event_rows]
    deadline = time.monotonic() + 240
    while (found := shell(cluster, STORED)) != expected:
        assert time.monotonic() < deadline, (found, expected)
        time.sleep(2)


def serves(client: FlagClient, flag: str, variant: str, timeout: float = 60) -> bool:
    """Whether the client comes to serve `variant` to everyone (no split) within `timeout`.

    Asked of its snapshot (what it serves), not of `details`: a probe of a split would be
    reported as one more first exposure."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snapshot = client.snapshot
        assert snapshot is not None
        result = snapshot.evaluate(flag, {"targetingKey": "someone-new"}, "boolean")
        if result.reason != "SPLIT" and result.variant == variant:
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def simulated():
    keys = aa_flags() + worse_flags()
    with Cluster(instances=1, extra_env={"EXPOSURE_FLUSH_SECONDS": "1"}) as cluster:
        shell(cluster, SETUP.format(environment=cluster.seed["environment"], keys=keys))
        cluster.manage("run_scheduler", "--once")  # the first step of each rollout
        key = cluster.seed["server_key"]
        with FlagClient(
            cluster.url(0), key, report_exposures=True, exposure_interval=0.05, timeout=10
        ) as client:
            assert client.wait_until_ready(10)
            rollouts = Rollouts(client)
            rng = np.random.default_rng(20261204)
            looks = []
            for look in range(LOOKS):
                simulate(rollouts, look, rng)
                stored(cluster, rollouts)
                found = shell(cluster, PASSES.format(shifts=[LOOK_SHIFTS[look]]))
                tripped = [flag for flag in keys if found[flag]["status"] == "tripped"]
                served_control = {flag: serves(client, flag, "off") for flag in tripped}
                looks.append((found, copy.deepcopy(rollouts.totals()), served_control))
            finished = shell(cluster, PASSES.format(shifts=FINISH_SHIFTS))
            final = {
                flag: serves(client, flag, "off" if finished[flag]["status"] == "tripped" else "on")
                for flag in keys
            }
            stats = client.stats
        assert stats.get("tracked_dropped", 0) == stats.get("unit_exposures_dropped", 0) == 0
        yield rollouts, looks, finished, final


def test_each_guard_counts_every_reported_unit_and_conversion_of_its_rollout(simulated):
    _, looks, _, _ = simulated
    for found, expected, _ in looks:
        for flag, totals in expected.items():
            assert found[flag]["totals"] == totals, flag
    # Each look judged every rollout still running: a p-value, not "waiting for units".
    for found, _, _ in looks:
        for flag in aa_flags():
            assert found[flag]["status"] != "active" or found[flag]["p"] is not None, flag


def test_a_clearly_worse_variant_is_rolled_back_and_its_users_get_the_control(simulated):
    rollouts, looks, finished, final = simulated
    for flag in worse_flags():
        result = finished[flag]
        assert result["status"] == "tripped" and result["p"] <= 0.05, (flag, result)
        assert result["tripped"] == result["rolled_back"] == 1, (flag, result)
        assert result["steps"] == ["applied", "cancelled"], (flag, result)
        # The look that tripped it: the client then served the control to everyone, and
        # so did it to every user after it, through the pass past the cancelled step.
        at = next(index for index, look in enumerate(looks) if look[0][flag]["status"] == "tripped")
        assert looks[at][2][flag] is True, flag
        units_after = WORSE_UNITS * (LOOKS - 1 - at)
        assert rollouts.controlled.get(flag, 0) == units_after, flag
        assert final[flag] is True, flag


def test_at_most_5_of_100_aa_rollouts_are_rolled_back(simulated):
    _, _, finished, final = simulated
    rolled_back = [flag for flag in aa_flags() if finished[flag]["status"] == "tripped"]
    assert len(rolled_back) <= 5, rolled_back
    # The others went on to 100% and their guards passed: everyone now gets the variant.
    for flag in set(aa_flags()) - set(rolled_back):
        assert finished[flag]["status"] == "passed", (flag, finished[flag])
        assert finished[flag]["steps"] == ["applied", "applied"], flag
        assert final[flag] is True, flag
