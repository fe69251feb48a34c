"""Guarded rollouts: the scheduler's check of each guard metric, and what a regression does.

Before the scheduler applies due changes it calls `guards_check`: for each active guard of a
rollout with steps still pending, the cumulative totals of both variants since the
rollout's first step (one query, `flags.experiments.flag_metric_totals`) go to
`flags.statistics.guard_check`, a sequential test that stays valid however often it is
called. On a regression the guard rolls the configuration back to the control (through
`flag_config_update`) or only pauses the rollout, cancels its pending steps, and says so:
an audit entry, a WARNING line in the log, and the `guarded_rollout.paused` webhook event.
docs/safe-rollouts.md describes it for users.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from flags import schedules, services
from flags.experiments import flag_metric_totals, statistics_totals, window_open_since
from flags.models import FlagConfig, RolloutGuard, ScheduledChange
from flags.statistics import Better, Decision, GuardCheck, guard_check
from integrations import events

# A guard counts units whose metric window has closed, which happens at the end of a day
# (UTC): checking each guard on every pass (5 s) would rerun its query for the same answer.
CHECK_EVERY = timedelta(minutes=5)
Status = RolloutGuard.Status
Pending = ScheduledChange.Status.PENDING
log = logging.getLogger(__name__)


def guard_totals(guard: RolloutGuard, now: datetime):
    """The control's and the treatment's totals for the guard's metric, as of `now`.

    Units count from the rollout's first applied step, and only once their metric window
    has closed: a stepped rollout's treatment units are younger than the control's, and
    counting their open windows as "no conversion yet" would make it look worse for nothing
    (docs/experiment-statistics.md, "What the totals must be"). None before the first step.
    """
    first = (
        ScheduledChange.objects.filter(rollout=guard.rollout, config_id=guard.config_id)
        .exclude(applied_at=None)
        .order_by("applied_at")
        .values_list("applied_at", flat=True)
        .first()
    )
    if first is None:
        return None
    metric = guard.metric
    stop = min(now, window_open_since(metric, now) - timedelta(microseconds=1))
    totals, _ = flag_metric_totals(
        guard.config.environment_id, guard.config.flag.key, metric, start=first, stop=stop, now=now
    )
    return (
        statistics_totals(metric, totals.get(guard.control_variant)),
        statistics_totals(metric, totals.get(guard.treatment_variant)),
    )


def _reason(guard: RolloutGuard, check: GuardCheck) -> str:
    return (
        f"guard {guard.metric.key}: {guard.treatment_variant} worse than "
        f"{guard.control_variant} beyond {guard.tolerance:g}% (p={check.p_value:.3g})"
    )


def _trip(guard: RolloutGuard, check: GuardCheck, now: datetime) -> None:
    config = schedules.config_with_project(guard.config)
    reason = _reason(guard, check)
    action = guard.action
    rollback_error = ""
    if action == RolloutGuard.Action.ROLLBACK:
        try:
            with transaction.atomic():
                config = services.flag_config_update(
                    config=config,
                    data={"defaultServe": {"variant": guard.control_variant}},
                    actor=None,
                    source=schedules.SOURCE,
                    action=f"rollback by guard #{guard.pk}",
                    approved=True,
                    comment=reason,
                )
        except (ValidationError, PermissionDenied, services.ConflictError) as error:
            # The control can no longer be served (say it was removed): the rollout still
            # stops, and the audit entry says why it was not rolled back.
            rollback_error = schedules.error_reason(error)
            action = RolloutGuard.Action.PAUSE
    pending = schedules.schedule_of(config, pending_only=True).filter(rollout=guard.rollout)
    cancelled = [
        schedules.schedule_cancel(change=change, actor=None, source=schedules.SOURCE).pk
        for change in pending
    ]
    guard.status, guard.tripped_at = Status.TRIPPED, now
    guard.save(update_fields=["status", "tripped_at"])
    after = {
        "guard": guard.pk,
        "rollout": guard.rollout,
        "metric": guard.metric.key,
        "p_value": check.p_value,
        "action": action,
        "cancelled": cancelled,
    }
    if rollback_error:
        after["rollback_error"] = rollback_error
    schedules.audit_schedule(config, f"guard {action}", None, schedules.SOURCE, after=after)
    events.guarded_rollout_paused(
        config=config, reason=reason, source=schedules.SOURCE, action=action
    )
    log.warning("rollout %s of %s: %s, %s", guard.rollout, config, reason, action)


def guard_check_one(guard: RolloutGuard, now: datetime) -> GuardCheck | None:
    """Check one guard and act on a regression, in one transaction; None before any step."""
    with transaction.atomic():
        locked = (
            RolloutGuard.objects.select_for_update(skip_locked=True, of=("self",))
            .select_related("config__flag__project", "config__environment", "metric")
            .filter(pk=guard.pk, status=Status.ACTIVE)
            .first()
        )
        if locked is None:
            return None  # another worker has it, or it tripped meanwhile
        guard = locked
        totals = guard_totals(guard, now)
        if totals is None:
            return None
        check = guard_check(
            *totals, better=Better(guard.metric.better), relative_tolerance=guard.tolerance / 100
        )
        guard.checked_at, guard.decision, guard.p_value = now, check.decision, check.p_value
        guard.save(update_fields=["checked_at", "decision", "p_value"])
        if check.decision is Decision.REGRESSION:
            _trip(guard, check, now)
        return check


def _end_finished(guards) -> None:
    """Active guards of rollouts with no step left: passed if every step was applied."""
    for guard in guards:
        steps = ScheduledChange.objects.filter(rollout=guard.rollout, config_id=guard.config_id)
        applied = not steps.exclude(status=ScheduledChange.Status.APPLIED).exists()
        guard.status = Status.PASSED if applied else Status.STOPPED
        guard.save(update_fields=["status"])


def guards_check(now: datetime | None = None) -> list[RolloutGuard]:
    """Check every active guard of a rollout with pending steps (not checked in the last
    CHECK_EVERY); the guards that tripped.

    A guard whose check fails for its own reasons is logged and skipped (the next pass tries
    it again); only a database that is away stops the pass.
    """
    now = now or timezone.now()
    active = RolloutGuard.objects.filter(status=Status.ACTIVE)
    pending = ScheduledChange.objects.filter(status=Pending).exclude(rollout="")
    _end_finished(active.exclude(rollout__in=pending.values("rollout")))
    tripped = []
    due = active.filter(rollout__in=pending.values("rollout")).exclude(
        checked_at__gt=now - CHECK_EVERY
    )
    for guard in due.order_by("id"):
        try:
            check = guard_check_one(guard, now)
        except (OperationalError, InterfaceError):
            raise
        except Exception:
            log.exception("guard #%s of rollout %s could not be checked", guard.pk, guard.rollout)
            continue
        if check is not None and check.decision is Decision.REGRESSION:
            tripped.append(guard)
    return tripped


def guards_of(config: FlagConfig):
    """The guards of a configuration's rollouts, newest first (the versions page shows them)."""
    return config.guards.select_related("metric").order_by("-id")
