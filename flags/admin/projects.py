"""Project pages: projects with their environments, people's roles, and API keys.

Only project admins (and superusers) change these; creating a project is for superusers,
and goes through `services.project_create`, which gives it its three environments.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth import get_user_model
from django.core.exceptions import PermissionDenied
from django.db.models import Count, QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode

from flags import services
from flags.admin.access import ProjectScopedAdmin, project_ids
from flags.admin.flags import SOURCE, _record_changes, adopt
from flags.admin.forms import AdminForm, ServiceErrorsAdmin
from flags.models import ApiKey, Environment, Membership, Project
from flags.roles import Action, allows, role_of

# --- Projects and their environments -----------------------------------------------------


class EnvironmentFormSet(BaseInlineFormSet):
    def add_fields(self, form, index) -> None:
        super().add_fields(form, index)
        if form.instance.pk and "key" in form.fields:
            form.fields["key"].disabled = True  # API keys and documents are named by it


class EnvironmentInline(admin.TabularInline):
    model = Environment
    form = AdminForm
    formset = EnvironmentFormSet
    fields = ("key", "name", "protected", "secure_mode", "position", "version")
    readonly_fields = ("position", "version")
    extra = 0
    can_delete = False  # its flags' history and keys would go with it
    verbose_name_plural = "environments (protected ones are changed by publishers and admins)"

    def has_view_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        return obj is not None and allows(request.user, obj, Action.READ)

    def get_queryset(self, request: HttpRequest):
        # Django empties an inline's rows when has_view_permission(request) without the
        # project says no, which it always does here; the project page checks the role.
        return Environment.objects.select_related("project")

    def has_change_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        return obj is not None and allows(request.user, obj, Action.ADMINISTER)

    has_add_permission = has_change_permission


@admin.register(Project)
class ProjectAdmin(ServiceErrorsAdmin, ProjectScopedAdmin):
    project_lookup = "pk"
    edit_action = Action.ADMINISTER
    search_fields = ("key", "name")
    inlines = (EnvironmentInline,)

    def project_of(self, obj: Project) -> Project:
        return obj

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        return (
            super()
            .get_queryset(request)
            .prefetch_related("environments")
            .annotate(flag_count=Count("flags", distinct=True))
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_delete_permission(self, request: HttpRequest, obj: Project | None = None) -> bool:
        return False  # a project takes its flags, history and keys with it: not from here

    def get_inlines(self, request: HttpRequest, obj: Project | None):
        return self.inlines if obj is not None else ()

    def get_fields(self, request: HttpRequest, obj: Project | None = None):
        fields = ["key", "name", "description", "require_approval"]
        return fields + ["members"] if obj is not None else fields

    def get_readonly_fields(self, request: HttpRequest, obj: Project | None = None):
        return ("key", "members") if obj is not None else ()

    @admin.display(description="environments")
    def environment_list(self, project: Project) -> str:
        return format_html_join(
            ", ",
            "{}{}",
            ((e.key, " (protected)" if e.protected else "") for e in project.environments.all()),
        )

    @admin.display(description="flags", ordering="flag_count")
    def flag_count(self, project: Project) -> int:
        return project.flag_count  # type: ignore[attr-defined]  # annotated by get_queryset

    def get_list_display(self, request: HttpRequest):
        @admin.display(description="your role")
        def your_role(project: Project) -> str:
            return role_of(request.user, project) or "–"

        return ("key", "name", "environment_list", "flag_count", your_role)

    @admin.display(description="people")
    def members(self, project: Project) -> str:
        url = reverse("admin:flags_membership_changelist")
        query = urlencode({"project__id__exact": project.pk})
        rows = project.memberships.select_related("user")
        listed = format_html_join(", ", "{} ({})", ((m.user, m.role) for m in rows))
        return format_html('{} <a href="{}?{}">Manage roles</a>', listed or "nobody", url, query)

    def save_model(self, request: HttpRequest, obj: Project, form, change: bool) -> None:
        data = form.cleaned_data
        if change:
            services.project_update(
                project=Project.objects.get(pk=obj.pk), data=data, actor=request.user, source=SOURCE
            )
            return
        project = services.project_create(
            key=data["key"],
            name=data["name"],
            description=data.get("description", ""),
            actor=request.user,
            source=SOURCE,
        )
        if data.get("require_approval"):
            services.project_update(project=project, data=data, actor=request.user, source=SOURCE)
        adopt(obj, project)

    def save_formset(self, request: HttpRequest, form, formset, change: bool) -> None:
        """Environments are created and changed by the services, one row at a time."""
        project = form.instance
        for row in formset.forms:
            if not row.has_changed():
                continue
            data = row.cleaned_data
            settings = {
                "name": data["name"],
                "protected": data.get("protected", False),
                "secure_mode": data.get("secure_mode", False),
            }
            if row.instance.pk is None:
                environment = services.environment_create(
                    project=project,
                    key=data["key"],
                    name=data["name"],
                    protected=settings["protected"],
                    actor=request.user,
                    source=SOURCE,
                )
                if not settings["secure_mode"]:
                    continue
            else:
                environment = Environment.objects.get(pk=row.instance.pk)
            services.environment_update(
                environment=environment, data=settings, actor=request.user, source=SOURCE
            )
        _record_changes(formset)


# --- Roles -------------------------------------------------------------------------------


@admin.register(Membership)
class MembershipAdmin(ServiceErrorsAdmin, ProjectScopedAdmin):
    edit_action = Action.ADMINISTER
    list_display = ("user", "project", "role")
    list_filter = (("project", admin.RelatedOnlyFieldListFilter), "role")
    search_fields = ("user__username", "user__email", "project__key")
    list_select_related = ("user", "project")
    fields = ("project", "user", "role")

    def get_readonly_fields(self, request: HttpRequest, obj: Membership | None = None):
        return ("project", "user") if obj is not None else ()

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs):
        if db_field.name == "user":
            kwargs["queryset"] = (
                get_user_model().objects.filter(is_active=True).order_by("username")
            )
            kwargs["help_text"] = "People need staff status (set by a superuser) to log in here."
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: Membership, form, change: bool) -> None:
        membership = services.membership_set(
            project=obj.project, user=obj.user, role=obj.role, actor=request.user, source=SOURCE
        )
        adopt(obj, membership)

    def delete_model(self, request: HttpRequest, obj: Membership) -> None:
        services.membership_set(
            project=obj.project, user=obj.user, role=None, actor=request.user, source=SOURCE
        )

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for membership in queryset.select_related("project", "user"):
            self.delete_model(request, membership)


# --- API keys ----------------------------------------------------------------------------


class ApiKeyForm(AdminForm):
    class Meta:
        model = ApiKey
        fields = ("environment", "kind", "name", "expires_at")
        help_texts = {
            "kind": "Server keys (secret) download flag documents and evaluate anything; "
            "client keys (public, for browsers and apps) only evaluate.",
            "expires_at": "Optional; the key stops working then.",
        }


@admin.register(ApiKey)
class ApiKeyAdmin(ServiceErrorsAdmin, ProjectScopedAdmin):
    """Keys are made by `services.api_key_create`; their secret is shown once, never stored."""

    form = ApiKeyForm
    project_lookup = "environment__project"
    edit_action = Action.ADMINISTER
    list_display = ("name", "environment", "kind", "prefix", "status", "created_by", "created_at")
    list_filter = (("environment__project", admin.RelatedOnlyFieldListFilter), "kind")
    search_fields = ("name", "prefix")
    list_select_related = ("environment__project", "created_by")
    actions = ("revoke_keys",)

    class Media:
        css = {"all": ("flags/admin.css",)}

    # The digest is never shown: not here, not in the list, not in a form.
    display_fields = (
        "name",
        "environment",
        "kind",
        "prefix",
        "status",
        "created_by",
        "created_at",
        "expires_at",
        "revoked_at",
        "last_used_at",
    )

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        # Only the projects' admins see their keys.
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        return queryset.filter(environment__project__in=project_ids(request, Action.ADMINISTER))

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(project_ids(request, Action.ADMINISTER))

    def has_view_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return self._allowed(request, obj, Action.ADMINISTER)

    def has_change_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False  # a key is made and revoked, never edited

    def has_delete_permission(self, request: HttpRequest, obj: ApiKey | None = None) -> bool:
        return False  # revoked keys stay, so the audit log can name them

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return self._allowed(request, None, Action.ADMINISTER)

    def get_fields(self, request: HttpRequest, obj: ApiKey | None = None):
        return self.display_fields if obj is not None else ApiKeyForm.Meta.fields

    def get_readonly_fields(self, request: HttpRequest, obj: ApiKey | None = None):
        return self.display_fields if obj is not None else ()

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs):
        if db_field.name == "environment":
            allowed = project_ids(request, Action.ADMINISTER)
            kwargs["queryset"] = Environment.objects.filter(project_id__in=allowed)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="status")
    def status(self, key: ApiKey) -> str:
        if key.revoked_at is not None:
            return "revoked"
        if key.expires_at is not None and key.expires_at <= timezone.now():
            return "expired"
        return "active"

    def save_model(self, request: HttpRequest, obj: ApiKey, form, change: bool) -> None:
        data = form.cleaned_data
        key, secret = services.api_key_create(
            environment=data["environment"],
            kind=data["kind"],
            name=data["name"],
            expires_at=data.get("expires_at"),
            actor=request.user,
            source=SOURCE,
        )
        adopt(obj, key)
        obj.prefix = key.prefix
        # The only time the secret exists outside the client: shown once, then gone.
        self.message_user(
            request,
            format_html(
                'Copy the new key now, it is not shown again: <code class="flags-secret">{}</code>',
                secret,
            ),
            messages.WARNING,
        )

    @admin.action(description="Revoke selected keys", permissions=["revoke"])
    def revoke_keys(self, request: HttpRequest, queryset: QuerySet) -> None:
        revoked = 0
        for key in queryset.select_related("environment__project"):
            if key.revoked_at is not None:
                continue
            try:
                services.api_key_revoke(key=key, actor=request.user, source=SOURCE)
            except PermissionDenied as error:
                self.message_user(request, f"{key}: {error}", messages.ERROR)
                continue
            self.log_change(request, key, "Revoked.")
            revoked += 1
        self.message_user(request, f"Revoked {revoked} key(s).", messages.SUCCESS)
