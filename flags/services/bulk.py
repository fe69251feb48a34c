"""Many new flags at once (an import): validated like one, written in a few statements.

`flags_create_many` stores what `flag_create` followed by `flag_config_update` in each
environment would, checked by the same model validation, with the rows, the audit entries
(one per flag and one per flag and environment) and the version bumps (once per
environment) written in batches. Prerequisites, whose checks follow the other flags'
dependencies, are written afterwards through `flag_config_update`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, connection, transaction
from django.db.models import Field, Model, prefetch_related_objects

from evaluation.documents import flag_entry
from flags.models import (
    AuditEntry,
    Environment,
    Flag,
    FlagConfig,
    FlagConfigVersion,
    Project,
    Rule,
    Tag,
    Target,
    Variant,
)
from flags.roles import Action, authorize, check_direct_write, person
from flags.services.configs import (
    RULE_FIELDS,
    _renamed,
    _rule_fields,
    _target_from,
    _with_field_prefix,
    flag_config_update,
    set_config_fields,
)
from flags.services.flags import _default_variants, _initial_config, flag_meta
from flags.services.steps import (
    _actor_name,
    _audit_bypass,
    _project_environment_ids,
    environments_changed,
)
from flags.validation import check_variants
from integrations import events
from integrations.models import Webhook

if TYPE_CHECKING:
    from flags.roles import Actor

BATCH = 1000
Progress = Callable[[int, int, str], None]


class FlagError(Exception):
    """A flag of the batch is invalid: which one, in which environment (or none), and why."""

    def __init__(self, key: str, environment: str | None, error: ValidationError) -> None:
        super().__init__(key, environment, error)
        self.key, self.environment, self.error = key, environment, error


def _quiet(done: int, total: int, key: str) -> None:
    return None


def _insert(model: type[Model], rows: list[Any]) -> None:
    """Insert rows whose primary keys are not needed back: `bulk_create`, except on
    PostgreSQL, where COPY streams them about eight times faster (a bulk INSERT's
    parameters are quoted one by one in Python; an import of 10,000 flags inserts 200,000
    such rows). The values are the ones `bulk_create` would write (`pre_save`,
    `get_db_prep_save`); the rows were validated by then."""
    if connection.vendor != "postgresql":
        model._default_manager.bulk_create(rows, batch_size=BATCH)
        return
    fields = [field for field in model._meta.concrete_fields if not field.primary_key]
    plain = [_plain(field) for field in fields]
    quote = connection.ops.quote_name
    columns = ", ".join(quote(str(field.column)) for field in fields)
    statement = f"COPY {quote(model._meta.db_table)} ({columns}) FROM STDIN"
    with connection.cursor() as cursor, cursor.cursor.copy(statement) as copy:
        for row in rows:
            row._prepare_related_fields_for_save(operation_name="bulk_create")
            values = []
            for field, kinds in zip(fields, plain, strict=True):
                value = getattr(row, field.attname) if kinds else field.pre_save(row, True)
                if type(value) not in kinds:
                    value = field.get_db_prep_save(value, connection)
                values.append(value)
            copy.write_row(values)


# Fields whose stored value is the attribute's when it is of these types (Django's
# preparation returns such a value unchanged); any other value goes through it.
PLAIN = {
    "CharField": (str,),
    "TextField": (str,),
    "SlugField": (str,),
    "BooleanField": (bool,),
    "IntegerField": (int,),
    "PositiveIntegerField": (int,),
    "PositiveSmallIntegerField": (int,),
    "BigIntegerField": (int,),
    "ForeignKey": (int, type(None)),
}


def _plain(field: Any) -> tuple[type, ...]:
    if type(field).pre_save is not Field.pre_save:
        return ()
    return PLAIN.get(field.get_internal_type(), ())


@transaction.atomic
def flags_create_many(
    *,
    project: Project,
    flags: list[dict],
    configs: dict[str, dict[Environment, dict]],
    actor: Actor,
    source: str,
    progress: Progress = _quiet,
) -> list[Flag]:
    """Create `flags` (flag_create's arguments as dicts, with `archived`), each configured
    in every environment of `configs[key]` (flag_config_update's data); all or nothing.

    Raises FlagError naming the flag (and environment) a ValidationError is about.
    """
    authorize(actor, project, Action.EDIT_FLAGS)
    environments = {env.pk: env for by_env in configs.values() for env in by_env}
    for environment in environments.values():
        authorize(actor, project, Action.CONFIGURE, environment)
        if flags:
            check_direct_write(actor, Flag(key=flags[0]["key"]), environment)
    rows = [_flag_row(project, data) for data in flags]
    try:
        with transaction.atomic():
            Flag.objects.bulk_create(rows, batch_size=BATCH)
    except IntegrityError as error:
        raise ValidationError({"flags": "a flag of this key already exists"}) from error
    variants = _write_variants(rows, flags)
    tags = _write_tags(project, rows, flags)
    for flag in rows:  # the rows just written, as a prefetch would read them back
        flag._prefetched_objects_cache = {  # type: ignore[attr-defined]
            "variants": variants[flag.pk],
            "tags": sorted(tags[flag.pk], key=lambda tag: tag.name),  # Tag.Meta's order
        }
    prefetch_related_objects(rows, "project__segments")
    config_rows, rules, targets, later = [], [], [], []
    in_hand: dict[tuple[int, int], tuple[list[Rule], list[Target]]] = {}
    for done, flag in enumerate(rows, start=1):
        for environment, data in configs.get(flag.key, {}).items():
            try:
                config, flag_rules, flag_targets = _configured(flag, environment, data)
            except ValidationError as error:
                raise FlagError(flag.key, environment.key, error) from error
            config_rows.append(config)
            in_hand[flag.pk, environment.pk] = (flag_rules, flag_targets)
            rules += flag_rules
            targets += flag_targets
            if data.get("prerequisites"):
                later.append((config, data["prerequisites"]))
        progress(done, len(rows), flag.key)
    FlagConfig.objects.bulk_create(config_rows, batch_size=BATCH)
    _insert(Rule, rules)
    _insert(Target, targets)
    _audit_created(project, rows, config_rows, in_hand, actor, source)
    for environment in environments.values():
        _audit_bypass(actor, environment, f"import of {len(rows)} flags", source)
    for config, prerequisites in later:
        try:
            flag_config_update(
                config=config, data={"prerequisites": prerequisites}, actor=actor, source=source
            )
        except ValidationError as error:
            raise FlagError(config.flag.key, config.environment.key, error) from error
    environments_changed(
        _project_environment_ids(project), flags=[flag.pk for flag in rows], segments=()
    )
    return rows


def _flag_row(project: Project, data: dict) -> Flag:
    key = data["key"]
    flag_type = data.get("type") or Flag.Type.BOOLEAN
    try:
        if flag_type not in Flag.Type.values:
            raise ValidationError(
                {"type": f"unknown type {flag_type!r} (one of {', '.join(Flag.Type.values)})"}
            )
        variants = data.get("variants")
        data["variants"] = variants if variants is not None else _default_variants(flag_type)
        check_variants(flag_type, data["variants"])
        flag = Flag(
            project=project,
            key=key,
            name=data.get("name") or key,
            description=data.get("description", ""),
            type=flag_type,
            salt=data.get("salt", ""),
            bucketing=data.get("bucketing", "flagd"),
            client_side=data.get("client_side", False),
            archived=data.get("archived", False),
        )
        flag.full_clean(exclude=["project"], validate_unique=False, validate_constraints=False)
    except ValidationError as error:
        raise FlagError(key, None, error) from error
    return flag


def _write_variants(rows: list[Flag], flags: list[dict]) -> dict[int, list[Variant]]:
    """The flags' variants, written; each flag's by its id, in their order."""
    variants = []
    for flag, data in zip(rows, flags, strict=True):
        for position, item in enumerate(data["variants"]):
            variant = Variant(
                flag=flag,
                key=item["key"],
                value=item["value"],
                name=item.get("name", ""),
                position=position,
            )
            try:
                variant.full_clean(exclude=["flag"], validate_unique=False)
            except ValidationError as error:
                raise FlagError(flag.key, None, error) from error
            variants.append(variant)
    Variant.objects.bulk_create(variants, batch_size=BATCH)
    by_flag: dict[int, list[Variant]] = {flag.pk: [] for flag in rows}
    for variant in variants:
        by_flag[variant.flag_id].append(variant)
    return by_flag


def _write_tags(project: Project, rows: list[Flag], flags: list[dict]) -> dict[int, list[Tag]]:
    """The flags' tags, created if new and linked; each flag's by its id."""
    names = {name for data in flags for name in data.get("tags") or ()}
    for flag, data in zip(rows, flags, strict=True):
        for name in data.get("tags") or ():
            try:
                Tag(project=project, name=name).full_clean(
                    exclude=["project"], validate_unique=False
                )
            except ValidationError as error:
                message = {"tags": f"{name!r}: {error.messages[0]}"}
                raise FlagError(flag.key, None, ValidationError(message)) from error
    known = set(Tag.objects.filter(project=project, name__in=names).values_list("name", flat=True))
    Tag.objects.bulk_create(Tag(project=project, name=name) for name in sorted(names - known))
    tags = {tag.name: tag for tag in Tag.objects.filter(project=project, name__in=names)}
    Through = Flag.tags.through
    links = [
        Through(flag_id=flag.pk, tag_id=tags[name].pk)
        for flag, data in zip(rows, flags, strict=True)
        for name in dict.fromkeys(data.get("tags") or ())
    ]
    Through.objects.bulk_create(links, batch_size=BATCH)
    return {
        flag.pk: [tags[name] for name in dict.fromkeys(data.get("tags") or ())]
        for flag, data in zip(rows, flags, strict=True)
    }


def _configured(
    flag: Flag, environment: Environment, data: dict
) -> tuple[FlagConfig, list[Rule], list[Target]]:
    """The configuration's rows, validated as `flag_config_update` validates them."""
    config = FlagConfig(flag=flag, environment=environment, **_initial_config(flag))
    set_config_fields(config, data, check_constraints=False)
    rules = _rules(flag, environment, data.get("rules", []))
    return config, rules, _targets(flag, environment, data.get("targets", []))


def _rules(flag: Flag, environment: Environment, items: Any) -> list[Rule]:
    if not isinstance(items, list):
        raise ValidationError({"rules": "must be a list"})
    rules, seen = [], set()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValidationError({"rules": f"item {index + 1}: must be an object"})
        key = item.get("id") or ""
        if key and key in seen:
            raise ValidationError({f"rules[{index}]": f"id: {key!r} is listed twice"})
        seen.add(key)
        rule = Rule(**({"key": key} if key else {}))
        rule.flag, rule.environment = flag, environment
        _rule_fields(rule, index, item)
        try:
            rule.full_clean(
                exclude=["flag", "environment"], validate_unique=False, validate_constraints=False
            )
        except ValidationError as error:
            raise _with_field_prefix(f"rules[{index}]", _renamed(error, RULE_FIELDS)) from error
        rules.append(rule)
    return rules


def _targets(flag: Flag, environment: Environment, items: Any) -> list[Target]:
    if not isinstance(items, list):
        raise ValidationError({"targets": "must be a list"})
    targets, seen = [], set()
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ValidationError({"targets": f"item {index + 1}: must be an object"})
        target = _target_from(flag, environment, index, item)
        try:
            target.full_clean(
                exclude=["flag", "environment"], validate_unique=False, validate_constraints=False
            )
            if target.variant in seen:
                raise ValidationError({"variant": f"{target.variant!r} has two targets"})
        except ValidationError as error:
            raise _with_field_prefix(f"targets[{index}]", error) from error
        seen.add(target.variant)
        targets.append(target)
    return targets


def _audit_created(
    project: Project,
    flags: list[Flag],
    configs: list[FlagConfig],
    rows: dict[tuple[int, int], tuple[list[Rule], list[Target]]],
    actor: Actor,
    source: str,
) -> None:
    """One entry per flag (its fields) and per flag and environment (its configuration,
    also its first version), as `flag_create` and `flag_config_update` write them."""
    who = {"actor_name": _actor_name(actor), "source": source}
    entries = [
        AuditEntry(
            **who,
            actor=person(actor),
            action="create",
            object_type="flag",
            object_key=flag.key,
            project=project,
            flag_key=flag.key,
            after=flag_meta(flag, tags=[tag.name for tag in flag.tags.all()]),
        )
        for flag in flags
    ]
    versions = []
    by_pk = {flag.pk: flag for flag in flags}
    views: dict[int, Flag] = {}
    for config in configs:
        flag = by_pk[config.flag_id]
        view = views.get(flag.pk) or views.setdefault(flag.pk, _view_of(flag))
        after = _entry_in(view, config, *rows[flag.pk, config.environment_id])
        entries.append(
            AuditEntry(
                **who,
                actor=person(actor),
                action="update",
                object_type="flag_config",
                object_key=f"{flag.key}/{config.environment.key}",
                project=project,
                environment=config.environment,
                flag_key=flag.key,
                after=after,
            )
        )
        versions.append(
            FlagConfigVersion(
                **who, actor=person(actor), config=config, version=1, state=after, action="create"
            )
        )
    _insert(FlagConfigVersion, versions)
    if not Webhook.objects.filter(project=project, active=True).exists():
        _insert(AuditEntry, entries)
        return
    AuditEntry.objects.bulk_create(entries, batch_size=BATCH)  # each entry's id goes out
    for entry in entries:
        events.audit_recorded(entry)  # queued in this transaction, sent after commit


def _view_of(flag: Flag) -> Flag:
    """A copy of the flag's fields, to hold one environment's rows at a time."""
    return Flag(**{f.attname: getattr(flag, f.attname) for f in Flag._meta.concrete_fields})


def _entry_in(view: Flag, config: FlagConfig, rules: list[Rule], targets: list[Target]) -> dict:
    """The flag's document entry in the configuration's environment, from the rows in hand
    (`view`, the flag's `_view_of`, gets this environment's rules and targets)."""
    cache = config.flag.__dict__["_prefetched_objects_cache"]
    view.__dict__["_prefetched_objects_cache"] = {
        "variants": cache["variants"],
        "tags": cache["tags"],
        "rules": rules,
        "targets": targets,
        "prerequisites": [],
    }
    return flag_entry(view, config)
