"""A flag's own fields: key, type, variants, tags, owner."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.db.models import F

from evaluation.engine import BOOLEAN_VARIANTS
from flags import impact
from flags.models import (
    Flag,
    FlagConfig,
    Membership,
    Prerequisite,
    Project,
    Rule,
    Tag,
    Target,
    Variant,
)
from flags.roles import Action, authorize
from flags.services.steps import (
    ConflictError,
    _check_impact,
    _project_environment_ids,
    _save,
    audit,
    environments_changed,
)
from flags.validation import check_variants

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from flags.roles import Actor


# --- Flags ------------------------------------------------------------------------------


def _default_variants(flag_type: str) -> list[dict]:
    if flag_type == Flag.Type.BOOLEAN:
        return [{"key": key, "value": value} for key, value in BOOLEAN_VARIANTS.items()]
    raise ValidationError({"variants": f"a {flag_type} flag needs its variants listed"})


def _initial_config(flag: Flag) -> dict:
    """A new flag is off everywhere; when switched on it serves its first variant."""
    keys = [variant.key for variant in flag.variants.all()]
    off = "off" if "off" in keys else keys[-1]
    return {"enabled": False, "off_variant": off, "serve_variant": keys[0]}


def _set_tags(flag: Flag, names: Iterable[str]) -> None:
    tags = []
    for name in names:
        tag = Tag(project=flag.project, name=name)
        try:
            tag.full_clean(exclude=["project"], validate_unique=False)
        except ValidationError as error:
            raise ValidationError({"tags": f"{name!r}: {error.messages[0]}"}) from error
        tags.append(Tag.objects.get_or_create(project=flag.project, name=name)[0])
    flag.tags.set(tags)


def flag_meta(flag: Flag, *, tags: Iterable[str] | None = None) -> dict:
    """The flag's own fields as the audit log and history record them. `tags` gives its
    tag names when the caller has them in hand (a batch's rows), instead of a query."""
    if tags is None:
        tags = flag.tags.values_list("name", flat=True) if flag.pk else []
    return {
        "key": flag.key,
        "name": flag.name,
        "description": flag.description,
        "type": flag.type,
        "salt": flag.salt,
        "bucketing": flag.bucketing,
        "archived": flag.archived,
        "clientSide": flag.client_side,
        "owner": flag.owner.get_username() if flag.owner else None,
        "tags": sorted(tags),
        "variants": [{"key": v.key, "value": v.value} for v in flag.variants.all()]
        if flag.pk
        else [],
    }


@transaction.atomic
def flag_create(
    *,
    project: Project,
    key: str,
    name: str = "",
    type: str = Flag.Type.BOOLEAN,
    variants: list[dict] | None = None,
    description: str = "",
    tags: Iterable[str] = (),
    owner: User | None = None,
    salt: str = "",
    bucketing: str = "flagd",
    client_side: bool = False,
    actor: Actor,
    source: str,
) -> Flag:
    authorize(actor, project, Action.EDIT_FLAGS)
    _check_owner(project, owner)
    if type not in Flag.Type.values:
        raise ValidationError(
            {"type": f"unknown type {type!r} (one of {', '.join(Flag.Type.values)})"}
        )
    variants = variants if variants is not None else _default_variants(type)
    check_variants(type, variants)
    flag = Flag(
        project=project,
        key=key,
        name=name or key,
        description=description,
        type=type,
        salt=salt,
        bucketing=bucketing,
        owner=owner,
        client_side=client_side,
    )
    _save(flag)
    _write_variants(flag, variants)
    _set_tags(flag, tags)
    for environment in project.environments.all():
        FlagConfig.objects.create(flag=flag, environment=environment, **_initial_config(flag))
    audit(
        actor=actor,
        source=source,
        action="create",
        obj_type="flag",
        obj_key=key,
        project=project,
        flag_key=key,
        after=flag_meta(flag),
    )
    environments_changed(_project_environment_ids(project), flags=[flag.pk], segments=())
    return flag


def _check_owner(project: Project, owner: User | None) -> None:
    """A flag's owner is a member of its project; naming anyone else reveals nothing."""
    if owner is None:
        return
    if not Membership.objects.filter(project=project, user_id=owner.pk).exists():
        raise ValidationError(
            {"owner": f"{owner.get_username()!r} is not a member of project {project.key!r}"}
        )


def _write_variants(flag: Flag, variants: list[dict]) -> None:
    existing = {variant.key: variant for variant in flag.variants.all()}
    for position, data in enumerate(variants):
        variant = existing.pop(data["key"], None) or Variant(flag=flag, key=data["key"])
        variant.value = data["value"]
        variant.name = data.get("name", variant.name)
        variant.position = position
        _save(variant, exclude=["flag"])
    for variant in existing.values():
        _check_variant_unused(flag, variant.key)
        variant.delete()


def _check_variant_unused(flag: Flag, key: str) -> None:
    rollouts = [
        *FlagConfig.objects.filter(flag=flag).values_list("rollout", flat=True),
        *Rule.objects.filter(flag=flag).values_list("rollout", flat=True),
    ]
    uses = [
        FlagConfig.objects.filter(flag=flag, off_variant=key).exists(),
        FlagConfig.objects.filter(flag=flag, serve_variant=key).exists(),
        Rule.objects.filter(flag=flag, serve_variant=key).exists(),
        any(key in rollout_variants(rollout) for rollout in rollouts),
        Target.objects.filter(flag=flag, variant=key).exists(),
        Prerequisite.objects.filter(required_flag=flag, variants__contains=[key]).exists()
        if _json_contains_supported()
        else any(key in p.variants for p in Prerequisite.objects.filter(required_flag=flag)),
    ]
    if any(uses):
        raise ValidationError({"variants": f"variant {key!r} is in use and cannot be removed"})


def rollout_variants(rollout: list | None) -> list[str | None]:
    """Variant keys of a stored rollout (`[{"variant": KEY, "weight": N}, ...]`)."""
    return [item.get("variant") for item in rollout or [] if isinstance(item, dict)]


def _json_contains_supported() -> bool:
    return connection.features.supports_json_field_contains


FLAG_FIELDS = ("name", "description", "salt", "bucketing", "archived", "owner", "client_side")


@transaction.atomic
def flag_update(
    *,
    flag: Flag,
    data: dict,
    actor: Actor,
    source: str,
    expected_version: int | None = None,
    approved: bool = False,
) -> Flag:
    """Change a flag's own fields (not its per-environment configuration).

    Variants' values, `archived`, `salt` and `client_side` change what every environment
    serves: in a protected environment that passes the same gate as a direct write to it
    (the protected role; an approved change request where the project requires approval,
    which `approved` says this applies).
    """
    authorize(actor, flag.project, Action.EDIT_FLAGS)
    current = Flag.objects.select_for_update().filter(pk=flag.pk).values_list("version", flat=True)
    flag.version = current.get()
    if "key" in data and data["key"] != flag.key:
        raise ValidationError({"key": "a flag's key cannot change once created"})
    if "type" in data and data["type"] != flag.type:
        raise ValidationError({"type": "a flag's type cannot change once created"})
    if expected_version is not None and expected_version != flag.version:
        raise ConflictError(
            f"flag {flag.key} is at version {flag.version}, not {expected_version}: "
            "reload and make your change again",
            flag.version,
        )
    if "owner" in data:
        _check_owner(flag.project, data["owner"])
    proposal = f"POST /api/v1/projects/{flag.project.key}/flags/{flag.key}/change-requests"
    with impact.measured(flag.project, flag_keys=[flag.key]) as measurement:
        before, after = _write_flag_fields(flag, data)
    if after == before:
        return flag
    if measurement.changes:
        _check_impact(
            actor=actor,
            measurement=measurement,
            approved=approved,
            source=source,
            proposal=proposal,
        )
    Flag.objects.filter(pk=flag.pk).update(version=F("version") + 1)
    flag.refresh_from_db(fields=["version"])
    audit(
        actor=actor,
        source=source,
        action="archive" if after["archived"] and not before["archived"] else "update",
        obj_type="flag",
        obj_key=flag.key,
        project=flag.project,
        flag_key=flag.key,
        before=before,
        after=after,
    )
    environments_changed(_project_environment_ids(flag.project), flags=[flag.pk], segments=())
    return flag


def _write_flag_fields(flag: Flag, data: dict) -> tuple[dict, dict]:
    """Write the flag's own fields; its metadata before and after."""
    before = flag_meta(flag)
    for field in FLAG_FIELDS:
        if field in data:
            setattr(flag, field, data[field])
    if "variants" in data:
        check_variants(flag.type, data["variants"])
    _save(flag)
    if "variants" in data:
        _write_variants(flag, data["variants"])
    if "tags" in data:
        _set_tags(flag, data["tags"])
    return before, flag_meta(flag)
