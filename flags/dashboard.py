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
from flags.models import AuditEntry, ChangeRequest, Project
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
    return [
        RecentChange(entry=entry, title=entry_title(entry), changes=entry_changes(entry))
        for entry in entries.order_by("-created_at", "-id")[:limit]
    ]


def stale_by_project(user: Identity, days: int | None = None) -> list[tuple[Project, list[dict]]]:
    """Each visible project with its stale flags (`exposures.stale_flags`), read for all of
    them at once."""
    days = days if days is not None else settings.STALE_FLAG_DAYS
    projects = list(visible_projects(user).order_by("key"))
    stale = exposures.stale_flags_by_project(projects, days=days)
    return [(project, stale[project.pk]) for project in projects]
