"""Change requests: an editor proposes a change to a protected environment, others review it.

A request records the configuration version it was written against (its base). It is
applied only with `expected_version=base`, so a configuration changed meanwhile makes it a
conflict; its author rebases it (re-reads and re-confirms) and it is reviewed again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.conf import settings
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404
from django.utils import timezone

from evaluation.documents import flag_state
from flags import history, services
from flags.models import ChangeRequest, ChangeReview, FlagConfig, Project, ScheduledChange
from flags.roles import Action, Role, authorize, role_of
from integrations import events

if TYPE_CHECKING:
    from datetime import datetime

    from django.contrib.auth.models import AbstractBaseUser

Status = ChangeRequest.Status
LIVE = (Status.OPEN, Status.APPROVED)


def approvals_required() -> int:
    return max(1, int(getattr(settings, "CHANGE_REQUEST_APPROVALS", 1)))


def _name(request: ChangeRequest) -> str:
    return f"{request.config.flag.key}/{request.config.environment.key}#{request.pk}"


def _audit(request: ChangeRequest, action: str, actor, source: str, **values) -> None:
    config = request.config
    services.audit(
        actor=actor,
        source=source,
        action=action,
        obj_type="change_request",
        obj_key=_name(request),
        project=config.flag.project,
        environment=config.environment,
        flag_key=config.flag.key,
        **values,
    )


def _locked(request: ChangeRequest) -> ChangeRequest:
    return (
        ChangeRequest.objects.select_for_update()
        .select_related("config__flag__project", "config__environment")
        .get(pk=request.pk)
    )


def is_conflict(request: ChangeRequest) -> bool:
    """A live request written against a version that is no longer current."""
    return request.status in LIVE and request.base_version != request.config.version


# --- Writes -------------------------------------------------------------------------------


@transaction.atomic
def change_request_create(
    *,
    config: FlagConfig,
    data: dict,
    title: str = "",
    scheduled_at: datetime | None = None,
    expected_version: int | None = None,
    actor: AbstractBaseUser | None,
    source: str,
) -> ChangeRequest:
    """Propose `data` (what the configuration PATCH takes) for review."""
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
    proposed = history.change_preview(config=config, data=data)
    if proposed == base_state:
        raise ValidationError({"changes": "this changes nothing in the current configuration"})
    request = ChangeRequest.objects.create(
        config=config,
        author=actor,
        author_name=actor.get_username(),
        title=title,
        data=data,
        base_version=config.version,
        base_state=base_state,
        proposed_state=proposed,
        scheduled_at=scheduled_at,
    )
    _audit(request, "propose", actor, source, before=base_state, after=proposed)
    return request


@transaction.atomic
def change_request_review(
    *,
    request: ChangeRequest,
    approve: bool,
    comment: str = "",
    actor: AbstractBaseUser | None,
    source: str,
) -> ChangeRequest:
    """Approve or reject; enough approvals apply the change (or schedule it for its time)."""
    request = _locked(request)
    config = request.config
    if actor is None:
        raise PermissionDenied("a change request is reviewed by a person")
    authorize(actor, config.flag.project, Action.CONFIGURE_PROTECTED)
    if request.author_id == actor.pk:
        raise PermissionDenied("you cannot review your own change request; ask someone else")
    if request.status != Status.OPEN:
        raise ValidationError({"status": f"the request is {request.status}, not open"})
    if request.reviews.filter(reviewer=actor, base_version=request.base_version).exists():
        raise ValidationError({"review": "you have already reviewed this request"})
    decision = ChangeReview.Decision.APPROVE if approve else ChangeReview.Decision.REJECT
    ChangeReview.objects.create(
        request=request,
        reviewer=actor,
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


def change_request_apply(*, request: ChangeRequest, actor, source: str) -> FlagConfig:
    """Apply an approved request on its base version (ConflictError if that moved on)."""
    if request.status != Status.APPROVED:
        raise ValidationError({"status": f"the request is {request.status}, not approved"})
    config = services.flag_config_update(
        config=request.config,
        data=request.data,
        actor=actor,
        source=source,
        expected_version=request.base_version,
        action=f"apply request #{request.pk}",
        approved=True,
    )
    request.status = Status.APPLIED
    request.applied_version = config.version
    request.save(update_fields=["status", "applied_version", "updated_at"])
    _audit(request, "apply", actor, source, after={"version": config.version})
    return config


@transaction.atomic
def change_request_rebase(
    *, request: ChangeRequest, confirm: bool, actor: AbstractBaseUser | None, source: str
) -> ChangeRequest:
    """Move the request onto the current version; earlier reviews no longer count."""
    request = _locked(request)
    if actor is None or request.author_id != actor.pk:
        raise PermissionDenied("only the author of a change request rebases it")
    if request.status not in LIVE:
        raise ValidationError({"status": f"the request is {request.status}"})
    config = FlagConfig.objects.select_for_update().get(pk=request.config_id)
    if request.base_version == config.version:
        raise ValidationError({"version": "the request is already based on the current version"})
    if not confirm:
        raise ValidationError(
            {"confirm": "compare your change with the current configuration, then confirm"}
        )
    before = {"base_version": request.base_version}
    request.config = config
    request.base_version = config.version
    request.base_state = flag_state(config.flag, config.environment)
    request.proposed_state = history.change_preview(config=config, data=request.data)
    request.status = Status.OPEN
    request.save()
    request.schedule.filter(status=ScheduledChange.Status.PENDING).update(
        status=ScheduledChange.Status.CANCELLED
    )
    _audit(request, "rebase", actor, source, before=before, after={"base_version": config.version})
    return request


@transaction.atomic
def change_request_cancel(
    *, request: ChangeRequest, actor: AbstractBaseUser | None, source: str
) -> ChangeRequest:
    request = _locked(request)
    project = request.config.flag.project
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
    *, project: Project, config: FlagConfig | None = None, status: str | None = None
):
    requests = ChangeRequest.objects.filter(config__flag__project=project)
    if config is not None:
        requests = requests.filter(config=config)
    if status:
        requests = requests.filter(status=status)
    return requests.select_related("config__flag", "config__environment").prefetch_related(
        "reviews"
    )


def change_request_for(project: Project, pk: int | str) -> ChangeRequest:
    request = (
        change_requests_of(project=project).filter(pk=pk).first() if str(pk).isdigit() else None
    )
    if request is None:
        raise Http404(f"no change request {pk} in project {project.key!r}")
    return request
