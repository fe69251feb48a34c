"""Scheduled changes, gradual rollouts, the kill switch, and the worker step that applies them.

Due changes are claimed with `SELECT … FOR UPDATE SKIP LOCKED` (PostgreSQL), so several
workers share the queue and never apply one change twice: a worker locks a due row, applies
it through `flag_config_update` and marks it in the same transaction; the others skip the
locked row and, once it commits, no longer see it as pending. SQLite has no row locks (the
clause is a no-op there): run a single worker on the embedded default.

A change that cannot be applied is marked failed with the reason (and audited), whatever
went wrong, so one bad change never holds up the queue; only a database that is away stops
a pass, and the change stays pending for the next.
"""

from __future__ import annotations

import logging
import math
import uuid
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone

from flags import approvals, services
from flags.errors import NotFound
from flags.models import ChangeRequest, FlagConfig, Metric, RolloutGuard, ScheduledChange
from flags.roles import Action, authorize, check_direct_write
from flags.validation import check_text, find_text_problem

if TYPE_CHECKING:
    from flags.roles import Actor

Status = ScheduledChange.Status
SOURCE = "scheduler"
log = logging.getLogger(__name__)


def audit_schedule(config: FlagConfig, action: str, actor, source: str, **values) -> None:
    services.audit(
        actor=actor,
        source=source,
        action=action,
        obj_type="scheduled_change",
        obj_key=f"{config.flag.key}/{config.environment.key}",
        project=config.flag.project,
        environment=config.environment,
        flag_key=config.flag.key,
        **values,
    )


def config_with_project(config: FlagConfig) -> FlagConfig:
    return FlagConfig.objects.select_related("flag__project", "environment").get(pk=config.pk)


def _check_time(run_at: datetime, field: str) -> None:
    if not isinstance(run_at, datetime) or timezone.is_naive(run_at):
        raise ValidationError({field: "give a date-time with a time zone"})


def _new_change(config, data, run_at, actor, rollout: str = "") -> ScheduledChange:
    return ScheduledChange.objects.create(
        config=config,
        data=data,
        run_at=run_at,
        rollout=rollout,
        created_by=actor if actor is not None and actor.pk else None,
        created_by_name=actor.get_username() if actor is not None else "system",
    )


# --- Writes -------------------------------------------------------------------------------


@transaction.atomic
def schedule_create(
    *, config: FlagConfig, data: dict, run_at: datetime, actor: Actor, source: str
) -> ScheduledChange:
    """Apply `data` (what the configuration PATCH takes) at `run_at`."""
    config = config_with_project(config)
    authorize(actor, config.flag.project, Action.CONFIGURE, config.environment)
    check_direct_write(actor, config.flag, config.environment)
    _check_time(run_at, "at")
    if not data:
        raise ValidationError({"changes": "schedule at least one change"})
    services.change_preview(config=config, data=data)
    change = _new_change(config, data, run_at, actor)
    audit_schedule(
        config, "schedule", actor, source, after={"id": change.pk, "at": run_at.isoformat()}
    )
    return change


def rollout_control(config: FlagConfig, variant: str, towards: str | None) -> str:
    """What a rollout of `variant` serves everyone else: `towards`, or the off variant."""
    keys = [v.key for v in config.flag.variants.all()]
    if variant not in keys:
        raise ValidationError({"variant": f"unknown variant {variant!r} of {config.flag.key}"})
    rest = towards or next((key for key in (config.off_variant, *keys) if key != variant), None)
    if rest is None or rest not in keys or rest == variant:
        raise ValidationError({"from": "give another variant of the flag to roll out from"})
    return rest


MAX_STEPS = 20
MAX_HOURS_BETWEEN = 24 * 90


def percentages_from_text(text: str, field: str = "percentages") -> list[int]:
    """`5, 25, 100` as typed in the admin's box or on the command line -> [5, 25, 100]."""
    parts = [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    if not parts or len(parts) > MAX_STEPS:
        raise ValidationError(
            {field: f"1 to {MAX_STEPS} percentages separated by commas, e.g. 5, 25, 100"}
        )
    for part in parts:
        if not (part.isascii() and part.isdigit() and len(part) <= 3):
            raise ValidationError({field: f"whole numbers from 0 to 100, not {part[:20]!r}"})
    return [int(part) for part in parts]


def steps_every(
    percentages: list[int], *, hours: int, first: datetime, now: datetime
) -> list[dict]:
    """One step per percentage, `hours` apart from `first` (not in the past): the `steps`
    rollout_create takes."""
    if not 1 <= hours <= MAX_HOURS_BETWEEN:
        raise ValidationError({"every_hours": f"from 1 to {MAX_HOURS_BETWEEN} hours"})
    if first < now - timedelta(minutes=1):
        raise ValidationError({"start": "the first step cannot be in the past"})
    return [
        {"at": first + timedelta(hours=hours * index), "percentage": percentage}
        for index, percentage in enumerate(percentages)
    ]


def rollout_steps(config: FlagConfig, variant: str, towards: str | None, bucket_by: str, steps):
    """Each step {"at", "percentage"} -> the change serving `variant` to that share."""
    rest = rollout_control(config, variant, towards)
    if not isinstance(steps, list) or not steps:
        raise ValidationError({"steps": "give at least one step"})
    changes, last = [], None
    for index, step in enumerate(steps):
        at, percentage = step.get("at"), step.get("percentage")
        _check_time(at, f"steps[{index}].at")
        if not isinstance(percentage, int) or not 0 <= percentage <= 100:
            raise ValidationError({f"steps[{index}].percentage": "a whole number from 0 to 100"})
        if last is not None and at <= last:
            raise ValidationError({f"steps[{index}].at": "steps go forward in time"})
        last = at
        serve: dict[str, object]
        if percentage in (0, 100):
            serve = {"variant": variant if percentage == 100 else rest}
        else:
            weights = [
                {"variant": variant, "weight": percentage},
                {"variant": rest, "weight": 100 - percentage},
            ]
            serve = {"rollout": {"bucketBy": bucket_by, "variants": weights}}
        changes.append((at, {"enabled": True, "defaultServe": serve}))
    return changes


GUARD_FIELDS = {"metric", "tolerance", "action"}
MAX_GUARDS = 10


def rollout_guards(config: FlagConfig, guards) -> list[dict]:
    """Each guard {"metric": key, "tolerance": percent, "action": "rollback"|"pause"}, checked
    -> the fields of its RolloutGuard (without the rollout and its variants)."""
    check_text(guards, "guards")
    if not isinstance(guards, list) or len(guards) > MAX_GUARDS:
        raise ValidationError({"guards": f"a list of at most {MAX_GUARDS} guards"})
    return [guard_fields(config, guard, f"guards[{index}].") for index, guard in enumerate(guards)]


def guard_fields(config: FlagConfig, guard, where: str = "", partial: bool = False) -> dict:
    """One guard's {"metric", "tolerance", "action"} checked -> its RolloutGuard fields; with
    `partial`, only those given (an edit). Errors name the field after `where`."""
    found = find_text_problem(guard, where.rstrip("."))
    if found is not None:
        raise ValidationError({found[0].lstrip(".") or "body": found[1]})
    if not isinstance(guard, dict):
        raise ValidationError({where.rstrip(".") or "body": "a guard is an object with a metric"})
    unknown = sorted(set(guard) - GUARD_FIELDS)
    if unknown:
        raise ValidationError({f"{where}{unknown[0]}": "unknown field"})
    checked: dict = {}
    if not partial or "metric" in guard:
        key = guard.get("metric")
        metric = (
            Metric.objects.filter(project=config.flag.project, key=key).first()
            if isinstance(key, str)
            else None
        )
        if metric is None:
            raise ValidationError({f"{where}metric": f"no metric {key!r} in this project"})
        checked["metric"] = metric
    if not partial or "tolerance" in guard:
        tolerance = guard.get("tolerance", 0)
        if (
            not isinstance(tolerance, int | float)
            or isinstance(tolerance, bool)
            or not math.isfinite(tolerance)
            or not 0 <= tolerance < 100
        ):
            raise ValidationError({f"{where}tolerance": "a percentage from 0 to below 100"})
        checked["tolerance"] = float(tolerance)
    if not partial or "action" in guard:
        action = guard.get("action", RolloutGuard.Action.ROLLBACK)
        if action not in RolloutGuard.Action.values:
            choices = ", ".join(RolloutGuard.Action.values)
            raise ValidationError({f"{where}action": f"one of {choices}"})
        checked["action"] = action
    return checked


@transaction.atomic
def rollout_create(
    *,
    config: FlagConfig,
    variant: str,
    steps: list[dict],
    towards: str | None = None,
    bucket_by: str = "targetingKey",
    guards: list[dict] | None = None,
    actor: Actor,
    source: str,
) -> list[ScheduledChange]:
    """Serve `variant` to a growing share of contexts, one scheduled change per step.

    The rest get `towards` (by default the off variant). The same `bucketBy` keeps a
    context that got the variant at 5 % in it at 25 % (bucketing is stable). Each of
    `guards` (`rollout_guards`) is checked before each step (`flags.guards.guards_check`).
    """
    config = config_with_project(config)
    authorize(actor, config.flag.project, Action.CONFIGURE, config.environment)
    check_direct_write(actor, config.flag, config.environment)
    planned = rollout_steps(config, variant, towards, bucket_by, steps)
    checked_guards = rollout_guards(config, guards or [])
    services.change_preview(config=config, data=planned[0][1])
    rollout = uuid.uuid4().hex[:12]
    changes = [_new_change(config, data, at, actor, rollout) for at, data in planned]
    control = rollout_control(config, variant, towards)
    for guard in checked_guards:
        RolloutGuard.objects.create(
            config=config,
            rollout=rollout,
            control_variant=control,
            treatment_variant=variant,
            **guard,
        )
    audit_schedule(
        config,
        "rollout",
        actor,
        source,
        after={
            "rollout": rollout,
            "variant": variant,
            "steps": [
                {"at": at.isoformat(), "percentage": s["percentage"]}
                for (at, _), s in zip(planned, steps, strict=True)
            ],
            "guards": [
                {"metric": g["metric"].key, "tolerance": g["tolerance"], "action": g["action"]}
                for g in checked_guards
            ],
        },
    )
    return changes


@transaction.atomic
def schedule_cancel(*, change: ScheduledChange, actor: Actor, source: str) -> ScheduledChange:
    change = ScheduledChange.objects.select_for_update().get(pk=change.pk)
    config = config_with_project(change.config)
    authorize(actor, config.flag.project, Action.CONFIGURE, config.environment)
    if change.status != Status.PENDING:
        raise ValidationError({"status": f"the change is {change.status}, not pending"})
    change.status = Status.CANCELLED
    change.save(update_fields=["status"])
    audit_schedule(config, "cancel", actor, source, before={"id": change.pk})
    return change


@transaction.atomic
def flag_kill(*, config: FlagConfig, actor: Actor, source: str, comment: str = "") -> FlagConfig:
    """Turn the flag off here now and cancel what was scheduled here; no request needed."""
    comment = services.checked_comment(comment)
    config = config_with_project(config)
    authorize(actor, config.flag.project, Action.CONFIGURE, config.environment)
    # Lock the pending changes before the configuration, in the worker's order, so a step
    # being applied right now finishes first and is then overridden, never deadlocked.
    pending = list(
        ScheduledChange.objects.select_for_update()
        .filter(config=config, status=Status.PENDING)
        .values_list("pk", "request_id")
    )
    ids = [pk for pk, _ in pending]
    ScheduledChange.objects.filter(pk__in=ids).update(status=Status.CANCELLED)
    requests = [request for _, request in pending if request]
    ChangeRequest.objects.filter(pk__in=requests).update(status=ChangeRequest.Status.CANCELLED)
    version = config.version
    config = services.flag_config_update(
        config=config,
        data={"enabled": False},
        actor=actor,
        source=source,
        action="kill",
        approved=True,
        comment=comment,
    )
    if config.version == version or ids:
        # Already off, or schedules cancelled: the kill itself is on record either way.
        after = {"cancelled": ids, "version": config.version}
        audit_schedule(config, "kill", actor, source, after=after, comment=comment)
    return config


# --- The worker's step --------------------------------------------------------------------


def _apply(change: ScheduledChange) -> FlagConfig:
    if change.request_id and change.request is not None:
        applied = approvals.change_request_apply(request=change.request, actor=None, source=SOURCE)
        # A scheduled request is always one environment's configuration: `applied` is it.
        return applied if applied is not None else FlagConfig.objects.get(pk=change.config_id)
    action = "rollout step" if change.rollout else "scheduled change"
    return services.flag_config_update(
        config=change.config,
        data=change.data,
        actor=None,
        source=SOURCE,
        action=f"{action} #{change.pk}",
        approved=True,
    )


def error_reason(error: Exception) -> str:
    if isinstance(error, ValidationError) and hasattr(error, "error_dict"):
        return "; ".join(f"{field}: {m}" for field, ms in error.message_dict.items() for m in ms)
    return "; ".join(getattr(error, "messages", None) or [str(error)])


def due_change_apply(now: datetime | None = None) -> ScheduledChange | None:
    """Claim the next due change, apply it and mark it, in one transaction; None if none."""
    now = now or timezone.now()
    with transaction.atomic():
        change = (
            ScheduledChange.objects.select_for_update(skip_locked=True, of=("self",))
            .filter(status=Status.PENDING, run_at__lte=now)
            .select_related("config__flag__project", "config__environment", "request")
            .order_by("run_at", "id")
            .first()
        )
        if change is None:
            return None
        try:
            with transaction.atomic():
                config = _apply(change)
        except (ValidationError, PermissionDenied, services.ConflictError) as error:
            _mark_failed(change, error_reason(error))
        except (OperationalError, InterfaceError):
            raise  # the database is away: the change stays pending for the next pass
        except Exception as error:
            # Anything else is this change's own problem (data the store refuses, a bug
            # it triggers): left pending it would be claimed first on every pass and hold
            # up every change behind it, so it fails with the reason and the queue moves on.
            log.exception("scheduled change #%s could not be applied", change.pk)
            _mark_failed(change, f"could not be applied: {type(error).__name__}: {error}")
        else:
            change.status = Status.APPLIED
            change.applied_version = config.version
        change.applied_at = timezone.now()
        change.save(update_fields=["status", "applied_version", "applied_at", "error"])
        return change


def _mark_failed(change: ScheduledChange, reason: str) -> None:
    # The reason may quote the data that failed: keep it storable (no NUL, no surrogate).
    reason = reason.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()[:2000]
    change.status = Status.FAILED
    change.error = reason
    audit_schedule(change.config, "fail", None, SOURCE, after={"id": change.pk, "error": reason})


def due_changes_apply(now: datetime | None = None, limit: int = 1000) -> list[ScheduledChange]:
    """Apply every change due at `now` (up to `limit`), oldest first."""
    applied = []
    for _ in range(limit):
        change = due_change_apply(now)
        if change is None:
            break
        applied.append(change)
    return applied


# --- Reads --------------------------------------------------------------------------------


def schedule_of(config: FlagConfig, pending_only: bool = False):
    changes = config.schedule.all()
    if pending_only:
        changes = changes.filter(status=Status.PENDING)
    return changes.order_by("run_at", "id")


def scheduled_change_for(config: FlagConfig, pk: object) -> ScheduledChange:
    """One scheduled change of a configuration, by id; NotFound otherwise."""
    text = str(pk)
    fits = text.isascii() and text.isdigit() and len(text) <= 18
    change = config.schedule.filter(pk=int(text)).first() if fits else None
    if change is None:
        raise NotFound(
            "scheduled change", pk, within=f"{config.flag.key} in {config.environment.key}"
        )
    return change
