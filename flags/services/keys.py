"""API keys: create (the secret shown once, stored hashed) and revoke."""

from __future__ import annotations

import secrets
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from evaluation import credentials
from evaluation.credentials import key_digest
from flags.models import ApiKey, Environment
from flags.roles import Action, authorize, person
from flags.services.steps import _save, audit

if TYPE_CHECKING:
    from flags.roles import Actor


# --- API keys ---------------------------------------------------------------------------

KEY_PREFIXES: dict[str, str] = {ApiKey.Kind.SERVER: "ffs_", ApiKey.Kind.CLIENT: "ffc_"}


@transaction.atomic
def api_key_create(
    *,
    environment: Environment,
    kind: str,
    name: str,
    expires_at: datetime | None = None,
    actor: Actor,
    source: str,
) -> tuple[ApiKey, str]:
    """Create a key and return it with its secret, which is never stored nor shown again."""
    authorize(actor, environment.project, Action.ADMINISTER)
    if kind not in ApiKey.Kind.values:
        raise ValidationError({"kind": f"unknown kind {kind!r} (server or client)"})
    if expires_at is not None and expires_at <= timezone.now():
        raise ValidationError({"expires_at": "must be in the future"})
    secret = KEY_PREFIXES[kind] + secrets.token_urlsafe(32)
    key = ApiKey(
        environment=environment,
        kind=kind,
        name=name,
        prefix=secret[:10],
        digest=key_digest(secret),
        expires_at=expires_at,
        created_by=person(actor),
    )
    _save(key)
    audit(
        actor=actor,
        source=source,
        action="create",
        obj_type="api_key",
        obj_key=f"{name} ({key.prefix}…)",
        project=environment.project,
        environment=environment,
        after={"kind": kind, "name": name, "prefix": key.prefix},
    )
    return key, secret


@transaction.atomic
def api_key_revoke(*, key: ApiKey, actor: Actor, source: str) -> ApiKey:
    authorize(actor, key.environment.project, Action.ADMINISTER)
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
        audit(
            actor=actor,
            source=source,
            action="revoke",
            obj_type="api_key",
            obj_key=f"{key.name} ({key.prefix}…)",
            project=key.environment.project,
            environment=key.environment,
        )
        transaction.on_commit(partial(credentials.record_revocation, key.digest))
    return key
