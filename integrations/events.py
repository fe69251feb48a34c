"""Changes as webhook events: which kinds an audited change is, its body, its deliveries.

`flags.services.audit` calls `audit_recorded` for every audit entry, inside the change's
own transaction, so an event (and one delivery per subscribed webhook) exists exactly when
the change commits; a rolled-back change sends nothing. The worker in
`integrations.delivery` sends them after the commit.
"""

from __future__ import annotations

import json
from typing import Any

from django.db import transaction
from django.utils import timezone

from flags import history
from flags.models import AuditEntry, ChangeRequest, FlagConfig, Project
from integrations import delivery
from integrations.models import Delivery, Webhook, WebhookEvent

# Most specific first: an event's `kind` is the first of its kinds in this order.
KINDS = {
    "guarded_rollout.paused": "A guarded rollout was paused by its safety check",
    "rollout.step": "A step of a gradual rollout was applied",
    "change_request.approved": "A change request got its approvals",
    "change_request.opened": "A change request was opened",
    "flag.archived": "A flag was archived",
    "flag.switched": "A flag was switched on or off in an environment",
    "flag.changed": "A flag or its configuration in an environment changed",
}
ORDER = list(KINDS)


def kinds_of(entry: AuditEntry) -> list[str]:
    """The event kinds an audit entry is, most specific first; [] when it is none."""
    kinds = set()
    if entry.object_type == "flag_config":
        kinds.add("flag.changed")
        before, after = entry.before or {}, entry.after or {}
        if entry.before is not None and before.get("enabled") != after.get("enabled"):
            kinds.add("flag.switched")
        if entry.action.startswith("rollout step"):
            kinds.add("rollout.step")
    elif entry.object_type == "flag":
        kinds.add("flag.changed")
        if entry.action == "archive":
            kinds.add("flag.archived")
    elif entry.object_type == "change_request" and entry.action == "propose":
        kinds.add("change_request.opened")
    return sorted(kinds, key=ORDER.index)


def _flag_diff(before: dict | None, after: dict | None) -> list[str]:
    if before is None:
        return ["created"]
    lines = []
    for field in sorted(set(before) | set(after or {})):
        old, new = before.get(field), (after or {}).get(field)
        if old != new:
            lines.append(f"{field}: {_text(old)} → {_text(new)}")
    return lines


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _changes(entry: AuditEntry) -> list[str]:
    if entry.object_type in ("flag_config", "change_request") and isinstance(entry.after, dict):
        return history.state_diff(entry.before, entry.after)
    return _flag_diff(entry.before, entry.after)


def _config_version(entry: AuditEntry) -> int | None:
    if entry.object_type != "flag_config" or entry.environment_id is None:
        return None
    if entry.project_id is None:
        return None
    return (
        FlagConfig.objects.filter(
            flag__project_id=entry.project_id,
            flag__key=entry.flag_key,
            environment_id=entry.environment_id,
        )
        .values_list("version", flat=True)
        .first()
    )


def _body(entry: AuditEntry, kinds: list[str], **extra: Any) -> dict:
    return {
        "kind": kinds[0],
        "kinds": kinds,
        "occurredAt": (entry.created_at or timezone.now()).isoformat(),
        "project": entry.project.key if entry.project is not None else None,
        "environment": entry.environment.key if entry.environment is not None else None,
        "flag": entry.flag_key or None,
        "actor": entry.actor_name,
        "source": entry.source,
        "action": entry.action,
        "version": _config_version(entry),
        "changes": _changes(entry),
        "before": entry.before,
        "after": entry.after,
        "comment": entry.comment,
        **extra,
    }


def _subscribers(project_id: int, environment_key: str, kinds: list[str]) -> list[Webhook]:
    chosen = []
    for webhook in Webhook.objects.filter(project_id=project_id, active=True):
        if webhook.environments and environment_key and environment_key not in webhook.environments:
            continue
        if webhook.kinds and not set(webhook.kinds) & set(kinds):
            continue
        chosen.append(webhook)
    return chosen


def _queue(project: Project, environment_key: str, body: dict) -> WebhookEvent | None:
    """One event and a delivery per subscribed webhook, in the caller's transaction."""
    webhooks = _subscribers(project.pk, environment_key, body["kinds"])
    if not webhooks:
        return None
    event = WebhookEvent.objects.create(
        project=project,
        kind=body["kind"],
        environment_key=environment_key,
        flag_key=body.get("flag") or "",
        body=body,
    )
    now = timezone.now()
    Delivery.objects.bulk_create(
        [Delivery(webhook=webhook, event=event, next_attempt_at=now) for webhook in webhooks]
    )
    # Wake a worker in this process at once; workers elsewhere find it on their next poll.
    transaction.on_commit(delivery.wake)
    return event


def audit_recorded(entry: AuditEntry) -> WebhookEvent | None:
    """Queue the audited change for the project's webhooks (called by services.audit)."""
    if (
        entry.project_id is None
        or not Webhook.objects.filter(project_id=entry.project_id, active=True).exists()
    ):
        return None
    kinds = kinds_of(entry)
    if not kinds:
        return None
    project = entry.project
    if project is None:
        return None
    environment_key = entry.environment.key if entry.environment is not None else ""
    return _queue(project, environment_key, _body(entry, kinds))


def change_request_approved(*, request: ChangeRequest, actor_name: str, source: str) -> None:
    """Queue `change_request.approved` once a request has all its approvals.

    A request on a configuration names its environment; one on a flag's own fields or on a
    segment is queued once per protected environment whose answers it changes (its impact).
    """
    config = request.config
    if config is not None:
        project, flag_key, version = config.flag.project, config.flag.key, config.version
        environment_keys = [config.environment.key]
    else:
        project = request.project
        flag_key = request.flag.key if request.flag is not None else ""
        version = request.base_version
        environment_keys = sorted({entry["environment"] for entry in request.impact or []})
    body = {
        "kind": "change_request.approved",
        "kinds": ["change_request.approved"],
        "occurredAt": timezone.now().isoformat(),
        "project": project.key,
        "flag": flag_key,
        "actor": actor_name,
        "source": source,
        "action": "approve",
        "version": version,
        "changeRequest": {"id": request.pk, "title": request.title, "author": request.author_name},
        "changes": history.state_diff(request.base_state, request.proposed_state),
        "before": request.base_state,
        "after": request.proposed_state,
    }
    if request.segment is not None:
        body["segment"] = request.segment.key
    for environment_key in environment_keys or [""]:
        _queue(project, environment_key, {**body, "environment": environment_key})


def guarded_rollout_paused(
    *, config: FlagConfig, reason: str, source: str = "system", action: str = "pause"
) -> None:
    """Queue `guarded_rollout.paused`: the guarded rollouts' check (flags.guards) calls it
    when a guard stops a rollout; `action` is `pause` or `rollback`."""
    project = config.flag.project
    body = {
        "kind": "guarded_rollout.paused",
        "kinds": ["guarded_rollout.paused"],
        "occurredAt": timezone.now().isoformat(),
        "project": project.key,
        "environment": config.environment.key,
        "flag": config.flag.key,
        "actor": "system",
        "source": source,
        "action": action,
        "version": config.version,
        "reason": reason,
        "changes": [
            f"guarded rollout {'rolled back' if action == 'rollback' else 'paused'}: {reason}"
        ],
        "before": None,
        "after": None,
    }
    _queue(project, config.environment.key, body)
