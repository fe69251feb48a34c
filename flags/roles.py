"""Who may do what in a project: the role rules every door (admin, API, CLI) applies."""

from __future__ import annotations

from enum import Enum
from typing import Any, Protocol, TypeAlias

from django.contrib.auth.models import User
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet

from flags.models import Environment, Membership, Project


class Identity(Protocol):
    """Whoever acts: a person, the operator at the shell (`Operator`), or a trigger."""

    @property
    def pk(self) -> Any: ...
    @property
    def is_authenticated(self) -> bool: ...
    @property
    def is_active(self) -> bool: ...
    @property
    def is_superuser(self) -> bool: ...
    def get_username(self) -> str: ...


# `None` is the system itself (migrations, the demo loader, the scheduler applying what was
# approved).
Actor: TypeAlias = Identity | None


def person(actor: Actor) -> User | None:
    """The user an audit entry or a row links to: a person, never an operator or a trigger
    (those are named, not linked)."""
    return actor if isinstance(actor, User) and actor.pk else None


Role = Membership.Role
RANK: dict[str, int] = {Role.VIEWER: 1, Role.EDITOR: 2, Role.PUBLISHER: 3, Role.ADMIN: 4}


class Action(Enum):
    """What an actor sets out to do in a project; `least_role` is who may."""

    READ = "read"
    EDIT_FLAGS = "edit-flags"  # flags, variants, segments, tags
    CONFIGURE = "configure"  # a flag's configuration in a non-protected environment
    CONFIGURE_PROTECTED = "configure-protected"  # ... in a protected one
    ADMINISTER = "administer"  # project settings, environments, API keys, roles

    @property
    def least_role(self) -> Membership.Role:
        return LEAST_ROLE[self]


# Distinct values above: two actions sharing a role must stay two actions (an enum merges
# members of equal value), or a check of one would apply the other's rules.
LEAST_ROLE = {
    Action.READ: Role.VIEWER,
    Action.EDIT_FLAGS: Role.EDITOR,
    Action.CONFIGURE: Role.EDITOR,
    Action.CONFIGURE_PROTECTED: Role.PUBLISHER,
    Action.ADMINISTER: Role.ADMIN,
}


class Operator:
    """The person at the shell running `manage.py flags` without `--as`.

    Operators hold the database's keys, so every role check passes; approvals do not: a
    write that needs an approved change request is refused unless the operator names a
    reason with `--bypass-approval`, and every write let through that way is audited with it.
    """

    pk = None
    is_authenticated = True
    is_active = True
    is_superuser = True
    is_staff = True

    def __init__(self, bypass_reason: str = "") -> None:
        self.bypass_reason = bypass_reason

    def get_username(self) -> str:
        return "operator"

    def __str__(self) -> str:
        return self.get_username()


def bypasses_approval(actor: object) -> bool:
    return isinstance(actor, Operator) and bool(actor.bypass_reason)


def role_of(user: Actor, project: Project) -> str | None:
    if user is None or not user.is_authenticated:
        return None
    own_role = getattr(user, "project_role", None)
    if own_role is not None:  # an actor that is not a person: an incoming trigger
        return own_role(project)
    if user.is_superuser:
        return Role.ADMIN
    cache = user.__dict__.setdefault("_project_roles", {})
    if project.pk not in cache:
        membership = Membership.objects.filter(project=project, user=person(user)).first()
        cache[project.pk] = membership.role if membership else None
    return cache[project.pk]


def allows(
    user: Actor,
    project: Project,
    action: Action,
    environment: Environment | None = None,
) -> bool:
    if action is Action.CONFIGURE and environment is not None and environment.protected:
        action = Action.CONFIGURE_PROTECTED
    role = role_of(user, project)
    return role is not None and RANK[role] >= RANK[action.least_role]


def authorize(
    actor: Actor,
    project: Project,
    action: Action,
    environment: Environment | None = None,
) -> None:
    """Raise PermissionDenied with a reason a person can act on.

    `actor=None` is the system itself (migrations, the demo loader, the scheduler applying
    what was approved): it passes every check. People at the shell are an `Operator`.
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
        f"this change{where} needs the {needed.least_role} role"
    )


def needs_change_request(actor: Actor, environment: Environment) -> bool:
    """With `require_approval`, only project admins change protected environments directly.

    An operator at the shell is not a project admin: only `--bypass-approval` lets them
    past, and that is audited.
    """
    project = environment.project
    if actor is None or not (project.require_approval and environment.protected):
        return False
    if isinstance(actor, Operator):
        return not actor.bypass_reason
    return role_of(actor, project) != Role.ADMIN


def check_direct_write(actor: Actor, flag, environment: Environment) -> None:
    """Refuse a direct change that needs an approved change request, saying how to open one."""
    if not needs_change_request(actor, environment):
        return
    project = environment.project
    proposal = (
        f"POST /api/v1/projects/{project.key}/flags/{flag.key}/environments/"
        f"{environment.key}/change-requests"
    )
    raise PermissionDenied(
        f"project {project.key!r} requires approval for changes to protected environment "
        f"{environment.key!r}: {_way_forward(actor, proposal)}"
    )


def _way_forward(actor: object, proposal: str) -> str:
    if isinstance(actor, Operator):
        return (
            "act as a person with --as USERNAME (their role and approvals apply), or, as an "
            'operator, pass --bypass-approval "REASON" (audited)'
        )
    return f"open a change request ({proposal})"


def check_indirect_write(
    actor: Actor, environment: Environment, subject: str, proposal: str
) -> None:
    """Refuse a change to `subject` (a flag's own fields, a segment) that alters what the
    protected `environment` serves, unless the actor may write there directly.

    The same gate as a direct write: the protected role, and, where the project requires
    approval, an approved change request (`proposal` says where to open one).
    """
    project = environment.project
    if not allows(actor, project, Action.CONFIGURE, environment) and actor is not None:
        role = role_of(actor, project) or "no role"
        raise PermissionDenied(
            f"{actor.get_username()} is {role} in project {project.key!r}; this change to "
            f"{subject} alters what protected environment {environment.key!r} serves and "
            f"needs the {Action.CONFIGURE_PROTECTED.least_role} role"
        )
    if needs_change_request(actor, environment):
        raise PermissionDenied(
            f"project {project.key!r} requires approval for changes to protected environment "
            f"{environment.key!r}, and this change to {subject} alters what it serves: "
            f"{_way_forward(actor, proposal)}"
        )


def visible_projects(user: Identity) -> QuerySet[Project]:
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=person(user))
