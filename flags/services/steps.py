"""Shared steps of every write: audit, the approval gate, version bumps, validated saves."""

from __future__ import annotations

import operator
from collections.abc import Iterable
from functools import partial, reduce
from typing import TYPE_CHECKING, Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import F, Q

from evaluation import broadcast
from flags import impact
from flags.models import AuditEntry, DocumentChange, Environment, Project
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


# The document changes kept per environment: a process whose document is older builds the
# next from every revision instead (evaluation.documents), as one that holds none does.
# Older ones are deleted at every PRUNED_EVERY-th version (so between KEPT and KEPT +
# PRUNED_EVERY are kept), which leaves most writes one statement to record their changes.
DOCUMENT_CHANGES_KEPT = 200
DOCUMENT_CHANGES_PRUNED_EVERY = 100
# A write of more flags or segments than this records "too many to list" (null): the build
# after it reads every revision, which costs no more than reading that many rows.
DOCUMENT_CHANGES_LISTED = 1000


def environments_changed(
    environment_ids: Iterable[int], *, flags: Iterable[int | None], segments: Iterable[int | None]
) -> None:
    """Bump the versions in this transaction, recording which flags and segments (ids,
    whether made, changed or deleted) each new version changed; tell the caches once it
    commits.

    The bump locks each environment's row until the commit (SQLite locks the whole database
    for a write), so the writes to one environment take its versions one after another, and
    a version committed means every lower one is: a process that read version W finds the
    changes of every version up to W recorded.
    """
    ids = sorted(set(environment_ids))
    if not ids:
        return
    versions = _bumped(ids)
    _record_changes(versions, flags=_listed(flags), segments=_listed(segments))
    transaction.on_commit(partial(broadcast.environments_changed, versions))


def _bumped(ids: list[int]) -> dict[int, int]:
    """Add one to the environments' versions; their new versions, by id (in one statement
    where the database returns rows from an UPDATE: PostgreSQL, SQLite from 3.35)."""
    if not connection.features.can_return_columns_from_insert:
        Environment.objects.filter(pk__in=ids).update(version=F("version") + 1)
        return dict(Environment.objects.filter(pk__in=ids).values_list("pk", "version"))
    quote = connection.ops.quote_name
    table, pk, version = (quote(name) for name in (Environment._meta.db_table, "id", "version"))
    marks = ", ".join(["%s"] * len(ids))
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET {version} = {version} + 1 WHERE {pk} IN ({marks})"
            f" RETURNING {pk}, {version}",
            ids,
        )
        return dict(cursor.fetchall())


def _listed(ids: Iterable[int | None]) -> list[int] | None:
    """The ids as a document change lists them; None for too many (or a row without an id)."""
    listed = set(ids)
    if None in listed or len(listed) > DOCUMENT_CHANGES_LISTED:
        return None
    return sorted(pk for pk in listed if pk is not None)


def _record_changes(
    versions: dict[int, int], *, flags: list[int] | None, segments: list[int] | None
) -> None:
    # A record of this version already there can only be from before a version was set
    # back (by hand): this write's replaces it.
    DocumentChange.objects.bulk_create(
        [
            DocumentChange(environment_id=pk, version=version, flags=flags, segments=segments)
            for pk, version in versions.items()
        ],
        update_conflicts=True,
        unique_fields=["environment", "version"],
        update_fields=["flags", "segments"],
    )
    old = [
        Q(environment_id=pk, version__lte=version - DOCUMENT_CHANGES_KEPT)
        for pk, version in versions.items()
        if version % DOCUMENT_CHANGES_PRUNED_EVERY == 0
    ]
    if old:
        DocumentChange.objects.filter(reduce(operator.or_, old)).delete()


def _project_environment_ids(project: Project) -> list[int]:
    return list(project.environments.values_list("pk", flat=True))


def _save(obj: Any, exclude: list[str] | None = None, fields: Iterable[str] | None = None) -> None:
    """Validate like the admin's forms do, then save (`fields` only, if given); uniqueness
    errors name the field."""
    try:
        obj.full_clean(exclude=exclude)
    except ValidationError as error:
        raise _unique_as_field(obj, error) from error
    try:
        with transaction.atomic():
            obj.save(update_fields=fields)
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
