"""The audit log page: every change from every door, readable, never editable."""

from __future__ import annotations

import json
from typing import Any

from django.contrib import admin
from django.http import HttpRequest
from django.utils.html import format_html

from flags.admin.access import ProjectScopedAdmin
from flags.models import AuditEntry


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


def _pretty(value: Any) -> str:
    if value is None:
        return "–"
    return format_html('<pre class="flags-json">{}</pre>', json.dumps(value, indent=2))


@admin.register(AuditEntry)
class AuditEntryAdmin(ProjectScopedAdmin):
    list_display = (
        "created_at",
        "actor_name",
        "source",
        "action",
        "object_type",
        "object_key",
        "project",
        "environment",
        "flag_key",
    )
    list_filter = (
        ("project", admin.RelatedOnlyFieldListFilter),
        FlagFilter,
        ActorFilter,
        ("created_at", admin.DateFieldListFilter),
        "source",
        "action",
        "object_type",
    )
    search_fields = ("object_key", "flag_key", "actor_name")
    date_hierarchy = "created_at"
    list_select_related = ("project", "environment__project")
    fields = (
        "created_at",
        "actor_name",
        "source",
        "action",
        "object_type",
        "object_key",
        "project",
        "environment",
        "flag_key",
        "changed",
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

    @admin.display(description="changed")
    def changed(self, entry: AuditEntry) -> str:
        before, after = entry.before, entry.after
        if not isinstance(before, dict) or not isinstance(after, dict):
            return "–"
        keys = [key for key in {**before, **after} if before.get(key) != after.get(key)]
        return ", ".join(keys) or "nothing"

    @admin.display(description="before")
    def before_value(self, entry: AuditEntry) -> str:
        return _pretty(entry.before)

    @admin.display(description="after")
    def after_value(self, entry: AuditEntry) -> str:
        return _pretty(entry.after)
