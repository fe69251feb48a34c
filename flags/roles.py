"""Who may do what in a project: the role rules every door (admin, API, CLI) applies."""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from django.core.exceptions import PermissionDenied

from flags.models import Environment, Membership, Project

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

Role = Membership.Role
RANK = {Role.VIEWER: 1, Role.EDITOR: 2, Role.PUBLISHER: 3, Role.ADMIN: 4}


class Action(Enum):
    """Each action names the least role that may take it."""

    READ = Role.VIEWER
    EDIT_FLAGS = Role.EDITOR  # flags, variants, segments, tags
    CONFIGURE = Role.EDITOR  # a flag's configuration in a non-protected environment
    CONFIGURE_PROTECTED = Role.PUBLISHER  # ... in a protected one
    ADMINISTER = Role.ADMIN  # project settings, environments, API keys, roles


def role_of(user: AbstractBaseUser | None, project: Project) -> str | None:
    if user is None or not user.is_authenticated:
        return None
    own_role = getattr(user, "project_role", None)
    if own_role is not None:  # an actor that is not a person: an incoming trigger
        return own_role(project)
    if user.is_superuser:
        return Role.ADMIN
    cache = user.__dict__.setdefault("_project_roles", {})
    if project.pk not in cache:
        membership = Membership.objects.filter(project=project, user=user).first()
        cache[project.pk] = membership.role if membership else None
    return cache[project.pk]


def allows(
    user: AbstractBaseUser | None,
    project: Project,
    action: Action,
    environment: Environment | None = None,
) -> bool:
    if action is Action.CONFIGURE and environment is not None and environment.protected:
        action = Action.CONFIGURE_PROTECTED
    role = role_of(user, project)
    return role is not None and RANK[role] >= RANK[action.value]


def authorize(
    actor: AbstractBaseUser | None,
    project: Project,
    action: Action,
    environment: Environment | None = None,
) -> None:
    """Raise PermissionDenied with a reason a person can act on.

    `actor=None` is the system itself (migrations, the demo loader, `manage.py` without
    `--as`): operators at the shell already hold the keys to the database.
    """
    if actor is None or allows(actor, project, action, environment):
        return
    role = role_of(actor, project) or "no role"
    where = f" in protected environment {environment.key!r}" if environment else ""
    needed = (
        Action.CONFIGURE_PROTECTED
        if (action is Action.CONFIGURE and environment is not None and environment.protected)
        else action
    )
    raise PermissionDenied(
        f"{actor.get_username()} is {role} in project {project.key!r}; "
        f"this change{where} needs the {needed.value} role"
    )


def needs_change_request(actor: AbstractBaseUser | None, environment: Environment) -> bool:
    """With `require_approval`, only project admins change protected environments directly."""
    project = environment.project
    if actor is None or not (project.require_approval and environment.protected):
        return False
    return role_of(actor, project) != Role.ADMIN


def check_direct_write(actor: AbstractBaseUser | None, flag, environment: Environment) -> None:
    """Refuse a direct change that needs an approved change request, saying how to open one."""
    if not needs_change_request(actor, environment):
        return
    project = environment.project
    raise PermissionDenied(
        f"project {project.key!r} requires approval for changes to protected environment "
        f"{environment.key!r}: open a change request (POST /api/v1/projects/{project.key}"
        f"/flags/{flag.key}/environments/{environment.key}/change-requests)"
    )


def visible_projects(user: AbstractBaseUser):
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user)
