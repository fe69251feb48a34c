"""The audit log page: every change from every door, readable, never editable."""

from __future__ import annotations

import json
from datetime import UTC
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html, format_html_join

from flags.admin.access import ProjectScopedAdmin
from flags.auditlog import (
    ACTION_GROUPS,
    OBJECT_NOUNS,
    action_label,
    entries_in_group,
    entry_changes,
)
from flags.models import AuditEntry

# Times to the second, in UTC (the project's time zone): the locale's format drops the
# minutes of times on the hour ("3 p.m.").
WHEN_FORMAT = "%Y-%m-%d %H:%M:%S"
LIST_LINES = 4  # of an entry's diff in the list; its page shows them all


class FlagFilter(admin.SimpleListFilter):
    title = "flag"
    parameter_name = "flag_key"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        entries = model_admin.get_queryset(request).exclude(flag_key="")
        keys = entries.order_by("flag_key").values_list("flag_key", flat=True).distinct()
        return [(key, key) for key in keys[:200]]

    def queryset(self, request: HttpRequest, queryset):
        return queryset.filter(flag_key=self.value()) if self.value() else queryset


class ActorFilter(admin.SimpleListFilter):
    title = "who"
    parameter_name = "actor"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        names = model_admin.get_queryset(request).order_by("actor_name")
        names = names.values_list("actor_name", flat=True).distinct()
        return [(name, name) for name in names[:200]]

    def queryset(self, request: HttpRequest, queryset):
        return queryset.filter(actor_name=self.value()) if self.value() else queryset


class ActionFilter(admin.SimpleListFilter):
    """Actions by kind, from a fixed list: not one choice per restored version or request."""

    title = "action"
    parameter_name = "action_group"

    def lookups(self, request: HttpRequest, model_admin) -> list[tuple[str, str]]:
        return [(value, label) for value, label, _, _ in ACTION_GROUPS]

    def queryset(self, request: HttpRequest, queryset):
        group = self.value()
        return entries_in_group(queryset, group) if group else queryset


def changes_list(entry: AuditEntry, limit: int | None = None) -> str:
    """The entry's diff as a list of lines; past `limit` lines, how many more there are."""
    lines = entry_changes(entry)
    if not lines:
        return "–"
    if limit is not None and len(lines) > limit:
        lines = [*lines[:limit], f"… and {len(lines) - limit} more"]
    items = format_html_join("", "<li>{}</li>", ((line,) for line in lines))
    return format_html('<ul class="flags-diff">{}</ul>', items)


def _pretty(value: Any) -> str:
    if value is None:
        return "–"
    text = json.dumps(value, indent=2, ensure_ascii=False)
    return format_html(
        '<details><summary>JSON</summary><pre class="flags-json">{}</pre></details>', text
    )


@admin.register(AuditEntry)
class AuditEntryAdmin(ProjectScopedAdmin):
    list_display = ("when", "who", "action_name", "subject", "project", "changes_short", "comment")
    list_filter = (
        ("project", admin.RelatedOnlyFieldListFilter),
        FlagFilter,
        ActorFilter,
        ("created_at", admin.DateFieldListFilter),
        "source",
        ActionFilter,
        "object_type",
    )
    search_fields = ("object_key", "flag_key", "actor_name", "comment")
    date_hierarchy = "created_at"
    list_select_related = ("project", "environment__project")
    fields = (
        "when",
        "actor_name",
        "source",
        "action",
        "object_type",
        "object_key",
        "project",
        "environment",
        "flag_key",
        "comment",
        "changes",
        "before_value",
        "after_value",
    )
    readonly_fields = fields

    class Media:
        css = {"all": ("flags/admin.css",)}

    # Entries are written by the services in the transaction of the change they record;
    # nobody adds, edits or deletes them here, superusers included.
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: AuditEntry | None = None) -> bool:
        return False

    @admin.display(description="when (UTC)", ordering="created_at")
    def when(self, entry: AuditEntry) -> str:
        return entry.created_at.astimezone(UTC).strftime(WHEN_FORMAT)

    @admin.display(description="action", ordering="action")
    def action_name(self, entry: AuditEntry) -> str:
        return action_label(entry.action)

    @admin.display(description="who", ordering="actor_name")
    def who(self, entry: AuditEntry) -> str:
        return f"{entry.actor_name} ({entry.source})"

    @admin.display(description="what", ordering="object_key")
    def subject(self, entry: AuditEntry) -> str:
        noun = OBJECT_NOUNS.get(entry.object_type, entry.object_type.replace("_", " "))
        return f"{noun} {entry.object_key}"

    @admin.display(description="what changed")
    def changes(self, entry: AuditEntry) -> str:
        return changes_list(entry)

    @admin.display(description="what changed")
    def changes_short(self, entry: AuditEntry) -> str:
        return changes_list(entry, limit=LIST_LINES)

    @admin.display(description="before (JSON)")
    def before_value(self, entry: AuditEntry) -> str:
        return _pretty(entry.before)

    @admin.display(description="after (JSON)")
    def after_value(self, entry: AuditEntry) -> str:
        return _pretty(entry.after)
