"""What connects the flag store to the company's other systems: webhooks and their
deliveries, incoming triggers, and the single sign-on identities of people.

Models stay thin; `integrations.webhooks`, `integrations.triggers` and `integrations.sso`
own the rules.
"""

from django.conf import settings
from django.db import models

from flags.models import Environment, Flag, Project


class Webhook(models.Model):
    """A receiver of the project's changes, filtered by environment and event kind."""

    class Format(models.TextChoices):
        JSON = "json", "JSON (signed)"
        SLACK = "slack", "Slack message"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="webhooks")
    name = models.CharField(max_length=200)
    url = models.URLField(max_length=2000)
    format = models.CharField(max_length=8, choices=Format.choices, default=Format.JSON)
    # Empty lists mean every environment / every kind.
    environments = models.JSONField(default=list, blank=True)
    kinds = models.JSONField(default=list, blank=True)
    # The signing secret: the service must hold it to sign, so it is kept (never shown
    # after creation, never logged), unlike credentials presented to the service.
    secret = models.CharField(max_length=100, editable=False)
    active = models.BooleanField(default=True)
    failures = models.PositiveIntegerField(default=0, editable=False)
    disabled_reason = models.CharField(max_length=300, blank=True, editable=False)
    # A worker sending to this receiver holds it until then, so deliveries keep their order.
    lease_until = models.DateTimeField(null=True, blank=True, editable=False)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["project__key", "name", "id"]

    def __str__(self) -> str:
        return self.name


class WebhookEvent(models.Model):
    """One change as receivers see it, written in the change's own transaction."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=48)
    environment_key = models.CharField(max_length=64, blank=True)
    flag_key = models.CharField(max_length=100, blank=True)
    body = models.JSONField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self.kind} #{self.pk}"


class Delivery(models.Model):
    """One event to one webhook: every attempt's outcome, until it is sent or gives up."""

    class Status(models.TextChoices):
        PENDING = "pending"
        SENT = "sent"
        FAILED = "failed"

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    event = models.ForeignKey(WebhookEvent, on_delete=models.CASCADE, related_name="deliveries")
    status = models.CharField(max_length=8, choices=Status.choices, default=Status.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_index=True)
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=300, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]
        verbose_name_plural = "deliveries"
        indexes = [models.Index(fields=["webhook", "status", "id"], name="delivery_queue")]

    def __str__(self) -> str:
        return f"{self.event.kind} to {self.webhook} ({self.status})"


class Trigger(models.Model):
    """A URL with its own secret that switches one flag off (or on) in one environment."""

    class Action(models.TextChoices):
        OFF = "off", "Switch off (kill switch)"
        ON = "on", "Switch on"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="triggers")
    flag = models.ForeignKey(Flag, on_delete=models.CASCADE, related_name="triggers")
    environment = models.ForeignKey(Environment, on_delete=models.CASCADE, related_name="+")
    action = models.CharField(max_length=4, choices=Action.choices, default=Action.OFF)
    name = models.CharField(max_length=100)
    # Public: names the trigger in its URL. The secret is only stored as its digest.
    uid = models.CharField(max_length=24, unique=True, editable=False)
    prefix = models.CharField(max_length=16, editable=False)
    digest = models.CharField(max_length=64, unique=True, editable=False)
    # The explicit grant a project admin gives to change a protected environment without
    # a change request (docs/integrations.md, "Triggers and protected environments").
    protected_grant = models.BooleanField(default=False)
    granted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    revoked_at = models.DateTimeField(null=True, blank=True, editable=False)
    last_fired_at = models.DateTimeField(null=True, blank=True, editable=False)
    fired = models.PositiveIntegerField(default=0, editable=False)

    class Meta:
        ordering = ["project__key", "flag__key", "name"]

    def __str__(self) -> str:
        return f"{self.name} ({self.flag.key} {self.action} in {self.environment.key})"


class SsoIdentity(models.Model):
    """The OpenID Connect subject a person logs in as, and what their last login said."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sso_identity"
    )
    issuer = models.CharField(max_length=300)
    subject = models.CharField(max_length=255)
    groups = models.JSONField(default=list, blank=True)
    last_login_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "single sign-on identity"
        verbose_name_plural = "single sign-on identities"
        constraints = [
            models.UniqueConstraint(fields=["issuer", "subject"], name="sso_identity_unique")
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.subject})"
