"""The admin start page's dashboard: `{% flags_dashboard %}` in templates/admin/index.html."""

from __future__ import annotations

from django import template
from django.conf import settings

from flags import dashboard

register = template.Library()


@register.inclusion_tag("admin/flags/dashboard.html", takes_context=True)
def flags_dashboard(context: template.Context) -> dict:
    user = context["request"].user
    stale = dashboard.stale_by_project(user)
    return {
        "pending": dashboard.pending_requests(user),
        "recent": dashboard.recent_changes(user),
        "stale": [
            (project, flags[: dashboard.STALE_SHOWN], len(flags)) for project, flags in stale
        ],
        "stale_total": sum(len(flags) for _, flags in stale),
        "stale_days": settings.STALE_FLAG_DAYS,
    }
