"""Who belongs to a project, with which role."""

from __future__ import annotations

from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError
from django.db import transaction

from flags.models import Membership, Project
from flags.roles import Action, authorize
from flags.services.steps import audit

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from flags.roles import Actor


@transaction.atomic
def membership_set(
    *, project: Project, user: User, role: str | None, actor: Actor, source: str
) -> Membership | None:
    """Give `user` a role in the project, or remove it with `role=None`."""
    authorize(actor, project, Action.ADMINISTER)
    current = Membership.objects.filter(project=project, user=user).first()
    before = current.role if current else None
    if role is None:
        if current:
            current.delete()
        membership = None
    else:
        if role not in Membership.Role.values:
            raise ValidationError({"role": f"unknown role {role!r}"})
        membership = current or Membership(project=project, user=user)
        membership.role = role
        membership.save()
    audit(
        actor=actor,
        source=source,
        action="role",
        obj_type="membership",
        obj_key=user.get_username(),
        project=project,
        before={"role": before},
        after={"role": role},
    )
    return membership
