"""Incoming triggers: URLs that switch one flag off (or on) in one environment for alerting
systems, each with its own secret (stored as its SHA-256 digest, shown once).

A firing goes through the same services as every other toggle, acted by the trigger itself
(`TriggerActor`), so the audit log and the version history name it. An *off* trigger is the
kill switch (`flags.schedules.flag_kill`): it also cancels what was scheduled for the flag
there, so a later rollout step cannot switch it back on behind the alert.

Protected environments: a trigger there holds the publisher's power only with the explicit
`protected_grant` a project admin gives it (audited); without it, creating the trigger is
refused and an older trigger is refused when it fires (the environment became protected).
The grant also lets it skip the change request that `require_approval` asks of people.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.core.cache import cache
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import F
from django.utils import timezone

from flags import schedules, services
from flags.models import Environment, Flag, FlagConfig, Membership
from flags.roles import Action, authorize, person
from integrations.models import Trigger

if TYPE_CHECKING:
    from flags.roles import Actor

SOURCE = "trigger"
SECRET_PREFIX = "fft_"
MAX_SECRET_LENGTH = 200
# Unauthenticated attempts one address may make per minute before it gets 429s.
FAILURES_PER_MINUTE = 30


class TriggerRefused(Exception):
    """The firing is not carried out; `status` is the HTTP status that says why."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


class TriggerActor:
    """A trigger as the author of a change: named in the audit and the history, holding in
    its project exactly the role its grant gives (publisher with it, editor without)."""

    pk = None
    is_superuser = False
    is_authenticated = True
    is_active = True

    def __init__(self, trigger: Trigger) -> None:
        self.trigger = trigger

    def get_username(self) -> str:
        return f"trigger:{self.trigger.name}"

    def project_role(self, project) -> str | None:
        if project.pk != self.trigger.project_id:
            return None
        if self.trigger.protected_grant:
            return Membership.Role.PUBLISHER
        return Membership.Role.EDITOR


def digest(secret: str) -> str:
    # Secrets carry 256 random bits: one SHA-256 is enough, nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip() or len(value) > 100:
        raise ValidationError({"name": "a name of 1 to 100 characters"})
    if "\x00" in value or any(0xD800 <= ord(char) <= 0xDFFF for char in value):
        raise ValidationError({"name": "must not contain NUL or lone surrogate characters"})
    return value.strip()


def _describe(trigger: Trigger) -> dict:
    return {
        "name": trigger.name,
        "uid": trigger.uid,
        "action": trigger.action,
        "protected_grant": trigger.protected_grant,
    }


def _audit(trigger: Trigger, action: str, actor, source: str, **values) -> None:
    services.audit(
        actor=actor,
        source=source,
        action=action,
        obj_type="trigger",
        obj_key=f"{trigger.flag.key}/{trigger.environment.key}: {trigger.name}",
        project=trigger.project,
        environment=trigger.environment,
        flag_key=trigger.flag.key,
        **values,
    )


# --- Project admins: create and revoke ----------------------------------------------------


@transaction.atomic
def trigger_create(
    *,
    flag: Flag,
    environment: Environment,
    name: str,
    action: str = Trigger.Action.OFF,
    protected_grant: bool = False,
    actor: Actor,
    source: str,
) -> tuple[Trigger, str]:
    """Create a trigger; returns it with its secret, which is never stored nor shown again."""
    project = flag.project
    authorize(actor, project, Action.ADMINISTER)
    if environment.project_id != project.pk:
        raise ValidationError({"environment": "not an environment of the flag's project"})
    if action not in Trigger.Action.values:
        raise ValidationError({"action": "off or on"})
    if not isinstance(protected_grant, bool):
        raise ValidationError({"protected_grant": "must be true or false"})
    if environment.protected and not protected_grant:
        raise ValidationError(
            {
                "protected_grant": f"{environment.key!r} is protected: grant this trigger the "
                "right to change it without review, or pick another environment"
            }
        )
    secret = SECRET_PREFIX + secrets.token_urlsafe(32)
    creator = person(actor)
    trigger = Trigger.objects.create(
        project=project,
        flag=flag,
        environment=environment,
        action=action,
        name=_name(name),
        uid="trg_" + secrets.token_urlsafe(12),
        prefix=secret[:10],
        digest=digest(secret),
        protected_grant=protected_grant,
        granted_by=creator if protected_grant else None,
        created_by=creator,
    )
    _audit(trigger, "create", actor, source, after=_describe(trigger))
    return trigger, secret


@transaction.atomic
def trigger_revoke(*, trigger: Trigger, actor: Actor, source: str) -> Trigger:
    authorize(actor, trigger.project, Action.ADMINISTER)
    if trigger.revoked_at is None:
        trigger.revoked_at = timezone.now()
        trigger.save(update_fields=["revoked_at"])
        _audit(trigger, "revoke", actor, source, before=_describe(trigger))
    return trigger


# --- Alerting systems: fire ---------------------------------------------------------------


@dataclass(frozen=True)
class Firing:
    trigger: Trigger
    config: FlagConfig
    changed: bool

    def as_json(self) -> dict:
        return {
            "trigger": self.trigger.uid,
            "flag": self.trigger.flag.key,
            "environment": self.trigger.environment.key,
            "enabled": self.config.enabled,
            "changed": self.changed,
            "version": self.config.version,
        }


def _window_count(key: str, window: int = 60) -> tuple[int, int]:
    """Count one more event in the current window; (count, seconds left in the window)."""
    now = int(time.time())
    slot = f"{key}:{now // window}"
    cache.add(slot, 0, timeout=window + 5)
    try:
        count = cache.incr(slot)
    except ValueError:  # expired between add and incr
        cache.set(slot, 1, timeout=window + 5)
        count = 1
    return count, window - now % window


def refuse_flooding_address(address: str) -> None:
    count, left = _window_count(f"trigger-failures:{address}")
    if count > FAILURES_PER_MINUTE:
        raise TriggerRefused(429, "too many failed attempts from this address", left)


def authenticate(uid: str, secret: str, address: str) -> Trigger:
    """The live trigger `uid` whose secret is `secret`, or TriggerRefused (401/403/429)."""
    trigger = None
    if 0 < len(secret) <= MAX_SECRET_LENGTH and 0 < len(uid) <= 40:
        trigger = (
            Trigger.objects.select_related("project", "flag", "environment").filter(uid=uid).first()
        )
    if trigger is None or not hmac.compare_digest(trigger.digest, digest(secret)):
        refuse_flooding_address(address)
        raise TriggerRefused(401, "unknown trigger or wrong secret")
    if trigger.revoked_at is not None:
        raise TriggerRefused(403, "this trigger was revoked")
    return trigger


def _throttle(trigger: Trigger) -> None:
    count, left = _window_count(f"trigger-firings:{trigger.pk}")
    if count > settings.TRIGGER_RATE_PER_MINUTE:
        raise TriggerRefused(
            429, f"at most {settings.TRIGGER_RATE_PER_MINUTE} firings a minute", left
        )


def _switch(trigger: Trigger, actor: TriggerActor) -> FlagConfig:
    config = FlagConfig.objects.get(flag=trigger.flag, environment=trigger.environment)
    if trigger.action == Trigger.Action.OFF:
        return schedules.flag_kill(config=config, actor=actor, source=SOURCE)
    return services.flag_config_update(
        config=config,
        data={"enabled": True},
        actor=actor,
        source=SOURCE,
        action="trigger on",
        approved=trigger.protected_grant,
    )


@transaction.atomic
def trigger_fire(*, trigger: Trigger, reason: str = "") -> Firing:
    """Switch the trigger's flag as it says, audited as the trigger (and why, if told)."""
    _throttle(trigger)
    environment = Environment.objects.get(pk=trigger.environment_id)
    if environment.protected and not trigger.protected_grant:
        raise TriggerRefused(
            403,
            f"environment {environment.key!r} is protected and this trigger has no grant "
            "to change it: a project admin must create a trigger with the grant",
        )
    actor = TriggerActor(trigger)
    version = FlagConfig.objects.get(flag=trigger.flag, environment=environment).version
    try:
        config = _switch(trigger, actor)
    except PermissionDenied as error:
        raise TriggerRefused(403, str(error)) from error
    changed = config.version != version
    Trigger.objects.filter(pk=trigger.pk).update(last_fired_at=timezone.now(), fired=F("fired") + 1)
    after: dict[str, Any] = {
        "changed": changed,
        "enabled": config.enabled,
        "version": config.version,
    }
    if reason:
        after["reason"] = reason
    _audit(trigger, "fire", actor, SOURCE, after=after)
    return Firing(trigger=trigger, config=config, changed=changed)
