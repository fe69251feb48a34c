"""Change requests: an editor proposes a change to a protected environment, others review it.

A request records the version of what it changes (its base): a flag's configuration in one
environment, or, for a change that alters what protected environments serve without being
a write to one (a flag's variants or archived state, a segment), the flag or the segment.
It is applied only with `expected_version=base`, so a change made meanwhile makes it a
conflict; its author rebases it (re-reads and re-confirms) and it is reviewed again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from evaluation.documents import flag_state, segment_entry
from flags import impact, services
from flags.errors import NotFound
from flags.models import (
    AuditEntry,
    ChangeRequest,
    ChangeReview,
    Flag,
    FlagConfig,
    Project,
    ScheduledChange,
    Segment,
)
from flags.roles import Action, Role, authorize, person, role_of
from integrations import events

if TYPE_CHECKING:
    from datetime import datetime

    from flags.roles import Actor

Status = ChangeRequest.Status
LIVE = (Status.OPEN, Status.APPROVED)


def approvals_required() -> int:
    return max(1, int(getattr(settings, "CHANGE_REQUEST_APPROVALS", 1)))


Kind = ChangeRequest.Kind
RELATED = ("config__flag__project", "config__environment", "flag__project", "segment__project")


def _name(request: ChangeRequest) -> str:
    if request.kind == Kind.FLAG:
        return f"{request.flag.key}#{request.pk}"
    if request.kind == Kind.SEGMENT:
        return f"segment {request.segment.key}#{request.pk}"
    return f"{request.config.flag.key}/{request.config.environment.key}#{request.pk}"


def _audit(request: ChangeRequest, action: str, actor, source: str, **values) -> None:
    config = request.config
    flag_key = config.flag.key if config else (request.flag.key if request.flag else "")
    services.audit(
        actor=actor,
        source=source,
        action=action,
        obj_type="change_request",
        obj_key=_name(request),
        project=request.project,
        environment=config.environment if config else None,
        flag_key=flag_key,
        **values,
    )


def _locked(request: ChangeRequest) -> ChangeRequest:
    # Only the request's own row is locked: PostgreSQL cannot lock the nullable side of the
    # outer joins (a request is about a configuration, a flag or a segment).
    locked = ChangeRequest.objects.select_for_update(of=("self",)).select_related(*RELATED)
    return locked.get(pk=request.pk)


def current_version(request: ChangeRequest) -> int:
    """The version of what the request changes, now."""
    if request.kind == Kind.FLAG:
        return Flag.objects.filter(pk=request.flag_id).values_list("version", flat=True).get()
    if request.kind == Kind.SEGMENT:
        return Segment.objects.filter(pk=request.segment_id).values_list("version", flat=True).get()
    return request.config.version


def is_conflict(request: ChangeRequest) -> bool:
    """A live request written against a version that is no longer current."""
    return request.status in LIVE and request.base_version != current_version(request)


# --- Writes -------------------------------------------------------------------------------


@transaction.atomic
def change_request_create(
    *,
    config: FlagConfig,
    data: dict,
    title: str = "",
    scheduled_at: datetime | None = None,
    expected_version: int | None = None,
    actor: Actor,
    source: str,
    comment: str = "",
) -> ChangeRequest:
    """Propose `data` (what the configuration PATCH takes) for review; `comment` (why) goes
    into the audit entry of the proposal."""
    comment = services.checked_comment(comment)
    config = (
        FlagConfig.objects.select_for_update()
        .select_related("flag__project", "environment")
        .get(pk=config.pk)
    )
    authorize(actor, config.flag.project, Action.CONFIGURE)
    if actor is None:
        raise PermissionDenied("a change request is proposed by a person")
    if expected_version is not None and expected_version != config.version:
        raise services.ConflictError(
            f"{config} is at version {config.version}, not {expected_version}: "
            "reload and propose your change again",
            config.version,
        )
    if not data:
        raise ValidationError({"changes": "propose at least one change"})
    base_state = flag_state(config.flag, config.environment)
    proposed = services.change_preview(config=config, data=data)
    if proposed == base_state:
        raise ValidationError({"changes": "this changes nothing in the current configuration"})
    request = ChangeRequest.objects.create(
        config=config,
        author=person(actor),
        author_name=actor.get_username(),
        title=title,
        data=data,
        base_version=config.version,
        base_state=base_state,
        proposed_state=proposed,
        scheduled_at=scheduled_at,
    )
    _audit(request, "propose", actor, source, before=base_state, after=proposed, comment=comment)
    return request


class _Preview(Exception):
    def __init__(self, state: dict, measurement: impact.Measurement) -> None:
        self.state, self.measurement = state, measurement


def _preview(project: Project, write, read, *, flag_keys=(), segment_keys=()) -> tuple:
    """What `write` would make of the object and of protected environments' answers.

    Written by the services as the system in a savepoint and rolled back, like
    `services.change_preview`: their validation is the one that knows what is valid.
    """
    try:
        with transaction.atomic():
            with impact.measured(
                project, flag_keys=flag_keys, segment_keys=segment_keys
            ) as measurement:
                write()
            raise _Preview(read(), measurement)
    except _Preview as preview:
        return preview.state, preview.measurement


# A flag's own fields that change what it serves; the rest (name, tags, ...) never needs one.
FLAG_REQUEST_FIELDS = ("variants", "archived", "salt", "client_side")


def _indirect_create(
    *, kind: str, subject: Flag | Segment, data: dict, title: str, actor, source: str
) -> ChangeRequest:
    if actor is None or not actor.pk:
        raise PermissionDenied("a change request is proposed by a person")
    authorize(actor, subject.project, Action.EDIT_FLAGS)
    if not data:
        raise ValidationError({"changes": "propose at least one change"})
    if kind == Kind.FLAG:
        for field in set(data) - set(FLAG_REQUEST_FIELDS):
            raise ValidationError({field: "serves nothing new: change it directly"})
    subject = type(subject).objects.select_for_update().select_related("project").get(pk=subject.pk)
    base_version = subject.version  # read first: the preview bumps it (then rolls back)
    base_state, state, impact_json = _indirect_preview(kind, subject, data)
    if not impact_json:
        raise ValidationError(
            {"changes": "this changes nothing a protected environment serves: make it directly"}
        )
    request = ChangeRequest.objects.create(
        kind=kind,
        flag=subject if kind == Kind.FLAG else None,
        segment=subject if kind == Kind.SEGMENT else None,
        author=actor,
        author_name=actor.get_username(),
        title=title,
        data=data,
        base_version=base_version,
        base_state=base_state,
        proposed_state=state,
        impact=impact_json,
    )
    _audit(request, "propose", actor, source, before=base_state, after=state)
    return request


@transaction.atomic
def flag_change_request_create(
    *, flag: Flag, data: dict, title: str = "", actor: Actor, source: str
) -> ChangeRequest:
    """Propose a change to a flag's own fields (what `flag_update` takes) that alters what a
    protected environment serves: its variants' values, archived, salt, client-side."""
    return _indirect_create(
        kind=Kind.FLAG, subject=flag, data=data, title=title, actor=actor, source=source
    )


@transaction.atomic
def segment_change_request_create(
    *, segment: Segment, data: dict, title: str = "", actor: Actor, source: str
) -> ChangeRequest:
    """Propose a change to a segment that a protected environment's rules use."""
    return _indirect_create(
        kind=Kind.SEGMENT, subject=segment, data=data, title=title, actor=actor, source=source
    )


@transaction.atomic
def change_request_review(
    *,
    request: ChangeRequest,
    approve: bool,
    comment: str = "",
    actor: Actor,
    source: str,
) -> ChangeRequest:
    """Approve or reject; enough approvals apply the change (or schedule it for its time)."""
    request = _locked(request)
    if actor is None:
        raise PermissionDenied("a change request is reviewed by a person")
    authorize(actor, request.project, Action.CONFIGURE_PROTECTED)
    if request.author_id == actor.pk:
        raise PermissionDenied("you cannot review your own change request; ask someone else")
    if request.status != Status.OPEN:
        raise ValidationError({"status": f"the request is {request.status}, not open"})
    if request.reviews.filter(reviewer=person(actor), base_version=request.base_version).exists():
        raise ValidationError({"review": "you have already reviewed this request"})
    decision = ChangeReview.Decision.APPROVE if approve else ChangeReview.Decision.REJECT
    ChangeReview.objects.create(
        request=request,
        reviewer=person(actor),
        reviewer_name=actor.get_username(),
        decision=decision,
        base_version=request.base_version,
        comment=comment,
    )
    _audit(request, decision, actor, source, after={"comment": comment} if comment else None)
    if not approve:
        request.status = Status.REJECTED
        request.save(update_fields=["status", "updated_at"])
        return request
    if approvals_of(request) >= approvals_required():
        request.status = Status.APPROVED
        request.save(update_fields=["status", "updated_at"])
        events.change_request_approved(
            request=request, actor_name=actor.get_username(), source=source
        )
        _apply_or_schedule(request, actor, source)
    return request


def _apply_or_schedule(request: ChangeRequest, actor, source: str) -> None:
    if request.scheduled_at is not None and request.scheduled_at > timezone.now():
        ScheduledChange.objects.create(
            config=request.config,
            data=request.data,
            run_at=request.scheduled_at,
            request=request,
            created_by=actor,
            created_by_name=actor.get_username() if actor else "system",
        )
        return
    try:
        with transaction.atomic():
            change_request_apply(request=request, actor=actor, source=source)
    except services.ConflictError:
        pass  # stays approved and shows as a conflict until its author rebases it


def change_request_apply(*, request: ChangeRequest, actor, source: str) -> FlagConfig | None:
    """Apply an approved request on its base version (ConflictError if that moved on)."""
    if request.status != Status.APPROVED:
        raise ValidationError({"status": f"the request is {request.status}, not approved"})
    write: dict[str, Any] = {
        "data": request.data,
        "actor": actor,
        "source": source,
        "expected_version": request.base_version,
        "approved": True,
    }
    config = None
    if request.kind == Kind.FLAG:
        version = services.flag_update(flag=request.flag, **write).version
    elif request.kind == Kind.SEGMENT:
        version = services.segment_update(segment=request.segment, **write).version
    else:
        config = services.flag_config_update(
            config=request.config, action=f"apply request #{request.pk}", **write
        )
        version = config.version
    request.status = Status.APPLIED
    request.applied_version = version
    request.save(update_fields=["status", "applied_version", "updated_at"])
    _audit(request, "apply", actor, source, after={"version": version})
    return config


@transaction.atomic
def change_request_rebase(
    *, request: ChangeRequest, confirm: bool, actor: Actor, source: str
) -> ChangeRequest:
    """Move the request onto the current version; earlier reviews no longer count."""
    request = _locked(request)
    if actor is None or request.author_id != actor.pk:
        raise PermissionDenied("only the author of a change request rebases it")
    if request.status not in LIVE:
        raise ValidationError({"status": f"the request is {request.status}"})
    if request.base_version == current_version(request):
        raise ValidationError({"version": "the request is already based on the current version"})
    if not confirm:
        raise ValidationError(
            {"confirm": "compare your change with the current configuration, then confirm"}
        )
    before = {"base_version": request.base_version}
    if request.kind == Kind.CONFIG:
        config = FlagConfig.objects.select_for_update().get(pk=request.config_id)
        request.config = config
        request.base_version = config.version
        request.base_state = flag_state(config.flag, config.environment)
        request.proposed_state = services.change_preview(config=config, data=request.data)
    else:
        _rebase_indirect(request, actor, source)
    request.status = Status.OPEN
    request.save()
    request.schedule.filter(status=ScheduledChange.Status.PENDING).update(
        status=ScheduledChange.Status.CANCELLED
    )
    after = {"base_version": request.base_version}
    _audit(request, "rebase", actor, source, before=before, after=after)
    return request


def _rebase_indirect(request: ChangeRequest, actor, source: str) -> None:
    """Re-read the flag or segment and what the change now does to protected environments."""
    subject = request.flag if request.kind == Kind.FLAG else request.segment
    subject = type(subject).objects.select_for_update().get(pk=subject.pk)
    request.base_version = subject.version  # read first: the preview bumps it (then rolls back)
    fresh = _indirect_preview(request.kind, subject, request.data)
    request.base_state, request.proposed_state, request.impact = fresh


def _indirect_preview(kind: str, subject, data: dict) -> tuple[dict, dict, list]:
    system: dict[str, Any] = {"actor": None, "source": "system"}
    if kind == Kind.FLAG:
        base = services.flag_meta(subject)
        state, measurement = _preview(
            subject.project,
            lambda: services.flag_update(flag=subject, data=data, **system),
            lambda: services.flag_meta(Flag.objects.get(pk=subject.pk)),
            flag_keys=[subject.key],
        )
    else:
        base = segment_entry(subject)
        state, measurement = _preview(
            subject.project,
            lambda: services.segment_update(segment=subject, data=data, **system),
            lambda: segment_entry(Segment.objects.get(pk=subject.pk)),
            segment_keys=[subject.key],
        )
    return base, state, measurement.as_json()


@transaction.atomic
def change_request_cancel(*, request: ChangeRequest, actor: Actor, source: str) -> ChangeRequest:
    request = _locked(request)
    project = request.project
    if (
        actor is not None
        and request.author_id != actor.pk
        and role_of(actor, project) != Role.ADMIN
    ):
        raise PermissionDenied("only the author or a project admin cancels a change request")
    if request.status not in LIVE:
        raise ValidationError({"status": f"the request is {request.status}"})
    request.status = Status.CANCELLED
    request.save(update_fields=["status", "updated_at"])
    request.schedule.filter(status=ScheduledChange.Status.PENDING).update(
        status=ScheduledChange.Status.CANCELLED
    )
    _audit(request, "cancel", actor, source)
    return request


# --- Reads --------------------------------------------------------------------------------


def approvals_of(request: ChangeRequest) -> int:
    """Distinct approvals given for the request's current base."""
    reviews = request.reviews.filter(
        decision=ChangeReview.Decision.APPROVE, base_version=request.base_version
    )
    return reviews.values("reviewer").distinct().count()


def change_requests_of(
    *,
    project: Project,
    config: FlagConfig | None = None,
    flag: Flag | None = None,
    segment: Segment | None = None,
    status: str | None = None,
):
    requests = ChangeRequest.objects.filter(
        Q(config__flag__project=project) | Q(flag__project=project) | Q(segment__project=project)
    )
    if config is not None:
        requests = requests.filter(config=config)
    if flag is not None:
        requests = requests.filter(Q(flag=flag) | Q(config__flag=flag))
    if segment is not None:
        requests = requests.filter(segment=segment)
    if status:
        requests = requests.filter(status=status)
    return requests.select_related(*RELATED).prefetch_related("reviews")


def proposal_comment(request: ChangeRequest) -> str:
    """Why the request was opened, in its author's words (the proposal's audit entry)."""
    entry = (
        AuditEntry.objects.filter(
            object_type="change_request", action="propose", object_key=_name(request)
        )
        .exclude(comment="")
        .order_by("created_at")
        .first()
    )
    return entry.comment if entry is not None else ""


def change_request_for(project: Project, pk: int | str) -> ChangeRequest:
    request = (
        change_requests_of(project=project).filter(pk=pk).first() if str(pk).isdigit() else None
    )
    if request is None:
        raise NotFound("change request", pk, within=f"project {project.key!r}")
    return request
