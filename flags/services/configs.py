"""A flag's configuration in an environment: its targeting, and targets one variant at a time."""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import prefetch_related_objects

from evaluation.documents import flag_entry, flag_state, targeting_prefetches
from flags import history
from flags.models import Environment, Flag, FlagConfig, Prerequisite, Rule, Target
from flags.roles import Action, authorize, check_direct_write
from flags.services.steps import (
    ConflictError,
    _audit_bypass,
    audit,
    checked_comment,
    environments_changed,
)

if TYPE_CHECKING:
    from flags.roles import Actor


# --- A flag's configuration in an environment -------------------------------------------


def _serving_fields(serving: Any, field: str) -> dict:
    """Document form of a serving -> the model's serve_variant/rollout/bucket_by/salt fields.

    Only the shape is read here; whether it serves one variant or a rollout, over which
    variants and weights, with which salt, is the engine's `check_serving` (run by the
    model's `clean()`). A rollout that names no salt has `salt` None: see `_set_serving`.
    """
    if not isinstance(serving, dict):
        raise ValidationError({field: 'give {"variant": KEY} or {"rollout": {...}}'})
    fields = {"serve_variant": serving.get("variant", ""), "rollout": [], "bucket_by": ""}
    if "rollout" not in serving:
        return {**fields, "bucket_by": "targetingKey", "salt": ""}
    rollout = serving["rollout"]
    if not isinstance(rollout, dict) or not isinstance(rollout.get("variants"), list):
        raise ValidationError({field: 'a rollout is {"bucketBy": ..., "variants": [...]}'})
    weights = []
    for item in rollout["variants"]:
        if not isinstance(item, dict) or set(item) != {"variant", "weight"}:
            raise ValidationError({field: 'each rollout entry is {"variant": KEY, "weight": N}'})
        weights.append({"variant": item["variant"], "weight": item["weight"]})
    salt = rollout.get("salt")
    if salt is not None and not isinstance(salt, str):
        raise ValidationError({field: f"rollout.salt: must be a string, got {salt!r}"})
    # Kept as a list: bucketing walks the variants in the order the rollout gives them.
    bucket_by = rollout.get("bucketBy") or "targetingKey"
    return {**fields, "rollout": weights, "bucket_by": bucket_by, "salt": salt}


def _set_serving(row: FlagConfig | Rule, fields: dict) -> None:
    """Give `row` the serving `fields`. A rollout that names no salt keeps the salt of the
    rollout it replaces, so that changing an imported rollout's weights (from the admin, a
    step of a stepped rollout, an API client) keeps everyone who was in; `"salt": ""` gives
    it the flag's salt again."""
    salt = fields["salt"]
    if salt is None:
        salt = row.salt if row.rollout and fields["rollout"] else ""
    for name, value in {**fields, "salt": salt}.items():
        setattr(row, name, value)


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
    comment: str = "",
) -> FlagConfig:
    """Change a flag's configuration in one environment.

    `data` may hold `enabled`, `offVariant`, `defaultServe`, and whole lists of `rules`,
    `targets` and `prerequisites` (each list given replaces the current one), in the flag
    document's shapes. With `expected_version`, a configuration changed meanwhile raises
    ConflictError instead of being overwritten. `action` names the change in the audit and
    history (a restore, the kill switch); `approved` says it needs no change request (it
    applies an approved one, or is the kill switch), the role check still holds. `comment`
    (why, in the person's words) goes into the audit entry.
    """
    comment = checked_comment(comment)
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
        comment=comment,
    )
    if not approved:
        _audit_bypass(actor, environment, f"flag {flag.key}", source)
    environments_changed([environment.pk], flags=[flag.pk], segments=())
    return config


def _targeted(flag: Flag, environment: Environment) -> Flag:
    """The flag (read and locked by this change) with its rows in the environment read anew,
    for `flag_entry`; its own fields, variants and tags are not read again."""
    rows = copy.copy(flag)
    cache = flag.__dict__.get("_prefetched_objects_cache", {})
    rows.__dict__["_prefetched_objects_cache"] = {
        k: v for k, v in cache.items() if k in ("variants", "tags")
    }
    prefetch_related_objects([rows], *targeting_prefetches(environment, configs=False))
    return rows


def _config_action(before: dict, after: dict) -> str:
    if before["enabled"] != after["enabled"]:
        changed_only_toggle = {**before, "enabled": after["enabled"]} == after
        if changed_only_toggle:
            return "enable" if after["enabled"] else "disable"
    return "update"


CONFIG_FIELDS = {"enabled", "offVariant", "defaultServe", "rules", "targets", "prerequisites"}
# A configuration row's fields -> the document's names, in validation errors.
CONFIG_ERROR_FIELDS = {
    "off_variant": "offVariant",
    "serve_variant": "defaultServe",
    "rollout": "defaultServe",
    "salt": "defaultServe",
}


def set_config_fields(config: FlagConfig, data: dict, *, check_constraints: bool = True) -> None:
    """Give `config` the `enabled`, `offVariant` and `defaultServe` of `data`
    (flag_config_update's data, whose unknown fields are refused) and validate the row,
    its errors named as the document names the fields. A new row of a batch needs no
    constraint query (`check_constraints=False`): the batch is checked as a whole."""
    unknown = set(data) - CONFIG_FIELDS
    if unknown:
        raise ValidationError({sorted(unknown)[0]: "unknown field"})
    if "enabled" in data:
        if not isinstance(data["enabled"], bool):
            raise ValidationError({"enabled": "must be true or false"})
        config.enabled = data["enabled"]
    if "offVariant" in data:
        config.off_variant = data["offVariant"]
    if "defaultServe" in data:
        _set_serving(config, _serving_fields(data["defaultServe"], "defaultServe"))
    try:
        config.full_clean(exclude=["flag", "environment"], validate_constraints=check_constraints)
    except ValidationError as error:
        raise _renamed(error, CONFIG_ERROR_FIELDS) from error


def _apply_config(config: FlagConfig, data: dict, rules: list[Rule]) -> None:
    flag, environment = config.flag, config.environment
    set_config_fields(config, data)
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
    models: dict[str, type[Rule] | type[Target] | type[Prerequisite]]
    models = {"rules": Rule, "targets": Target, "prerequisites": Prerequisite}
    model = models[field]
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
        rule.salt,
    )


RULE_FIELDS = {
    "key": "id",
    "serve_variant": "serve",
    "rollout": "serve",
    "bucket_by": "serve",
    "salt": "serve",
}


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
    _set_serving(rule, serving)


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


def flag_toggle(
    *, config: FlagConfig, enabled: bool, actor: Actor, source: str, comment: str = ""
) -> FlagConfig:
    return flag_config_update(
        config=config, data={"enabled": enabled}, actor=actor, source=source, comment=comment
    )


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


# --- Versions: restore one, preview a change ---------------------------------------------


def version_restore(
    *,
    config: FlagConfig,
    version: int,
    actor: Actor,
    source: str,
    expected_version: int | None = None,
    comment: str = "",
) -> FlagConfig:
    """Write version `version` back: a new version, audited as a restore."""
    state = history.version_state(config, version)
    if version == config.version:
        raise ValidationError({"version": f"version {version} is the current configuration"})
    return flag_config_update(
        config=config,
        data=state,
        actor=actor,
        source=source,
        expected_version=expected_version,
        action=f"restore v{version}",
        comment=comment,
    )


class _Preview(Exception):
    def __init__(self, state: dict) -> None:
        self.state = state


def change_preview(*, config: FlagConfig, data: dict) -> dict:
    """The state `data` would give the configuration now, validated by the services.

    The change is written in a savepoint and rolled back: the services' validation is the
    one place that knows what is valid, and nothing (audit, version, cache) survives it.
    """
    try:
        with transaction.atomic():
            flag_config_update(config=config, data=data, actor=None, source="system")
            raise _Preview(flag_state(config.flag, config.environment))
    except _Preview as preview:
        return preview.state
