"""Guarded rollouts: the scheduler's check of each guard metric, and what a regression does.

Before the scheduler applies due changes it calls `guards_check`: for each active guard of a
rollout with steps still pending, the cumulative totals of both variants since the
rollout's first step (one query, `flags.experiments.flag_metric_totals`) go to
`flags.statistics.guard_check`, a sequential test that stays valid however often it is
called. On a regression the guard rolls the configuration back to the control (through
`flag_config_update`) or only pauses the rollout, cancels its pending steps, and says so:
an audit entry, a WARNING line in the log, and the `guarded_rollout.paused` webhook event.
`guard_create`, `guard_update` and `guard_delete` are the one way the admin, the API and the
command line add, edit and remove a guard of a running rollout, with the role and approval
checks of any change to what the environment serves. docs/safe-rollouts.md describes it for
users.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from flags import schedules, services
from flags.errors import NotFound
from flags.experiments import flag_metric_totals, statistics_totals, window_open_since
from flags.models import FlagConfig, RolloutGuard, ScheduledChange
from flags.roles import Action, authorize, check_direct_write
from flags.statistics import (
    DEFAULT_ALPHA,
    DEFAULT_MINIMUM_UNITS,
    Better,
    Decision,
    GuardCheck,
    guard_check,
)
from flags.validation import check_text
from integrations import events

# A guard counts units whose metric window has closed, which happens at the end of a day
# (UTC): checking each guard on every pass (5 s) would rerun its query for the same answer.
CHECK_EVERY = timedelta(minutes=5)
Status = RolloutGuard.Status
Pending = ScheduledChange.Status.PENDING
log = logging.getLogger(__name__)


def guard_totals(guard: RolloutGuard, now: datetime):
    """The control's and the treatment's totals for the guard's metric, as of `now`.

    Units count from the rollout's first applied step (or the edit that restarted the
    test, if later), and only once their metric window
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
    if guard.restarted_at is not None:
        first = max(first, guard.restarted_at)  # an edit restarted the test (`guard_update`)
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


# --- Adding, editing and removing a guard of a running rollout ----------------------------


def _writable(config: FlagConfig, actor) -> FlagConfig:
    """The configuration, once `actor` may change what its environment serves directly."""
    config = schedules.config_with_project(config)
    authorize(actor, config.flag.project, Action.CONFIGURE, config.environment)
    check_direct_write(actor, config.flag, config.environment)
    return config


def _step_variants(data: dict) -> list[str]:
    serve = data.get("defaultServe") or {}
    if "variant" in serve:
        return [serve["variant"]]
    return [item["variant"] for item in serve.get("rollout", {}).get("variants", [])]


def rollout_variants(config: FlagConfig, rollout: str) -> tuple[str, str]:
    """(control, treatment) of a rollout: its guards', else what its steps serve.

    A split step lists the rolled-out variant first (`schedules.rollout_steps`); a rollout of
    whole steps only (0 % and 100 %) serves the control at 0 %, else the off variant.
    """
    guard = RolloutGuard.objects.filter(config=config, rollout=rollout).first()
    if guard is not None:
        return guard.control_variant, guard.treatment_variant
    steps = list(ScheduledChange.objects.filter(config=config, rollout=rollout))
    for step in steps:
        served = _step_variants(step.data)
        if len(served) == 2:
            return served[1], served[0]
    served = [variant for step in steps for variant in _step_variants(step.data)]
    treatment = served[-1]
    control = next((v for v in served if v != treatment), None)
    return control or schedules.rollout_control(config, treatment, None), treatment


def running_rollouts(config: FlagConfig) -> list[dict]:
    """The configuration's rollouts with steps pending (those a guard can be added to)."""
    pending = schedules.schedule_of(config, pending_only=True).exclude(rollout="")
    rollouts: dict[str, dict] = {}
    for step in pending:
        rollouts.setdefault(step.rollout, {"rollout": step.rollout, "pending": 0})
        rollouts[step.rollout]["pending"] += 1
    for item in rollouts.values():
        item["control"], item["treatment"] = rollout_variants(config, item["rollout"])
    return list(rollouts.values())


def _guard_audit(guard: RolloutGuard) -> dict:
    return {
        "guard": guard.pk,
        "rollout": guard.rollout,
        "metric": guard.metric.key,
        "tolerance": guard.tolerance,
        "action": guard.action,
    }


@transaction.atomic
def guard_create(
    *, config: FlagConfig, rollout: str, data: dict, actor, source: str
) -> RolloutGuard:
    """Add a guard ({"metric", "tolerance", "action"}) to a rollout with steps pending.

    It counts units from the rollout's first step, like the guards set with the rollout:
    the test stays valid whenever its first look is.
    """
    config = _writable(config, actor)
    if not isinstance(rollout, str) or not rollout:
        raise ValidationError({"rollout": "give the id of a rollout of this configuration"})
    check_text(rollout, "rollout")
    pending = schedules.schedule_of(config, pending_only=True).filter(rollout=rollout)
    if not pending.exists():
        raise ValidationError(
            {"rollout": f"no rollout {rollout[:40]!r} with steps pending in {config}"}
        )
    fields = schedules.guard_fields(config, data)
    running = RolloutGuard.objects.filter(config=config, rollout=rollout, status=Status.ACTIVE)
    if running.count() >= schedules.MAX_GUARDS:
        raise ValidationError({"rollout": f"a rollout has at most {schedules.MAX_GUARDS} guards"})
    control, treatment = rollout_variants(config, rollout)
    guard = RolloutGuard.objects.create(
        config=config,
        rollout=rollout,
        control_variant=control,
        treatment_variant=treatment,
        **fields,
    )
    schedules.audit_schedule(config, "guard add", actor, source, after=_guard_audit(guard))
    return guard


def _locked(guard: RolloutGuard) -> RolloutGuard:
    return (
        RolloutGuard.objects.select_for_update(of=("self",))
        .select_related("metric")
        .get(pk=guard.pk)
    )


@transaction.atomic
def guard_update(
    *, guard: RolloutGuard, data: dict, actor, source: str, now: datetime | None = None
) -> RolloutGuard:
    """Change a running guard's metric, tolerance or action (only those given).

    A new metric or tolerance restarts the test at `now`: it then counts only units first
    exposed since, and forgets its last check. Choosing the hypothesis after seeing the data
    would void the test's promise (a variant within tolerance stopped at most 5% of the
    time); a new action changes nothing the test computes, so it goes on.
    """
    config = _writable(guard.config, actor)
    guard = _locked(guard)
    if guard.status != Status.ACTIVE:
        raise ValidationError({"status": f"the guard is {guard.status}: only a running one"})
    if not isinstance(data, dict) or not data:
        raise ValidationError({"body": "give a metric, a tolerance or an action to change"})
    fields = schedules.guard_fields(config, data, partial=True)
    before = _guard_audit(guard)
    changed = {name for name, value in fields.items() if getattr(guard, name) != value}
    for name, value in fields.items():
        setattr(guard, name, value)
    restarted = bool(changed & {"metric", "tolerance"})
    if restarted:
        guard.restarted_at = now or timezone.now()
        guard.checked_at, guard.decision, guard.p_value = None, "", None
    guard.save()
    after = {**_guard_audit(guard), "restarted": restarted}
    schedules.audit_schedule(config, "guard edit", actor, source, before=before, after=after)
    return guard


@transaction.atomic
def guard_delete(*, guard: RolloutGuard, actor, source: str) -> None:
    """Remove a guard: its rollout goes on without it (audited with what it was)."""
    config = _writable(guard.config, actor)
    guard = _locked(guard)
    before = _guard_audit(guard)
    guard.delete()
    schedules.audit_schedule(config, "guard remove", actor, source, before=before)


# --- Reads --------------------------------------------------------------------------------


def guard_for(config: FlagConfig, pk: object) -> RolloutGuard:
    """One guard of a configuration, by id; NotFound otherwise."""
    guard = (
        config.guards.select_related("metric").filter(pk=int(str(pk))).first()
        if str(pk).isascii() and str(pk).isdigit() and len(str(pk)) <= 18
        else None
    )
    if guard is None:
        raise NotFound("guard", pk, within=f"{config.flag.key} in {config.environment.key}")
    return guard


def guard_state(guard: RolloutGuard) -> str:
    """What the guard is doing and what its statistic says, in plain words."""
    if guard.status == Status.TRIPPED:
        done = "Rolled back" if guard.action == RolloutGuard.Action.ROLLBACK else "Paused"
        return (
            f"{done} at {guard.tripped_at:%Y-%m-%d %H:%M} UTC: {guard.treatment_variant} did "
            f"worse than {guard.control_variant} beyond the {guard.tolerance:g}% tolerated "
            f"(p = {guard.p_value:.3g}; a guard stops at p ≤ {DEFAULT_ALPHA:g})."
        )
    if guard.status == Status.PASSED:
        return "Passed: every step was applied without a regression."
    if guard.status == Status.STOPPED:
        return "Stopped: the rollout ended otherwise (cancelled, killed or another guard)."
    since = (
        f" Test restarted {guard.restarted_at:%Y-%m-%d %H:%M} UTC by an edit: it counts units "
        "first exposed since then."
        if guard.restarted_at
        else ""
    )
    if guard.checked_at is None:
        first = " It counts units first exposed since the rollout's first step."
        return f"Checking: not checked yet.{since or first}"
    when = f"last check {guard.checked_at:%Y-%m-%d %H:%M} UTC"
    if guard.p_value is None:
        return (
            f"Checking ({when}): waiting for {DEFAULT_MINIMUM_UNITS} units in each variant "
            f"whose metric window has closed.{since}"
        )
    return (
        f"Checking ({when}): no regression shown yet (p = {guard.p_value:.3g}; the rollout "
        f"stops at p ≤ {DEFAULT_ALPHA:g} with {guard.treatment_variant} doing worse).{since}"
    )
