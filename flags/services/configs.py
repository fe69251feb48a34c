"""Every write to the flag store: validate, check the role, write, audit, bump the version.

The admin, the REST API and the command line all call these functions, so a rule is
enforced once. Side effects that must follow a commit (cache, pub/sub) are registered with
`transaction.on_commit` here, never in model signals.
"""

from __future__ import annotations

import copy
import hashlib
import secrets
from collections.abc import Iterable
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

from django.core.exceptions import NON_FIELD_ERRORS, ValidationError
from django.db import IntegrityError, transaction
from django.db.models import F, prefetch_related_objects
from django.utils import timezone

from evaluation import cache
from evaluation.documents import flag_entry, flag_state, segment_entry, targeting_prefetches
from evaluation.engine import BOOLEAN_VARIANTS
from flags import history, impact
from flags.models import (
    ApiKey,
    AuditEntry,
    Environment,
    Flag,
    FlagConfig,
    Membership,
    Prerequisite,
    Project,
    Rule,
    Segment,
    Tag,
    Target,
)
from flags.roles import (
    Action,
    authorize,
    bypasses_approval,
    check_direct_write,
    check_indirect_write,
    person,
)
from integrations import events

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from flags.roles import Actor

DEFAULT_ENVIRONMENTS = (
    ("development", "Development", False),
    ("staging", "Staging", False),
    ("production", "Production", True),
)
SOURCES = ("admin", "api", "cli", "system", "scheduler")


class ConflictError(Exception):
    """A write based on an outdated version of what it changes (HTTP 409)."""

    def __init__(self, message: str, current_version: int) -> None:
        super().__init__(message)
        self.current_version = current_version


# --- Shared steps -----------------------------------------------------------------------


def _actor_name(actor: Actor) -> str:
    return actor.get_username() if actor is not None else "system"


def audit(
    *,
    actor: Actor,
    source: str,
    action: str,
    obj_type: str,
    obj_key: str,
    project: Project | None,
    environment: Environment | None = None,
    flag_key: str = "",
    before: Any = None,
    after: Any = None,
) -> AuditEntry:
    entry = AuditEntry.objects.create(
        actor=person(actor),
        actor_name=_actor_name(actor),
        source=source,
        action=action,
        object_type=obj_type,
        object_key=obj_key[: AuditEntry._meta.get_field("object_key").max_length],
        project=project,
        environment=environment,
        flag_key=flag_key,
        before=before,
        after=after,
    )
    events.audit_recorded(entry)  # webhooks: queued in this transaction, sent after commit
    return entry


def _audit_bypass(actor: Actor, environment: Environment, subject: str, source: str) -> None:
    """An operator's `--bypass-approval`: the reason goes into the audit log with the change."""
    if not (bypasses_approval(actor) and environment.protected):
        return
    if not environment.project.require_approval:
        return
    audit(
        actor=actor,
        source=source,
        action="bypass-approval",
        obj_type="approval",
        obj_key=subject,
        project=environment.project,
        environment=environment,
        after={"reason": getattr(actor, "bypass_reason", "")},
    )


def _check_impact(
    *, actor: Actor, measurement: impact.Measurement, approved: bool, source: str, proposal: str
) -> None:
    """Hold a change to a flag's own fields or a segment to the gate of each protected
    environment whose answers it changes (docs/admin.md, "Who may change what")."""
    for environment in {env.pk: env for env, _, _ in measurement.changes}.values():
        subject = next(s for env, s, _ in measurement.changes if env.pk == environment.pk)
        if approved:
            authorize(actor, environment.project, Action.CONFIGURE, environment)
        else:
            check_indirect_write(actor, environment, subject, proposal)
        _audit_bypass(actor, environment, subject, source)


def environments_changed(environment_ids: Iterable[int]) -> None:
    """Bump the versions in this transaction; tell the caches once it commits."""
    ids = sorted(set(environment_ids))
    if not ids:
        return
    Environment.objects.filter(pk__in=ids).update(version=F("version") + 1)
    versions = dict(Environment.objects.filter(pk__in=ids).values_list("pk", "version"))
    transaction.on_commit(partial(cache.environments_changed, versions))


def _project_environment_ids(project: Project) -> list[int]:
    return list(project.environments.values_list("pk", flat=True))


def _save(obj: Any, exclude: list[str] | None = None) -> None:
    """Validate like the admin's forms do, then save; uniqueness errors name the field."""
    try:
        obj.full_clean(exclude=exclude)
    except ValidationError as error:
        raise _unique_as_field(obj, error) from error
    try:
        with transaction.atomic():
            obj.save()
    except IntegrityError as error:
        raise ValidationError({"key": "already exists"}) from error


def _unique_as_field(obj: Any, error: ValidationError) -> ValidationError:
    """'X with this Project and Key already exists' belongs to the key field."""
    if not hasattr(error, "error_dict") or NON_FIELD_ERRORS not in error.error_dict:
        return error
    unique = [e for e in error.error_dict[NON_FIELD_ERRORS] if e.code == "unique_together"]
    if not unique:
        return error
    field = "name" if hasattr(obj, "name") and not hasattr(obj, "key") else "key"
    messages = {**error.message_dict}
    messages.pop(NON_FIELD_ERRORS)
    messages[field] = [f"{getattr(obj, field, '')!r} already exists"]
    return ValidationError(messages)


# --- Projects and environments ----------------------------------------------------------


@transaction.atomic
def project_create(
    *, key: str, name: str = "", description: str = "", actor: Actor, source: str
) -> Project:
    if actor is not None and not actor.is_superuser:
        from django.core.exceptions import PermissionDenied

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
    _save(environment)
    after = {field: getattr(environment, field) for field in ENVIRONMENT_FIELDS}
    if after["secure_mode"] != before["secure_mode"]:
        # What client keys are answered changes: evaluating processes re-read it.
        environments_changed([environment.pk])
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
        environments_changed([environment.pk])
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


def flag_meta(flag: Flag) -> dict:
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
        "tags": sorted(flag.tags.values_list("name", flat=True)) if flag.pk else [],
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
    from flags.validation import check_variants

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
    environments_changed(_project_environment_ids(project))
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
    from flags.models import Variant

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


def rollout_variants(rollout: list | None) -> list[str]:
    """Variant keys of a stored rollout (`[{"variant": KEY, "weight": N}, ...]`)."""
    return [item.get("variant") for item in rollout or [] if isinstance(item, dict)]


def _json_contains_supported() -> bool:
    from django.db import connection

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
    environments_changed(_project_environment_ids(flag.project))
    return flag


def _write_flag_fields(flag: Flag, data: dict) -> tuple[dict, dict]:
    """Write the flag's own fields; its metadata before and after."""
    before = flag_meta(flag)
    for field in FLAG_FIELDS:
        if field in data:
            setattr(flag, field, data[field])
    if "variants" in data:
        from flags.validation import check_variants

        check_variants(flag.type, data["variants"])
    _save(flag)
    if "variants" in data:
        _write_variants(flag, data["variants"])
    if "tags" in data:
        _set_tags(flag, data["tags"])
    return before, flag_meta(flag)


# --- A flag's configuration in an environment -------------------------------------------


def _serving_fields(serving: Any, field: str) -> dict:
    """Document form of a serving -> the model's serve_variant/rollout/bucket_by fields.

    Only the shape is read here; whether it serves one variant or a rollout, over which
    variants and weights, is the engine's `check_serving` (run by the model's `clean()`).
    """
    if not isinstance(serving, dict):
        raise ValidationError({field: 'give {"variant": KEY} or {"rollout": {...}}'})
    fields = {"serve_variant": serving.get("variant", ""), "rollout": [], "bucket_by": ""}
    if "rollout" not in serving:
        return {**fields, "bucket_by": "targetingKey"}
    rollout = serving["rollout"]
    if not isinstance(rollout, dict) or not isinstance(rollout.get("variants"), list):
        raise ValidationError({field: 'a rollout is {"bucketBy": ..., "variants": [...]}'})
    weights = []
    for item in rollout["variants"]:
        if not isinstance(item, dict) or set(item) != {"variant", "weight"}:
            raise ValidationError({field: 'each rollout entry is {"variant": KEY, "weight": N}'})
        weights.append({"variant": item["variant"], "weight": item["weight"]})
    # Kept as a list: bucketing walks the variants in the order the rollout gives them.
    return {**fields, "rollout": weights, "bucket_by": rollout.get("bucketBy") or "targetingKey"}


def _with_field_prefix(prefix: str, error: ValidationError) -> ValidationError:
    if hasattr(error, "error_dict"):
        return ValidationError(
            {prefix: [f"{field}: {m}" for field, ms in error.message_dict.items() for m in ms]}
        )
    return ValidationError({prefix: error.messages})


@transaction.atomic
def flag_config_update(
    *,
    config: FlagConfig,
    data: dict,
    actor: Actor,
    source: str,
    expected_version: int | None = None,
    action: str | None = None,
    approved: bool = False,
) -> FlagConfig:
    """Change a flag's configuration in one environment.

    `data` may hold `enabled`, `offVariant`, `defaultServe`, and whole lists of `rules`,
    `targets` and `prerequisites` (each list given replaces the current one), in the flag
    document's shapes. With `expected_version`, a configuration changed meanwhile raises
    ConflictError instead of being overwritten. `action` names the change in the audit and
    history (a restore, the kill switch); `approved` says it needs no change request (it
    applies an approved one, or is the kill switch), the role check still holds.
    """
    config = (
        FlagConfig.objects.select_for_update()
        .select_related("flag__project", "environment__project")
        .get(pk=config.pk)
    )
    flag, environment = config.flag, config.environment
    # Every row's checks ask for the flag's variants and the project's segments: read once.
    prefetch_related_objects([flag], "variants", "tags", "project__segments")
    authorize(actor, flag.project, Action.CONFIGURE, environment)
    if not approved:
        check_direct_write(actor, flag, environment)
    if expected_version is not None and expected_version != config.version:
        raise ConflictError(
            f"{flag.key} in {environment.key} is at version {config.version}, "
            f"not {expected_version}: reload and apply your change again",
            config.version,
        )
    # The configuration row is this locked one; the environment's other rows are read.
    targeted = _targeted(flag, environment)
    before = flag_entry(targeted, config)
    _apply_config(config, data, rules=list(targeted.rules.all()))
    after = flag_entry(_targeted(flag, environment), config)
    if after == before:
        return config
    config.version += 1  # the row is locked: no one else bumps it meanwhile
    config.save(update_fields=["version", "updated_at"])
    action = action or _config_action(before, after)
    history.version_record(
        config=config, before=before, after=after, action=action, actor=actor, source=source
    )
    audit(
        actor=actor,
        source=source,
        action=action,
        obj_type="flag_config",
        obj_key=f"{flag.key}/{environment.key}",
        project=flag.project,
        environment=environment,
        flag_key=flag.key,
        before=before,
        after=after,
    )
    if not approved:
        _audit_bypass(actor, environment, f"flag {flag.key}", source)
    environments_changed([environment.pk])
    return config


def _targeted(flag: Flag, environment: Environment) -> Flag:
    """The flag (read and locked by this change) with its rows in the environment read anew,
    for `flag_entry`; its own fields, variants and tags are not read again."""
    rows = copy.copy(flag)
    cache = flag.__dict__.get("_prefetched_objects_cache", {})
    rows._prefetched_objects_cache = {k: v for k, v in cache.items() if k in ("variants", "tags")}
    prefetch_related_objects([rows], *targeting_prefetches(environment, configs=False))
    return rows


def _config_action(before: dict, after: dict) -> str:
    if before["enabled"] != after["enabled"]:
        changed_only_toggle = {**before, "enabled": after["enabled"]} == after
        if changed_only_toggle:
            return "enable" if after["enabled"] else "disable"
    return "update"


CONFIG_FIELDS = {"enabled", "offVariant", "defaultServe", "rules", "targets", "prerequisites"}


def _apply_config(config: FlagConfig, data: dict, rules: list[Rule]) -> None:
    unknown = set(data) - CONFIG_FIELDS
    if unknown:
        raise ValidationError({sorted(unknown)[0]: "unknown field"})
    flag, environment = config.flag, config.environment
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            raise ValidationError({"enabled": "must be true or false"})
        config.enabled = data["enabled"]
    if "offVariant" in data:
        config.off_variant = data["offVariant"]
    if "defaultServe" in data:
        for name, value in _serving_fields(data["defaultServe"], "defaultServe").items():
            setattr(config, name, value)
    try:
        config.full_clean(exclude=["flag", "environment"])
    except ValidationError as error:
        raise _renamed(
            error,
            {
                "off_variant": "offVariant",
                "serve_variant": "defaultServe",
                "rollout": "defaultServe",
            },
        ) from error
    config.save()
    if "rules" in data:
        _write_rules(flag, environment, data["rules"], rules)
    if "targets" in data:
        _replace_rows(flag, environment, "targets", data["targets"], _target_from)
    if "prerequisites" in data:
        _replace_rows(flag, environment, "prerequisites", data["prerequisites"], _prerequisite_from)


def _renamed(error: ValidationError, names: dict[str, str]) -> ValidationError:
    if not hasattr(error, "error_dict"):
        return error
    return ValidationError(
        {names.get(field, field): messages for field, messages in error.message_dict.items()}
    )


def _replace_rows(flag, environment, field: str, items: Any, build) -> None:
    if not isinstance(items, list):
        raise ValidationError({field: "must be a list"})
    model = {"rules": Rule, "targets": Target, "prerequisites": Prerequisite}[field]
    model.objects.filter(flag=flag, environment=environment).delete()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValidationError({field: f"item {index + 1}: must be an object"})
        row = build(flag, environment, index, item)
        try:
            row.full_clean(exclude=["flag", "environment", "required_flag"])
        except ValidationError as error:
            raise _with_field_prefix(f"{field}[{index}]", error) from error
        row.save()


def _write_rules(flag: Flag, environment: Environment, items: Any, rules: list[Rule]) -> None:
    """Make the environment's rules `items`, matched to the current ones by `id` (the key).

    A rule whose id is known is changed in place and keeps its identity; one without an id
    is new (its key is generated); a current rule not listed is deleted.
    """
    if not isinstance(items, list):
        raise ValidationError({"rules": "must be a list"})
    current = {rule.key: rule for rule in rules}  # the environment's rules, read with the lock
    saved = {key: _rule_row(rule) for key, rule in current.items()}
    rows, seen = [], set()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValidationError({"rules": f"item {index + 1}: must be an object"})
        key = item.get("id") or ""
        if key and key in seen:
            raise ValidationError({f"rules[{index}]": f"id: {key!r} is listed twice"})
        seen.add(key)
        rule = current.pop(key, None) if key else None
        rule = rule or Rule(**({"key": key} if key else {}))
        rule.flag, rule.environment = flag, environment
        _rule_fields(rule, index, item)
        try:
            # Keys are unique in this list (checked above), so the constraint needs no query.
            rule.full_clean(
                exclude=["flag", "environment"], validate_unique=False, validate_constraints=False
            )
        except ValidationError as error:
            raise _with_field_prefix(f"rules[{index}]", _renamed(error, RULE_FIELDS)) from error
        rows.append(rule)
    Rule.objects.filter(pk__in=[rule.pk for rule in current.values()]).delete()
    for rule in rows:
        if rule.pk is None or saved[rule.key] != _rule_row(rule):
            rule.save()


def _rule_row(rule: Rule) -> tuple:
    return (
        rule.position,
        rule.name,
        rule.conditions,
        rule.serve_variant,
        rule.rollout,
        rule.bucket_by,
    )


RULE_FIELDS = {"key": "id", "serve_variant": "serve", "rollout": "serve", "bucket_by": "serve"}


def _rule_fields(rule: Rule, index: int, item: dict) -> None:
    unknown = set(item) - {"id", "name", "conditions", "serve"}
    if unknown:
        raise ValidationError({f"rules[{index}]": f"unknown field {sorted(unknown)[0]!r}"})
    if "serve" not in item:
        raise ValidationError({f"rules[{index}]": "serve: required"})
    if not isinstance(item.get("id", ""), str):
        raise ValidationError({f"rules[{index}]": "id: must be a string"})
    try:
        serving = _serving_fields(item["serve"], "serve")
    except ValidationError as error:
        raise _with_field_prefix(f"rules[{index}]", error) from error
    rule.position = index
    rule.name = item.get("name", "") or ""
    rule.conditions = item.get("conditions", [])
    for name, value in serving.items():
        setattr(rule, name, value)


def _target_from(flag, environment, index: int, item: dict) -> Target:
    unknown = set(item) - {"variant", "values"}
    if unknown:
        raise ValidationError({f"targets[{index}]": f"unknown field {sorted(unknown)[0]!r}"})
    return Target(
        flag=flag,
        environment=environment,
        variant=item.get("variant", ""),
        values=item.get("values", []),
    )


def _prerequisite_from(flag, environment, index: int, item: dict) -> Prerequisite:
    unknown = set(item) - {"flag", "variants"}
    if unknown:
        raise ValidationError({f"prerequisites[{index}]": f"unknown field {sorted(unknown)[0]!r}"})
    required = Flag.objects.filter(project_id=flag.project_id, key=item.get("flag")).first()
    if required is None:
        raise ValidationError(
            {f"prerequisites[{index}]": f"flag: unknown flag {item.get('flag')!r}"}
        )
    return Prerequisite(
        flag=flag,
        environment=environment,
        required_flag=required,
        variants=item.get("variants", []),
    )


def flag_toggle(*, config: FlagConfig, enabled: bool, actor: Actor, source: str) -> FlagConfig:
    return flag_config_update(config=config, data={"enabled": enabled}, actor=actor, source=source)


# --- Segments ---------------------------------------------------------------------------

SEGMENT_FIELDS = ("name", "description", "conditions", "included", "excluded")


def _segment_proposal(project: Project, key: str) -> str:
    return f"POST /api/v1/projects/{project.key}/segments/{key}/change-requests"


@transaction.atomic
def segment_create(*, project: Project, key: str, data: dict, actor: Actor, source: str) -> Segment:
    authorize(actor, project, Action.EDIT_FLAGS)
    segment = Segment(project=project, key=key, name=data.get("name") or key)
    for field in SEGMENT_FIELDS[1:]:
        if field in data:
            setattr(segment, field, data[field])
    # A rule may already ask for a segment of this key (it matched no one until now).
    with impact.measured(project, segment_keys=[key]) as measurement:
        _save(segment)
    if measurement.changes:
        _check_impact(
            actor=actor,
            measurement=measurement,
            approved=False,
            source=source,
            proposal=_segment_proposal(project, key),
        )
    audit(
        actor=actor,
        source=source,
        action="create",
        obj_type="segment",
        obj_key=key,
        project=project,
        after=segment_entry(segment),
    )
    environments_changed(_project_environment_ids(project))
    return segment


@transaction.atomic
def segment_update(
    *,
    segment: Segment,
    data: dict,
    actor: Actor,
    source: str,
    expected_version: int | None = None,
    approved: bool = False,
) -> Segment:
    """Change a segment; where a protected environment's rules use it, that is a change to
    what the environment serves and passes the same gate as a direct write to it."""
    authorize(actor, segment.project, Action.EDIT_FLAGS)
    if "key" in data and data["key"] != segment.key:
        raise ValidationError({"key": "a segment's key cannot change once created"})
    current = Segment.objects.select_for_update().filter(pk=segment.pk)
    segment.version = current.values_list("version", flat=True).get()
    if expected_version is not None and expected_version != segment.version:
        raise ConflictError(
            f"segment {segment.key} is at version {segment.version}, not {expected_version}: "
            "reload and make your change again",
            segment.version,
        )
    before = segment_entry(segment)
    with impact.measured(segment.project, segment_keys=[segment.key]) as measurement:
        for field in SEGMENT_FIELDS:
            if field in data:
                setattr(segment, field, data[field])
        _save(segment)
    after = segment_entry(segment)
    if after == before:
        return segment
    if measurement.changes:
        _check_impact(
            actor=actor,
            measurement=measurement,
            approved=approved,
            source=source,
            proposal=_segment_proposal(segment.project, segment.key),
        )
    Segment.objects.filter(pk=segment.pk).update(version=F("version") + 1)
    segment.refresh_from_db(fields=["version"])
    audit(
        actor=actor,
        source=source,
        action="update",
        obj_type="segment",
        obj_key=segment.key,
        project=segment.project,
        before=before,
        after=after,
    )
    environments_changed(_project_environment_ids(segment.project))
    return segment


def segment_users(segment: Segment) -> list[str]:
    """Keys of the flags whose rules refer to the segment, in any environment."""
    flags = set()
    for rule in Rule.objects.filter(flag__project_id=segment.project_id).select_related("flag"):
        for condition in rule.conditions or []:
            if condition.get("operator") == "in_segment" and segment.key in condition.get(
                "values", []
            ):
                flags.add(rule.flag.key)
    return sorted(flags)


@transaction.atomic
def segment_delete(*, segment: Segment, actor: Actor, source: str) -> None:
    authorize(actor, segment.project, Action.EDIT_FLAGS)
    users = segment_users(segment)
    if users:
        raise ValidationError({"key": f"segment is used by the rules of {', '.join(users)}"})
    before = segment_entry(segment)
    project = segment.project
    segment.delete()
    audit(
        actor=actor,
        source=source,
        action="delete",
        obj_type="segment",
        obj_key=segment.key,
        project=project,
        before=before,
    )
    environments_changed(_project_environment_ids(project))


# --- API keys ---------------------------------------------------------------------------

KEY_PREFIXES = {ApiKey.Kind.SERVER: "ffs_", ApiKey.Kind.CLIENT: "ffc_"}


def key_digest(secret: str) -> str:
    # Keys carry 256 random bits, so one SHA-256 is enough: nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


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
        transaction.on_commit(partial(cache.api_key_revoked, key.digest))
    return key


# --- Targets, one variant at a time (the command line's `target`) ------------------------


@transaction.atomic
def flag_targets_change(
    *,
    config: FlagConfig,
    variant: str,
    add: Iterable[str] = (),
    remove: Iterable[str] = (),
    actor: Actor,
    source: str,
) -> FlagConfig:
    """Add targeting keys to a variant's target, or remove them from it.

    A key lives in one target only, so a key added here leaves the other variants' targets.
    """
    if variant not in [v.key for v in config.flag.variants.all()]:
        raise ValidationError({"variant": f"unknown variant {variant!r} of {config.flag.key}"})
    add, remove = list(dict.fromkeys(add)), set(remove)
    targets, found = [], False
    for target in flag_state(config.flag, config.environment)["targets"]:
        values = [value for value in target["values"] if value not in add and value not in remove]
        if target["variant"] == variant:
            found = True
            values += [value for value in add if value not in remove]
        if values:
            targets.append({"variant": target["variant"], "values": values})
    if not found and add:
        targets.append({"variant": variant, "values": add})
    return flag_config_update(config=config, data={"targets": targets}, actor=actor, source=source)


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
