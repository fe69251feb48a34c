"""Who sees and changes what in the admin: the project roles of flags.roles, not Django perms.

A staff user's membership is enough to use the admin: Django's per-model permissions are
replaced by the roles (viewer, editor, publisher, admin) of the projects they belong to, so
the admin and the REST API apply the same rules.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest

from flags.admin.parameters import CheckedParametersAdmin
from flags.models import Membership, Project
from flags.roles import RANK, Action, allows


def project_ids(request: HttpRequest, action: Action) -> set[int]:
    """Ids of the projects where the user may take `action`, computed once per request."""
    cache = request.__dict__.setdefault("_flags_project_ids", {})
    if action not in cache:
        user = request.user
        if not (user.is_active and user.is_staff):
            cache[action] = set()
        elif user.is_superuser:
            cache[action] = set(Project.objects.values_list("pk", flat=True))
        else:
            roles = [role for role, rank in RANK.items() if rank >= RANK[action.least_role]]
            memberships = Membership.objects.filter(user=user, role__in=roles)
            cache[action] = set(memberships.values_list("project_id", flat=True))
    return cache[action]


def projects(request: HttpRequest, action: Action) -> QuerySet[Project]:
    return Project.objects.filter(pk__in=project_ids(request, action))


class ProjectScopedAdmin(CheckedParametersAdmin):
    """A model admin whose rows belong to a project and are guarded by its roles.

    `project_lookup` leads from the model to its project; `edit_action` is what adding,
    changing and deleting a row needs (reading needs membership).
    """

    project_lookup = "project"
    edit_action = Action.EDIT_FLAGS

    def project_of(self, obj: Any) -> Project | None:
        for name in self.project_lookup.split("__"):
            obj = getattr(obj, name, None)
        return obj

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        allowed = project_ids(request, Action.READ)
        return queryset.filter(**{f"{self.project_lookup}__in": allowed})

    def _allowed(self, request: HttpRequest, obj: Any, action: Action) -> bool:
        if obj is None:
            return bool(project_ids(request, action))
        project = self.project_of(obj)
        if project is None:  # rows of no project (e.g. system audit entries)
            return request.user.is_active and request.user.is_superuser
        return request.user.is_staff and allows(request.user, project, action)

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(project_ids(request, Action.READ))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._allowed(request, obj, Action.READ)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return self._allowed(request, None, self.edit_action)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._allowed(request, obj, self.edit_action)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._allowed(request, obj, self.edit_action)

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs):
        # New rows can only go into projects where the user may make them.
        if db_field.related_model is Project:
            kwargs["queryset"] = projects(request, self.edit_action)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)
