"""Webhooks of a project: create, change, delete, send a delivery again (project admins).

Every write is authorized with the project's roles and audited, like the flag services.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from flags import services
from flags.models import Project
from flags.roles import Action, authorize, person
from integrations.events import KINDS
from integrations.models import Delivery, Webhook

if TYPE_CHECKING:
    from flags.roles import Actor

FIELDS = ("name", "url", "format", "environments", "kinds", "active")
SECRET_PREFIX = "whsec_"


def _text(value: Any, field: str, limit: int) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValidationError({field: "must be a non-empty string"})
    if len(value) > limit:
        raise ValidationError({field: f"at most {limit} characters"})
    if "\x00" in value or any(0xD800 <= ord(char) <= 0xDFFF for char in value):
        raise ValidationError({field: "must not contain NUL or lone surrogate characters"})
    return value.strip()


def check_url(value: Any) -> str:
    url = _text(value, "url", 2000)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValidationError({"url": "give an http:// or https:// URL"})
    if any(char.isspace() for char in url):
        raise ValidationError({"url": "must not contain spaces"})
    return url


def _keys(value: Any, field: str, allowed: list[str]) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValidationError({field: "must be a list of strings"})
    unknown = [item for item in value if item not in allowed]
    if unknown:
        raise ValidationError({field: f"unknown {unknown[0]!r} (one of {', '.join(allowed)})"})
    return list(dict.fromkeys(value))


def _apply(webhook: Webhook, data: dict) -> None:
    unknown = set(data) - set(FIELDS)
    if unknown:
        raise ValidationError({sorted(unknown)[0]: "unknown field"})
    if "name" in data:
        webhook.name = _text(data["name"], "name", 200)
    if "url" in data:
        webhook.url = check_url(data["url"])
    if "format" in data:
        if data["format"] not in Webhook.Format.values:
            raise ValidationError({"format": f"one of {', '.join(Webhook.Format.values)}"})
        webhook.format = data["format"]
    if "environments" in data:
        keys = list(webhook.project.environments.values_list("key", flat=True))
        webhook.environments = _keys(data["environments"], "environments", keys)
    if "kinds" in data:
        webhook.kinds = _keys(data["kinds"], "kinds", list(KINDS))
    if "active" in data:
        if not isinstance(data["active"], bool):
            raise ValidationError({"active": "must be true or false"})
        if data["active"] and not webhook.active:
            webhook.failures, webhook.disabled_reason = 0, ""
        webhook.active = data["active"]


def describe(webhook: Webhook) -> dict:
    """What the audit keeps: never the secret, and only the receiver's host (Slack's URLs
    are credentials themselves)."""
    return {
        "name": webhook.name,
        "host": urlsplit(webhook.url).hostname,
        "format": webhook.format,
        "environments": webhook.environments,
        "kinds": webhook.kinds,
        "active": webhook.active,
    }


def _audit(webhook: Webhook, action: str, actor, source: str, **values) -> None:
    services.audit(
        actor=actor,
        source=source,
        action=action,
        obj_type="webhook",
        obj_key=webhook.name,
        project=webhook.project,
        **values,
    )


@transaction.atomic
def webhook_create(
    *, project: Project, data: dict, actor: Actor, source: str
) -> tuple[Webhook, str]:
    """Create a webhook; returns it with its signing secret, shown to the caller once."""
    authorize(actor, project, Action.ADMINISTER)
    for field in ("name", "url"):
        if field not in data:
            raise ValidationError({field: "required"})
    webhook = Webhook(
        project=project,
        secret=SECRET_PREFIX + secrets.token_urlsafe(32),
        created_by=person(actor),
    )
    _apply(webhook, data)
    webhook.save()
    _audit(webhook, "create", actor, source, after=describe(webhook))
    return webhook, webhook.secret


@transaction.atomic
def webhook_update(*, webhook: Webhook, data: dict, actor: Actor, source: str) -> Webhook:
    webhook = Webhook.objects.select_for_update().select_related("project").get(pk=webhook.pk)
    authorize(actor, webhook.project, Action.ADMINISTER)
    before = describe(webhook)
    _apply(webhook, data)
    webhook.save()
    after = describe(webhook)
    if after != before or "url" in data:
        _audit(webhook, "update", actor, source, before=before, after=after)
    return webhook


@transaction.atomic
def webhook_delete(*, webhook: Webhook, actor: Actor, source: str) -> None:
    authorize(actor, webhook.project, Action.ADMINISTER)
    before = describe(webhook)
    _audit(webhook, "delete", actor, source, before=before)
    webhook.delete()


@transaction.atomic
def delivery_retry(*, delivery: Delivery, actor: Actor, source: str) -> Delivery:
    """Send a delivery again (a failed one, or a pending one now instead of later)."""
    delivery = Delivery.objects.select_related("webhook__project", "event").get(pk=delivery.pk)
    authorize(actor, delivery.webhook.project, Action.ADMINISTER)
    if delivery.status == Delivery.Status.SENT:
        raise ValidationError({"status": "this delivery was sent; nothing to retry"})
    delivery.status = Delivery.Status.PENDING
    delivery.next_attempt_at = timezone.now()
    delivery.save(update_fields=["status", "next_attempt_at"])
    _audit(
        delivery.webhook,
        "retry",
        actor,
        source,
        after={"delivery": delivery.pk, "event": delivery.event.kind},
    )
    return delivery
