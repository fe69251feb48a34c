"""Shared steps of every write: audit, the approval gate, version bumps, validated saves."""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial
from typing import TYPE_CHECKING, Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F

from evaluation import broadcast
from flags import impact
from flags.models import AuditEntry, Environment, Project
from flags.roles import Action, authorize, bypasses_approval, check_indirect_write, person
from flags.validation import check_text
from integrations import events
from integrations.models import Webhook

if TYPE_CHECKING:
    from flags.roles import Actor


SOURCES = ("admin", "api", "cli", "system", "scheduler")


class ConflictError(Exception):
    """A write based on an outdated version of what it changes (HTTP 409)."""

    def __init__(self, message: str, current_version: int) -> None:
        super().__init__(message)
        self.current_version = current_version


# --- Shared steps -----------------------------------------------------------------------


def _actor_name(actor: Actor) -> str:
    return actor.get_username() if actor is not None else "system"


def audit(
    *,
    actor: Actor,
    source: str,
    action: str,
    obj_type: str,
    obj_key: str,
    project: Project | None,
    environment: Environment | None = None,
    flag_key: str = "",
    before: Any = None,
    after: Any = None,
    comment: str = "",
) -> AuditEntry:
    entry = AuditEntry.objects.create(
        actor=person(actor),
        actor_name=_actor_name(actor),
        source=source,
        action=action,
        object_type=obj_type,
        object_key=obj_key[: AuditEntry._meta.get_field("object_key").max_length],
        project=project,
        environment=environment,
        flag_key=flag_key,
        before=before,
        after=after,
        comment=comment,
    )
    events.audit_recorded(entry)  # webhooks: queued in this transaction, sent after commit
    return entry


def audit_many(
    *,
    actor: Actor,
    source: str,
    action: str,
    obj_type: str,
    project: Project,
    entries: list[tuple[str, Any, Any]],
) -> list[AuditEntry]:
    """`audit` of many objects of one kind at once: `entries` are (key, before, after)."""
    length = AuditEntry._meta.get_field("object_key").max_length
    rows = AuditEntry.objects.bulk_create(
        AuditEntry(
            actor=person(actor),
            actor_name=_actor_name(actor),
            source=source,
            action=action,
            object_type=obj_type,
            object_key=key[:length],
            project=project,
            before=before,
            after=after,
        )
        for key, before, after in entries
    )
    if Webhook.objects.filter(project=project, active=True).exists():
        for entry in rows:
            events.audit_recorded(entry)  # queued in this transaction, sent after commit
    return rows


COMMENT_LENGTH = 1000


def checked_comment(comment: Any) -> str:
    """A person's reason for a change, as the audit log stores it (or a ValidationError)."""
    if not isinstance(comment, str):
        raise ValidationError({"comment": "expected text"})
    comment = comment.strip()
    check_text(comment, "comment")
    if len(comment) > COMMENT_LENGTH:
        raise ValidationError({"comment": f"at most {COMMENT_LENGTH} characters"})
    return comment


def _audit_bypass(actor: Actor, environment: Environment, subject: str, source: str) -> None:
    """An operator's `--bypass-approval`: the reason goes into the audit log with the change."""
    if not (bypasses_approval(actor) and environment.protected):
        return
    if not environment.project.require_approval:
        return
    audit(
        actor=actor,
        source=source,
        action="bypass-approval",
        obj_type="approval",
        obj_key=subject,
        project=environment.project,
        environment=environment,
        after={"reason": getattr(actor, "bypass_reason", "")},
    )


def _check_impact(
    *, actor: Actor, measurement: impact.Measurement, approved: bool, source: str, proposal: str
) -> None:
    """Hold a change to a flag's own fields or a segment to the gate of each protected
    environment whose answers it changes (docs/admin.md, "Who may change what")."""
    for environment in {env.pk: env for env, _, _ in measurement.changes}.values():
        subject = next(s for env, s, _ in measurement.changes if env.pk == environment.pk)
        if approved:
            authorize(actor, environment.project, Action.CONFIGURE, environment)
        else:
            check_indirect_write(actor, environment, subject, proposal)
        _audit_bypass(actor, environment, subject, source)


def environments_changed(environment_ids: Iterable[int]) -> None:
    """Bump the versions in this transaction; tell the caches once it commits."""
    ids = sorted(set(environment_ids))
    if not ids:
        return
    Environment.objects.filter(pk__in=ids).update(version=F("version") + 1)
    versions = dict(Environment.objects.filter(pk__in=ids).values_list("pk", "version"))
    transaction.on_commit(partial(broadcast.environments_changed, versions))


def _project_environment_ids(project: Project) -> list[int]:
    return list(project.environments.values_list("pk", flat=True))


def _save(obj: Any, exclude: list[str] | None = None) -> None:
    """Validate like the admin's forms do, then save; uniqueness errors name the field."""
    try:
        obj.full_clean(exclude=exclude)
    except ValidationError as error:
        raise _unique_as_field(obj, error) from error
    try:
        with transaction.atomic():
            obj.save()
    except IntegrityError as error:
        raise ValidationError({"key": "already exists"}) from error


def _unique_as_field(obj: Any, error: ValidationError) -> ValidationError:
    """'X with this Project and Key already exists' belongs to the key field."""
    if not hasattr(error, "error_dict") or NON_FIELD_ERRORS not in error.error_dict:
        return error
    unique = [e for e in error.error_dict[NON_FIELD_ERRORS] if e.code == "unique_together"]
    if not unique:
        return error
    field = "name" if hasattr(obj, "name") and not hasattr(obj, "key") else "key"
    messages = {**error.message_dict}
    messages.pop(NON_FIELD_ERRORS)
    messages[field] = [f"{getattr(obj, field, '')!r} already exists"]
    return ValidationError(messages)
