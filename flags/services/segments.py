"""Segments: who they match, and the flags that use them."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import F

from evaluation.documents import segment_entry
from flags import impact, selectors
from flags.models import Project, Rule, Segment
from flags.roles import Action, authorize
from flags.services.steps import (
    ConflictError,
    _check_impact,
    _project_environment_ids,
    _save,
    audit,
    audit_many,
    environments_changed,
)

if TYPE_CHECKING:
    from flags.roles import Actor


# --- Segments ---------------------------------------------------------------------------

SEGMENT_FIELDS = ("name", "description", "conditions", "included", "excluded")


def _segment_proposal(project: Project, key: str) -> str:
    return f"POST /api/v1/projects/{project.key}/segments/{key}/change-requests"


def _new_segment(project: Project, key: str, data: dict) -> Segment:
    segment = Segment(project=project, key=key, name=data.get("name") or key)
    for field in SEGMENT_FIELDS[1:]:
        if field in data:
            setattr(segment, field, data[field])
    return segment


def _write_new(
    project: Project, keys: list[str], write: Callable[[], object], actor: Actor, source: str
) -> None:
    """Write new segments. Rules may already ask for segments of these keys (they matched no
    one until now): where that changes a protected environment's answers, its gate holds."""
    with impact.measured(project, segment_keys=keys) as measurement:
        write()
    if measurement.changes:
        proposal = _segment_proposal(project, keys[0] if len(keys) == 1 else "KEY")
        _check_impact(
            actor=actor, measurement=measurement, approved=False, source=source, proposal=proposal
        )


@transaction.atomic
def segment_create(*, project: Project, key: str, data: dict, actor: Actor, source: str) -> Segment:
    authorize(actor, project, Action.EDIT_FLAGS)
    segment = _new_segment(project, key, data)
    _write_new(project, [key], lambda: _save(segment), actor, source)
    audit(
        actor=actor,
        source=source,
        action="create",
        obj_type="segment",
        obj_key=key,
        project=project,
        after=segment_entry(segment),
    )
    environments_changed(_project_environment_ids(project), flags=(), segments=[segment.pk])
    return segment


class SegmentError(Exception):
    """A segment of a batch is invalid: which one, and why."""

    def __init__(self, key: str, error: ValidationError) -> None:
        super().__init__(key, error)
        self.key, self.error = key, error


@transaction.atomic
def segments_create_many(
    *, project: Project, segments: dict[str, dict], actor: Actor, source: str
) -> list[Segment]:
    """Create `segments` (key -> segment_create's data) as `segment_create` would, each
    validated alike, written and audited in one statement each; all or nothing.

    Raises SegmentError naming the segment a ValidationError is about.
    """
    authorize(actor, project, Action.EDIT_FLAGS)
    if not segments:
        return []
    taken = set(project.segments.filter(key__in=list(segments)).values_list("key", flat=True))
    rows = []
    for key, data in segments.items():
        segment = _new_segment(project, key, data)
        try:
            if key in taken:
                raise ValidationError({"key": "already exists"})
            segment.full_clean(
                exclude=["project"], validate_unique=False, validate_constraints=False
            )
        except ValidationError as error:
            raise SegmentError(key, error) from error
        rows.append(segment)
    # Only a rule asking for a segment makes a new one change what is served: a project
    # whose rules ask for none (a new one, being imported) needs no reading of each key.
    asked = Rule.objects.filter(flag__project=project, conditions__icontains="in_segment")
    keys = list(segments) if asked.exists() else []
    _write_new(project, keys, lambda: Segment.objects.bulk_create(rows), actor, source)
    audit_many(
        actor=actor,
        source=source,
        action="create",
        obj_type="segment",
        project=project,
        entries=[(segment.key, None, segment_entry(segment)) for segment in rows],
    )
    environments_changed(
        _project_environment_ids(project), flags=(), segments=[segment.pk for segment in rows]
    )
    return rows


@transaction.atomic
def segment_update(
    *,
    segment: Segment,
    data: dict,
    actor: Actor,
    source: str,
    expected_version: int | None = None,
    approved: bool = False,
) -> Segment:
    """Change a segment; where a protected environment's rules use it, that is a change to
    what the environment serves and passes the same gate as a direct write to it."""
    authorize(actor, segment.project, Action.EDIT_FLAGS)
    if "key" in data and data["key"] != segment.key:
        raise ValidationError({"key": "a segment's key cannot change once created"})
    current = Segment.objects.select_for_update().filter(pk=segment.pk)
    segment.version = current.values_list("version", flat=True).get()
    if expected_version is not None and expected_version != segment.version:
        raise ConflictError(
            f"segment {segment.key} is at version {segment.version}, not {expected_version}: "
            "reload and make your change again",
            segment.version,
        )
    before = segment_entry(segment)
    with impact.measured(segment.project, segment_keys=[segment.key]) as measurement:
        for field in SEGMENT_FIELDS:
            if field in data:
                setattr(segment, field, data[field])
        _save(segment)
    after = segment_entry(segment)
    if after == before:
        return segment
    if measurement.changes:
        _check_impact(
            actor=actor,
            measurement=measurement,
            approved=approved,
            source=source,
            proposal=_segment_proposal(segment.project, segment.key),
        )
    Segment.objects.filter(pk=segment.pk).update(version=F("version") + 1)
    segment.refresh_from_db(fields=["version"])
    audit(
        actor=actor,
        source=source,
        action="update",
        obj_type="segment",
        obj_key=segment.key,
        project=segment.project,
        before=before,
        after=after,
    )
    environments_changed(_project_environment_ids(segment.project), flags=(), segments=[segment.pk])
    return segment


def segment_users(segment: Segment) -> list[str]:
    """Keys of the flags whose rules refer to the segment, in any environment."""
    return selectors.segment_users([segment]).get(segment.pk, [])


@transaction.atomic
def segment_delete(*, segment: Segment, actor: Actor, source: str) -> None:
    authorize(actor, segment.project, Action.EDIT_FLAGS)
    users = segment_users(segment)
    if users:
        raise ValidationError({"key": f"segment is used by the rules of {', '.join(users)}"})
    before = segment_entry(segment)
    project, pk = segment.project, segment.pk
    segment.delete()
    audit(
        actor=actor,
        source=source,
        action="delete",
        obj_type="segment",
        obj_key=segment.key,
        project=project,
        before=before,
    )
    environments_changed(_project_environment_ids(project), flags=(), segments=[pk])
