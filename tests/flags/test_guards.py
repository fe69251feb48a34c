"""Guarded rollouts: guards set with a rollout, checked by the scheduler, stopping regressions."""

import logging
from datetime import UTC, datetime, timedelta
from unittest import mock

import numpy as np
import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from evaluation.documents import flag_state
from flags import guards, schedules
from flags.management.commands.run_scheduler import Command
from flags.models import AuditEntry, RolloutGuard, ScheduledChange, UnitEventDay, UnitExposure
from integrations import webhooks
from integrations.models import Delivery
from tests import factories

pytestmark = pytest.mark.django_db
SYSTEM = {"actor": None, "source": "cli"}
T0 = datetime(2026, 11, 2, 0, 0, tzinfo=UTC)
DAY = timedelta(days=1)
CONFIG = "/api/v1/projects/shop/flags/checkout/environments/production"


@pytest.fixture
def project():
    return factories.project("shop")


@pytest.fixture
def purchase(project):
    return factories.metric(project, "purchase", event="purchase", window_days=1)


def _rollout(flag, *guard_list, percentages=(50, 100)) -> str:
    steps = [{"at": T0 + 10 * DAY * i, "percentage": p} for i, p in enumerate(percentages)]
    config = factories.config(flag, "production")
    changes = schedules.rollout_create(
        config=config, variant="on", steps=steps, guards=list(guard_list), **SYSTEM
    )
    with mock.patch("django.utils.timezone.now", return_value=T0):
        schedules.due_changes_apply(now=T0)  # the first step, applied at T0
    return changes[0].rollout


def _units(flag, rng, batch: int, rates: dict[str, float], units: int) -> None:
    """`units` units a variant first exposed on day `batch`; each converts at its rate, in
    its window. Rows as the flush writes them, inserted in bulk (the simulations write
    about 70,000)."""
    environment = factories.environment(flag.project)
    adapt = connection.ops.adapt_datetimefield_value
    seen = T0 + batch * DAY + timedelta(hours=1)
    at = seen + timedelta(hours=2)
    exposed, converted = [], []
    for variant, rate in rates.items():
        names = [f"{flag.key}-{variant}-{batch}-{index}" for index in range(units)]
        exposed += [(environment.pk, flag.key, variant, name, adapt(seen)) for name in names]
        converted += [
            (environment.pk, "purchase", names[index], at.date(), adapt(at), adapt(at))
            for index in np.flatnonzero(rng.random(units) < rate)
        ]
    with connection.cursor() as cursor:
        cursor.executemany(
            f"INSERT INTO {UnitExposure._meta.db_table}"
            " (environment_id, flag_key, variant, unit, first_seen) VALUES (%s, %s, %s, %s, %s)",
            exposed,
        )
        cursor.executemany(
            f"INSERT INTO {UnitEventDay._meta.db_table} (environment_id, event, unit, day,"
            " count, valued, value_sum, value_squares, first_at, last_at)"
            " VALUES (%s, %s, %s, %s, 1, 0, 0.0, 0.0, %s, %s)",
            converted,
        )
        if connection.vendor == "postgresql":
            # What autovacuum does to tables that grow: without statistics the planner takes
            # them for empty and joins them row by row.
            cursor.execute(f"ANALYZE {UnitExposure._meta.db_table}, {UnitEventDay._meta.db_table}")


def _check_day(batch: int) -> datetime:
    """A check on which the units of days 0..batch have had their whole 1-day window."""
    return T0 + (batch + 2) * DAY + timedelta(hours=1)


def _serving(flag) -> dict:
    return flag_state(flag, factories.environment(flag.project))["defaultServe"]


# --- Setting guards -----------------------------------------------------------------------


def test_a_rollout_keeps_its_guards_with_its_variants(project, purchase):
    flag = factories.flag(project, "checkout")
    rollout = _rollout(flag, {"metric": "purchase", "tolerance": 5, "action": "pause"})

    guard = RolloutGuard.objects.get(rollout=rollout)
    assert (guard.metric, guard.tolerance, guard.action) == (purchase, 5.0, "pause")
    assert (guard.control_variant, guard.treatment_variant, guard.status) == ("off", "on", "active")
    entry = AuditEntry.objects.filter(action="rollout").latest("id")
    assert entry.after["guards"] == [{"metric": "purchase", "tolerance": 5.0, "action": "pause"}]


@pytest.mark.parametrize(
    ("guard", "field"),
    [
        ({"metric": "nope"}, "guards[0].metric"),
        ({"metric": 7}, "guards[0].metric"),
        ({"metric": "purchase", "tolerance": 100}, "guards[0].tolerance"),
        ({"metric": "purchase", "tolerance": -1}, "guards[0].tolerance"),
        ({"metric": "purchase", "tolerance": float("nan")}, "guards[0].tolerance"),
        ({"metric": "purchase", "tolerance": True}, "guards[0].tolerance"),
        ({"metric": "purchase", "action": "explode"}, "guards[0].action"),
        ({"metric": "purchase", "colour": "red"}, "guards[0].colour"),
        ({"metric": "pur\x00chase"}, "guards[0].metric"),
        ({"metric": "\ud800"}, "guards[0].metric"),
        ("purchase", "guards[0]"),
    ],
)
def test_a_guard_that_cannot_be_checked_refuses_the_rollout(project, purchase, guard, field):
    flag = factories.flag(project, "checkout")
    with pytest.raises(ValidationError) as error:
        _rollout(flag, guard)
    assert field in error.value.message_dict
    assert not ScheduledChange.objects.exists() and not RolloutGuard.objects.exists()


def test_a_metric_of_another_project_is_no_guard(project, purchase):
    other = factories.project("other")
    factories.metric(other, "signup", event="signup")
    with pytest.raises(ValidationError) as error:
        _rollout(factories.flag(project, "checkout"), {"metric": "signup"})
    assert "guards[0].metric" in error.value.message_dict


@pytest.mark.parametrize(
    ("guards_sent", "field"),
    [
        ([{"metric": "nope"}], "guards[0].metric"),
        ([{"metric": "purchase", "tolerance": 250}], "guards[0].tolerance"),
        ([{"metric": "purchase", "tolerance": "lots"}], "guards"),
        ([{"metric": "purchase", "unknown": 1}], "guards"),
        ([{"metric": "a\x00b"}], "guards"),
        ("purchase", "guards"),
        ([{"metric": "purchase"}] * 11, "guards"),
    ],
)
def test_the_api_refuses_a_bad_guard_naming_the_field(project, purchase, guards_sent, field):
    factories.flag(project, "checkout")
    api = APIClient()
    api.force_authenticate(factories.member(project, "admin"))
    body = {"variant": "on", "steps": [{"at": "2030-01-01T00:00:00Z", "percentage": 50}]}

    response = api.post(f"{CONFIG}/rollouts", {**body, "guards": guards_sent}, format="json")

    assert response.status_code == 400, response.content
    assert field in response.content.decode()
    assert not RolloutGuard.objects.exists()


def test_the_api_creates_a_guarded_rollout(project, purchase):
    factories.flag(project, "checkout")
    api = APIClient()
    api.force_authenticate(factories.member(project, "admin"))
    body = {
        "variant": "on",
        "steps": [{"at": "2030-01-01T00:00:00Z", "percentage": 50}],
        "guards": [{"metric": "purchase", "tolerance": 2.5}],
    }

    response = api.post(f"{CONFIG}/rollouts", body, format="json")

    assert response.status_code == 201, response.content
    guard = RolloutGuard.objects.get()
    assert (guard.rollout, guard.tolerance, guard.action) == (
        response.json()[0]["rollout"],
        2.5,
        "rollback",
    )


# --- The check ----------------------------------------------------------------------------


def test_a_clearly_worse_treatment_is_rolled_back_and_everyone_hears(project, purchase, caplog):
    flag = factories.flag(project, "checkout")
    webhook, _ = webhooks.webhook_create(
        project=project, data={"name": "ops", "url": "https://hooks.example.com/flags"}, **SYSTEM
    )
    rollout = _rollout(flag, {"metric": "purchase"})
    _units(flag, np.random.default_rng(1), 0, {"off": 0.30, "on": 0.10}, 1500)

    with caplog.at_level(logging.WARNING, logger="flags.guards"):
        tripped = guards.guards_check(_check_day(0))

    assert [guard.rollout for guard in tripped] == [rollout]
    assert _serving(flag) == {"variant": "off"}
    steps = ScheduledChange.objects.filter(rollout=rollout).order_by("run_at")
    assert [step.status for step in steps] == ["applied", "cancelled"]
    guard = RolloutGuard.objects.get()
    assert guard.status == "tripped" and guard.tripped_at == _check_day(0)
    assert guard.p_value is not None and guard.p_value <= 0.05
    entry = AuditEntry.objects.get(action="guard rollback")
    assert entry.after["metric"] == "purchase" and entry.after["p_value"] == guard.p_value
    change = AuditEntry.objects.get(action=f"rollback by guard #{guard.pk}")
    assert "purchase" in change.comment and "p=" in change.comment
    assert any("guard purchase" in r.message and r.levelname == "WARNING" for r in caplog.records)
    kinds = list(Delivery.objects.filter(webhook=webhook).values_list("event__kind", flat=True))
    assert "guarded_rollout.paused" in kinds
    event = Delivery.objects.get(event__kind="guarded_rollout.paused").event
    assert event.body["action"] == "rollback" and "purchase" in event.body["reason"]
    # Tripped once: the next pass leaves it alone, and the cancelled step never runs.
    assert guards.guards_check(_check_day(1)) == []
    schedules.due_changes_apply(now=T0 + 20 * DAY)
    assert _serving(flag) == {"variant": "off"}


def test_a_pausing_guard_only_cancels_the_steps_left(project, purchase):
    flag = factories.flag(project, "checkout")
    rollout = _rollout(flag, {"metric": "purchase", "action": "pause"})
    _units(flag, np.random.default_rng(2), 0, {"off": 0.30, "on": 0.10}, 1500)
    before = _serving(flag)

    assert len(guards.guards_check(_check_day(0))) == 1

    assert _serving(flag) == before and "rollout" in before
    assert ScheduledChange.objects.get(rollout=rollout, run_at=T0 + 10 * DAY).status == "cancelled"
    assert AuditEntry.objects.filter(action="guard pause").count() == 1


def test_an_equal_treatment_continues_and_its_guard_passes_at_the_end(project, purchase):
    flag = factories.flag(project, "checkout")
    rollout = _rollout(flag, {"metric": "purchase"})
    _units(flag, np.random.default_rng(3), 0, {"off": 0.20, "on": 0.20}, 1500)

    assert guards.guards_check(_check_day(0)) == []

    guard = RolloutGuard.objects.get()
    assert (guard.status, guard.decision, guard.checked_at) == ("active", "continue", _check_day(0))
    assert guard.p_value is not None and guard.p_value > 0.05
    schedules.due_changes_apply(now=T0 + 10 * DAY)
    assert ScheduledChange.objects.filter(rollout=rollout, status="applied").count() == 2
    guards.guards_check(T0 + 10 * DAY)
    assert RolloutGuard.objects.get().status == "passed"
    assert _serving(flag) == {"variant": "on"}


def test_units_whose_window_is_open_are_not_judged(project, purchase):
    """The treatment's youngest units have not converted yet: they must not count as worse."""
    flag = factories.flag(project, "checkout")
    _rollout(flag, {"metric": "purchase"})
    _units(flag, np.random.default_rng(4), 0, {"off": 0.30}, 1500)
    _units(flag, np.random.default_rng(5), 1, {"on": 0.0}, 1500)  # events still to come

    assert guards.guards_check(_check_day(0)) == []
    assert RolloutGuard.objects.get().p_value is None  # no treatment unit to judge yet


def test_the_scheduler_checks_guards_before_it_applies_the_next_step(project, purchase):
    flag = factories.flag(project, "checkout")
    rollout = _rollout(flag, {"metric": "purchase"}, percentages=(50, 60))
    _units(flag, np.random.default_rng(6), 0, {"off": 0.30, "on": 0.10}, 1500)
    command = Command()

    # The next step is due and the guard has data: the step must not be applied.
    with mock.patch("django.utils.timezone.now", return_value=T0 + 10 * DAY):
        assert command._pass(once=False) == []

    assert ScheduledChange.objects.get(rollout=rollout, run_at=T0 + 10 * DAY).status == "cancelled"
    assert _serving(flag) == {"variant": "off"}


# --- Simulated rollouts -------------------------------------------------------------------


def _simulate(project, rng, runs: int, rates: dict[str, float], units: int) -> int:
    """`runs` guarded rollouts side by side, checked by the scheduler's function after each of
    three days of units; how many were rolled back."""
    flags = [factories.flag(project, f"sim-{index}") for index in range(runs)]
    for flag in flags:
        _rollout(flag, {"metric": "purchase"})
    for batch in range(3):
        for flag in flags:
            _units(flag, rng, batch, rates, units)
        guards.guards_check(_check_day(batch))
    return RolloutGuard.objects.filter(status="tripped").count()


def test_at_most_5_of_100_aa_rollouts_are_rolled_back(project, purchase):
    rolled_back = _simulate(
        project, np.random.default_rng(20261203), 100, {"off": 0.1, "on": 0.1}, 100
    )

    assert rolled_back <= 5
    assert RolloutGuard.objects.filter(decision="continue").count() == 100 - rolled_back


def test_a_worse_treatment_is_rolled_back_in_most_simulated_rollouts(project, purchase):
    rolled_back = _simulate(project, np.random.default_rng(7), 20, {"off": 0.1, "on": 0.05}, 600)

    assert rolled_back >= 16


def test_the_versions_page_says_which_guard_rolled_back_and_when(project, purchase, client):
    flag = factories.flag(project, "checkout")
    _rollout(flag, {"metric": "purchase", "tolerance": 5})
    _units(flag, np.random.default_rng(8), 0, {"off": 0.30, "on": 0.10}, 1500)
    guards.guards_check(_check_day(0))
    client.force_login(factories.member(project, "editor"))
    config = factories.config(flag, "production")

    page = client.get(f"/admin/flags/changerequest/versions/{config.pk}/").content.decode()

    p_value = RolloutGuard.objects.get().p_value
    assert f"Rolled back\n  by guard purchase at {_check_day(0):%Y-%m-%d %H:%M} UTC" in page
    assert f"(p={p_value:.3g})" in page
    assert "rollback by guard" in page  # the version it wrote


def test_a_guard_checked_minutes_ago_is_not_queried_again(project, purchase):
    flag = factories.flag(project, "checkout")
    _rollout(flag, {"metric": "purchase"})
    _units(flag, np.random.default_rng(9), 0, {"off": 0.20, "on": 0.20}, 200)
    guards.guards_check(_check_day(0))

    with CaptureQueriesContext(connection) as queries:
        guards.guards_check(_check_day(0) + guards.CHECK_EVERY - timedelta(seconds=1))
    assert not any("uniteventday" in query["sql"] for query in queries.captured_queries)
    assert RolloutGuard.objects.get().checked_at == _check_day(0)

    guards.guards_check(_check_day(0) + guards.CHECK_EVERY)
    assert RolloutGuard.objects.get().checked_at == _check_day(0) + guards.CHECK_EVERY
