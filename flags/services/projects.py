"""Projects, their environments and project settings."""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction

from flags.models import Environment, FlagConfig, Membership, Project
from flags.roles import Action, authorize, person
from flags.services.flags import _initial_config
from flags.services.steps import _save, audit, environments_changed

if TYPE_CHECKING:
    from flags.roles import Actor


DEFAULT_ENVIRONMENTS = (
    ("development", "Development", False),
    ("staging", "Staging", False),
    ("production", "Production", True),
)

# --- Projects and environments ----------------------------------------------------------


@transaction.atomic
def project_create(
    *, key: str, name: str = "", description: str = "", actor: Actor, source: str
) -> Project:
    if actor is not None and not actor.is_superuser:
        raise PermissionDenied("only superusers create projects")
    project = Project(key=key, name=name or key, description=description)
    _save(project)
    for position, (env_key, env_name, protected) in enumerate(DEFAULT_ENVIRONMENTS):
        Environment.objects.create(
            project=project, key=env_key, name=env_name, protected=protected, position=position
        )
    creator = person(actor)
    if creator is not None:
        Membership.objects.create(project=project, user=creator, role=Membership.Role.ADMIN)
    audit(
        actor=actor,
        source=source,
        action="create",
        obj_type="project",
        obj_key=key,
        project=project,
        after={"key": key, "name": project.name},
    )
    return project


@transaction.atomic
def environment_create(
    *,
    project: Project,
    key: str,
    name: str = "",
    protected: bool = False,
    actor: Actor,
    source: str,
) -> Environment:
    authorize(actor, project, Action.ADMINISTER)
    position = project.environments.count()
    environment = Environment(
        project=project, key=key, name=name or key, protected=protected, position=position
    )
    _save(environment)
    for flag in project.flags.prefetch_related("variants"):
        FlagConfig.objects.create(flag=flag, environment=environment, **_initial_config(flag))
    audit(
        actor=actor,
        source=source,
        action="create",
        obj_type="environment",
        obj_key=key,
        project=project,
        environment=environment,
        after={"key": key, "protected": protected},
    )
    return environment


ENVIRONMENT_FIELDS = ("name", "protected", "secure_mode")


@transaction.atomic
def environment_update(
    *, environment: Environment, data: dict, actor: Actor, source: str
) -> Environment:
    authorize(actor, environment.project, Action.ADMINISTER)
    before = {field: getattr(environment, field) for field in ENVIRONMENT_FIELDS}
    for field in ENVIRONMENT_FIELDS:
        if field in data:
            setattr(environment, field, data[field])
    if environment.secure_mode and not environment.secure_mode_secret:
        raise ValidationError(
            {"secure_mode": "make the environment's secure mode secret first (docs/security.md)"}
        )
    # Its own fields only: the version read with it may be behind by now (a write since).
    _save(environment, fields=ENVIRONMENT_FIELDS)
    after = {field: getattr(environment, field) for field in ENVIRONMENT_FIELDS}
    if after["secure_mode"] != before["secure_mode"]:
        # What client keys are answered changes: evaluating processes re-read it.
        environments_changed([environment.pk], flags=(), segments=())  # no entry changes
        environment.refresh_from_db(fields=["version"])
    audit(
        actor=actor,
        source=source,
        action="update",
        obj_type="environment",
        obj_key=environment.key,
        project=environment.project,
        environment=environment,
        before=before,
        after=after,
    )
    return environment


SECURE_MODE_SECRET_PREFIX = "fsm_"


@transaction.atomic
def environment_secure_mode_secret_rotate(
    *, environment: Environment, actor: Actor, source: str
) -> tuple[Environment, str]:
    """Make a new secure mode secret (the first, or in place of the current one).

    Returns it once; the service keeps it to verify hashes and never shows it again. The
    previous secret stops verifying as soon as this commits (docs/security.md).
    """
    authorize(actor, environment.project, Action.ADMINISTER)
    secret = SECURE_MODE_SECRET_PREFIX + secrets.token_urlsafe(32)
    replaced = bool(environment.secure_mode_secret)
    environment.secure_mode_secret = secret
    environment.save(update_fields=["secure_mode_secret"])
    if environment.secure_mode:
        environments_changed([environment.pk], flags=(), segments=())  # no entry changes
        environment.refresh_from_db(fields=["version"])
    audit(
        actor=actor,
        source=source,
        action="rotate-secret" if replaced else "create-secret",
        obj_type="environment",
        obj_key=environment.key,
        project=environment.project,
        environment=environment,
        # Which secret, never the secret: the prefix that lists show too.
        after={"secure_mode_secret": secure_mode_secret_prefix(environment)},
    )
    return environment, secret


def secure_mode_secret_prefix(environment: Environment) -> str | None:
    """What may be shown of the secret: enough to tell two apart, nothing to verify with."""
    secret = environment.secure_mode_secret
    return secret[:10] if secret else None


# --- Project settings -------------------------------------------------------------------

PROJECT_FIELDS = ("name", "description", "require_approval")


@transaction.atomic
def project_update(*, project: Project, data: dict, actor: Actor, source: str) -> Project:
    """Change a project's own settings (its key is fixed: clients and URLs use it)."""
    authorize(actor, project, Action.ADMINISTER)
    if "key" in data and data["key"] != project.key:
        raise ValidationError({"key": "a project's key cannot change once created"})
    before = {field: getattr(project, field) for field in PROJECT_FIELDS}
    for field in PROJECT_FIELDS:
        if field in data:
            setattr(project, field, data[field])
    _save(project)
    after = {field: getattr(project, field) for field in PROJECT_FIELDS}
    if after != before:
        audit(
            actor=actor,
            source=source,
            action="update",
            obj_type="project",
            obj_key=project.key,
            project=project,
            before=before,
            after=after,
        )
    return project
