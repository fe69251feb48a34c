"""What the admin's start page shows a person: reads only, within the projects they see.

Pending change requests (and which of them they may review), the last changes from every
door, and the stale flags of each project.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.conf import settings
from django.db.models import Q

from evaluation import exposures
from flags import approvals
from flags.auditlog import entry_changes, entry_title
from flags.models import AuditEntry, ChangeRequest, FlagConfig, Project
from flags.roles import Action, allows, visible_projects

if TYPE_CHECKING:
    from flags.roles import Identity

RECENT_CHANGES = 10
PENDING_REQUESTS = 10
STALE_SHOWN = 5  # per project; the stale page lists them all


@dataclass
class RecentChange:
    entry: AuditEntry
    title: str
    changes: list[str]
    # The latest change of a flag's configuration can be undone from the start page: the
    # version before it is restored (through its confirmation page, with a comment).
    undo: FlagConfig | None = None


def pending_requests(user: Identity, limit: int = PENDING_REQUESTS) -> list[dict]:
    """Open (or approved, waiting) change requests, newest first, with who may review them."""
    projects = visible_projects(user)
    requests = (
        ChangeRequest.objects.filter(status__in=approvals.LIVE)
        .filter(
            Q(config__flag__project__in=projects)
            | Q(flag__project__in=projects)
            | Q(segment__project__in=projects)
        )
        .select_related(*approvals.RELATED)
        .order_by("-created_at", "-id")[:limit]
    )
    return [
        {
            "request": request,
            "environment": request.config.environment.name if request.config else "",
            # Reviews need the publisher role and are never the author's own.
            "yours_to_review": request.status == ChangeRequest.Status.OPEN
            and request.author_id != getattr(user, "pk", None)
            and allows(user, request.project, Action.CONFIGURE_PROTECTED),
        }
        for request in requests
    ]


def recent_changes(user: Identity, limit: int = RECENT_CHANGES) -> list[RecentChange]:
    """The last audit entries the person may read (superusers also see the system's)."""
    entries = AuditEntry.objects.select_related("project", "environment")
    if not user.is_superuser:
        entries = entries.filter(project__in=visible_projects(user))
    recent = [
        RecentChange(entry=entry, title=entry_title(entry), changes=entry_changes(entry))
        for entry in entries.order_by("-created_at", "-id")[:limit]
    ]
    _offer_undo(user, recent)
    return recent


def _offer_undo(user: Identity, recent: list[RecentChange]) -> None:
    """Mark the newest change of each configuration listed, where an older version exists
    and the person may change (or ask to change) that flag: one query for all of them."""
    changed = [
        item
        for item in recent
        if item.entry.object_type == "flag_config"
        and item.entry.project is not None
        and item.entry.environment_id is not None
        and allows(user, item.entry.project, Action.CONFIGURE)
    ]
    if not changed:
        return
    configs = {
        (config.environment_id, config.flag.key): config
        for config in FlagConfig.objects.select_related("flag").filter(
            environment_id__in={item.entry.environment_id for item in changed},
            flag__key__in={item.entry.flag_key for item in changed},
            version__gt=1,
        )
    }
    # Newest first: only a configuration's newest change, and none older than a change of
    # the flag itself (its variants, say), which no version of the configuration records.
    seen: set[tuple[int | None, str]] = set()
    flags_changed: set[str] = set()
    for item in recent:
        entry = item.entry
        key = (entry.environment_id, entry.flag_key)
        if item in changed and key not in seen and entry.flag_key not in flags_changed:
            item.undo = configs.get(key)  # type: ignore[arg-type]
        seen.add(key)
        if entry.object_type == "flag":
            flags_changed.add(entry.object_key)


def stale_by_project(user: Identity, days: int | None = None) -> list[tuple[Project, list[dict]]]:
    """Each visible project with its stale flags (`exposures.stale_flags`), read for all of
    them at once."""
    days = days if days is not None else settings.STALE_FLAG_DAYS
    projects = list(visible_projects(user).order_by("key"))
    stale = exposures.stale_flags_by_project(projects, days=days)
    return [(project, stale[project.pk]) for project in projects]
