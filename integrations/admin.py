"""Admin pages of the integrations: webhooks and every delivery, triggers, SSO identities.

Only project admins (and superusers) see and change them, as with API keys; writes go
through `integrations.webhooks` and `integrations.triggers`. The login page offers single
sign-on when it is configured (`integrations/login.html`).
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

from django import forms
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import QuerySet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from flags.admin.access import ProjectScopedAdmin, project_ids
from flags.admin.flags import adopt
from flags.admin.forms import AdminForm, KeyListField, ServiceErrorsAdmin
from flags.models import Environment, Flag
from flags.roles import Action
from integrations import triggers, webhooks
from integrations.events import KINDS
from integrations.models import Delivery, SsoIdentity, Trigger, Webhook

SOURCE = "admin"
admin.site.login_template = "integrations/login.html"


class AdminsOnly(ServiceErrorsAdmin, ProjectScopedAdmin):
    """Rows only the project's admins see and change."""

    edit_action = Action.ADMINISTER

    def get_queryset(self, request: HttpRequest) -> QuerySet:
        queryset = super().get_queryset(request)
        if request.user.is_superuser:
            return queryset
        lookup = f"{self.project_lookup}__in"
        return queryset.filter(**{lookup: project_ids(request, Action.ADMINISTER)})

    def has_module_permission(self, request: HttpRequest) -> bool:
        return bool(project_ids(request, Action.ADMINISTER))

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return self._allowed(request, obj, Action.ADMINISTER)


def _pretty(value: Any) -> str:
    return format_html(
        '<pre class="flags-json">{}</pre>', json.dumps(value, indent=2, ensure_ascii=False)
    )


# --- Webhooks -----------------------------------------------------------------------------


class WebhookForm(AdminForm):
    url = forms.URLField(
        max_length=2000,
        assume_scheme="https",
        help_text="Where changes are POSTed; a Slack incoming-webhook URL with the Slack format.",
    )
    environments = KeyListField(
        required=False, help_text="Environment keys, one per line; empty for every environment."
    )
    kinds = forms.MultipleChoiceField(
        required=False,
        choices=[(kind, f"{kind}: {text}") for kind, text in KINDS.items()],
        widget=forms.CheckboxSelectMultiple,
        help_text="Nothing ticked: every kind.",
    )

    class Meta:
        model = Webhook
        fields = ("project", "name", "url", "format", "environments", "kinds", "active")
        help_texts = {
            "active": "Unticked after repeated failures; tick it again once the receiver works.",
        }


@admin.register(Webhook)
class WebhookAdmin(AdminsOnly):
    form = WebhookForm
    list_display = ("name", "project", "receiver", "format", "active", "failures", "deliveries")
    list_filter = (("project", admin.RelatedOnlyFieldListFilter), "format", "active")
    search_fields = ("name",)
    readonly_fields = ("failures", "disabled_reason", "deliveries")

    class Media:
        css = {"all": ("flags/admin.css",)}

    def get_fields(self, request: HttpRequest, obj: Webhook | None = None):
        fields = list(WebhookForm.Meta.fields)
        return fields + ["failures", "disabled_reason", "deliveries"] if obj else fields

    def get_readonly_fields(self, request: HttpRequest, obj: Webhook | None = None):
        return ("project", *self.readonly_fields) if obj else ()

    @admin.display(description="receiver")
    def receiver(self, webhook: Webhook) -> str:
        return urlsplit(webhook.url).hostname or ""

    @admin.display(description="deliveries")
    def deliveries(self, webhook: Webhook) -> str:
        url = reverse("admin:integrations_delivery_changelist")
        query = urlencode({"webhook__id__exact": webhook.pk})
        return format_html('<a href="{}?{}">Every delivery</a>', url, query)

    def save_model(self, request: HttpRequest, obj: Webhook, form, change: bool) -> None:
        data = {field: form.cleaned_data[field] for field in WebhookForm.Meta.fields[1:]}
        if change:
            webhooks.webhook_update(
                webhook=Webhook.objects.get(pk=obj.pk), data=data, actor=request.user, source=SOURCE
            )
            return
        webhook, secret = webhooks.webhook_create(
            project=form.cleaned_data["project"], data=data, actor=request.user, source=SOURCE
        )
        adopt(obj, webhook)
        self.message_user(
            request,
            format_html(
                "Copy the signing secret now, it is not shown again: "
                '<code class="flags-secret">{}</code>',
                secret,
            ),
            messages.WARNING,
        )

    def delete_model(self, request: HttpRequest, obj: Webhook) -> None:
        webhooks.webhook_delete(webhook=obj, actor=request.user, source=SOURCE)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet) -> None:
        for webhook in queryset.select_related("project"):
            self.delete_model(request, webhook)


@admin.register(Delivery)
class DeliveryAdmin(AdminsOnly):
    project_lookup = "webhook__project"
    list_display = (
        "created_at",
        "webhook",
        "kind",
        "flag",
        "environment",
        "status",
        "attempts",
        "response_status",
        "error",
        "duration_ms",
        "next_attempt_at",
    )
    list_filter = ("status", ("webhook", admin.RelatedOnlyFieldListFilter))
    list_select_related = ("webhook__project", "event")
    fields = (*list_display[1:], "last_attempt_at", "body")
    readonly_fields = fields
    actions = ("send_again",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return bool(project_ids(request, Action.ADMINISTER))

    @admin.display(description="event")
    def kind(self, delivery: Delivery) -> str:
        return delivery.event.kind

    @admin.display(description="flag")
    def flag(self, delivery: Delivery) -> str:
        return delivery.event.flag_key

    @admin.display(description="environment")
    def environment(self, delivery: Delivery) -> str:
        return delivery.event.environment_key

    @admin.display(description="what was sent")
    def body(self, delivery: Delivery) -> str:
        return _pretty(delivery.event.body)

    @admin.action(description="Send selected deliveries again", permissions=["retry"])
    def send_again(self, request: HttpRequest, queryset: QuerySet) -> None:
        queued = 0
        for delivery in queryset:
            try:
                webhooks.delivery_retry(delivery=delivery, actor=request.user, source=SOURCE)
            except (PermissionDenied, ValidationError) as error:
                self.message_user(request, f"#{delivery.pk}: {error}", messages.ERROR)
                continue
            queued += 1
        self.message_user(request, f"Queued {queued} delivery(ies) again.", messages.SUCCESS)


# --- Triggers -----------------------------------------------------------------------------


class TriggerForm(AdminForm):
    class Meta:
        model = Trigger
        fields = ("flag", "environment", "action", "name", "protected_grant")
        labels = {"protected_grant": "May change a protected environment without review"}
        help_texts = {
            "name": "Who calls it, e.g. alertmanager-checkout-errors.",
            "protected_grant": "Needed for a protected environment (production): the trigger "
            "then switches the flag there with no change request. Your grant is audited.",
        }

    def clean(self) -> dict:
        cleaned = super().clean()
        flag, environment = cleaned.get("flag"), cleaned.get("environment")
        if flag and environment and flag.project_id != environment.project_id:
            self.add_error("environment", "Pick an environment of the flag's project.")
        return cleaned


@admin.register(Trigger)
class TriggerAdmin(AdminsOnly):
    form = TriggerForm
    list_display = (
        "name",
        "flag",
        "environment",
        "action",
        "protected_grant",
        "status",
        "fired",
        "last_fired_at",
    )
    list_filter = (("project", admin.RelatedOnlyFieldListFilter), "action", "protected_grant")
    list_select_related = ("project", "flag", "environment")
    search_fields = ("name", "flag__key", "uid")
    actions = ("revoke",)
    display_fields = (
        "name",
        "flag",
        "environment",
        "action",
        "protected_grant",
        "granted_by",
        "url",
        "prefix",
        "status",
        "fired",
        "last_fired_at",
        "created_by",
        "created_at",
        "revoked_at",
    )

    class Media:
        css = {"all": ("flags/admin.css",)}

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # made and revoked, never edited

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # revoked triggers stay, so the audit log can name them

    def has_revoke_permission(self, request: HttpRequest) -> bool:
        return bool(project_ids(request, Action.ADMINISTER))

    def get_fields(self, request: HttpRequest, obj: Trigger | None = None):
        return self.display_fields if obj is not None else TriggerForm.Meta.fields

    def get_readonly_fields(self, request: HttpRequest, obj: Trigger | None = None):
        return self.display_fields if obj is not None else ()

    def formfield_for_foreignkey(self, db_field, request: HttpRequest, **kwargs):
        allowed = project_ids(request, Action.ADMINISTER)
        if db_field.name == "flag":
            kwargs["queryset"] = Flag.objects.filter(project_id__in=allowed, archived=False)
        if db_field.name == "environment":
            kwargs["queryset"] = Environment.objects.filter(project_id__in=allowed)
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    @admin.display(description="status")
    def status(self, trigger: Trigger) -> str:
        return "revoked" if trigger.revoked_at else "active"

    @admin.display(description="URL")
    def url(self, trigger: Trigger) -> str:
        return reverse("trigger-fire", args=[trigger.uid])

    def save_model(self, request: HttpRequest, obj: Trigger, form, change: bool) -> None:
        data = form.cleaned_data
        trigger, secret = triggers.trigger_create(
            flag=data["flag"],
            environment=data["environment"],
            action=data["action"],
            name=data["name"],
            protected_grant=data.get("protected_grant", False),
            actor=request.user,
            source=SOURCE,
        )
        adopt(obj, trigger)
        url = request.build_absolute_uri(reverse("trigger-fire", args=[trigger.uid]))
        self.message_user(
            request,
            format_html(
                "POST to <code>{}</code> with <code>Authorization: Bearer {}</code> "
                "(or add <code>?token={}</code>). Copy the secret now, it is not shown again: "
                '<code class="flags-secret">{}</code>',
                url,
                "SECRET",
                "SECRET",
                secret,
            ),
            messages.WARNING,
        )

    @admin.action(description="Revoke selected triggers", permissions=["revoke"])
    def revoke(self, request: HttpRequest, queryset: QuerySet) -> None:
        revoked = 0
        for trigger in queryset.select_related("project", "flag", "environment"):
            if trigger.revoked_at is not None:
                continue
            try:
                triggers.trigger_revoke(trigger=trigger, actor=request.user, source=SOURCE)
            except PermissionDenied as error:
                self.message_user(request, f"{trigger}: {error}", messages.ERROR)
                continue
            revoked += 1
        self.message_user(request, f"Revoked {revoked} trigger(s).", messages.SUCCESS)


@admin.register(SsoIdentity)
class SsoIdentityAdmin(admin.ModelAdmin):
    """Who logs in through the provider, and the groups their last login carried."""

    list_display = ("user", "subject", "groups", "last_login_at")
    search_fields = ("user__username", "subject")
    readonly_fields = ("user", "issuer", "subject", "groups", "last_login_at")

    def has_module_permission(self, request: HttpRequest) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_view_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return request.user.is_active and request.user.is_superuser

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
