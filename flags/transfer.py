"""Export, import and promote: flag documents diffed against the store and applied to it.

The flag document (docs/flag-document.md) is the exchange format. An import or a promotion
is planned first (a per-flag diff, nothing written), then applied in one transaction through
`flags.services`, so the same validation, role checks and audit entries apply as for every
other door. A dry run applies the plan and rolls it back: it reports the errors a real run
would hit, and writes nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.db import transaction

from evaluation.documents import SCHEMA_VERSION, build_document, flag_state, segment_entry
from evaluation.engine import DocumentError, ErrorCode, compile_document
from flags import services
from flags.models import Environment, Flag, FlagConfig, Project
from flags.roles import Action, authorize

if TYPE_CHECKING:
    from flags.roles import Actor

EXISTING = ("skip", "overwrite")
# A list compared item by item is keyed by this field; `rules` are compared by position.
KEYED_LISTS = {"variants": "key", "targets": "variant", "prerequisites": "flag"}
LISTS = {*KEYED_LISTS, "rules"}
Progress = Callable[[int, int, str], None]


# --- Export -----------------------------------------------------------------------------


def export_environment(*, environment: Environment, actor: Actor) -> dict:
    """The environment's flag document, exactly as server-side SDKs receive it."""
    authorize(actor, environment.project, Action.READ)
    return build_document(environment.pk)


def export_project(*, project: Project, actor: Actor) -> dict:
    """Every environment's document of a project, keyed by environment."""
    authorize(actor, project, Action.READ)
    return {
        "schemaVersion": SCHEMA_VERSION,
        "project": project.key,
        "environments": {env.key: build_document(env.pk) for env in project.environments.all()},
    }


# --- Plans: what an import or a promotion would change ----------------------------------


@dataclass
class Change:
    """One difference: `+` added, `-` removed, `~` changed, at a path inside the item."""

    op: str
    path: str
    before: Any = None
    after: Any = None

    def describe(self) -> str:
        if self.op == "+":
            return f"+ {self.path}: {_short(self.after)}"
        if self.op == "-":
            return f"- {self.path}: {_short(self.before)}"
        return f"~ {self.path}: {_short(self.before)} -> {_short(self.after)}"


@dataclass
class ItemPlan:
    """What happens to one project, environment, segment or flag."""

    kind: str
    key: str
    status: str  # added, changed, unchanged, skipped
    changes: list[Change] = field(default_factory=list)
    summary: str = ""


@dataclass
class Plan:
    project: str
    environments: list[str]
    items: list[ItemPlan] = field(default_factory=list)
    untouched: list[str] = field(default_factory=list)  # flags in the store, not in the file

    def counts(self) -> dict[str, int]:
        counts = {"added": 0, "changed": 0, "unchanged": 0, "skipped": 0}
        for item in self.items:
            if item.kind == "flag":
                counts[item.status] += 1
        return counts

    @property
    def has_changes(self) -> bool:
        return any(item.status in ("added", "changed") for item in self.items)

    def to_dict(self) -> dict:
        return {
            "project": self.project,
            "environments": self.environments,
            "counts": self.counts(),
            "items": [
                {
                    "kind": item.kind,
                    "key": item.key,
                    "status": item.status,
                    "changes": [vars(change) for change in item.changes],
                }
                for item in self.items
            ],
            "untouched": self.untouched,
        }


def _short(value: Any, limit: int = 200) -> str:
    text = json.dumps(value, ensure_ascii=False, sort_keys=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def diff(before: Any, after: Any, path: str = "") -> list[Change]:
    """The changes that turn `before` into `after`, recursing into objects and known lists."""
    if before == after:
        return []
    if isinstance(before, dict) and isinstance(after, dict):
        changes = []
        for key in [*before, *(k for k in after if k not in before)]:
            sub = f"{path}.{key}" if path else key
            if key not in after:
                changes.append(Change("-", sub, before=before[key]))
            elif key not in before:
                changes.append(Change("+", sub, after=after[key]))
            else:
                changes.extend(diff(before[key], after[key], sub))
        return changes
    name = path.rsplit(".", 1)[-1]
    if isinstance(before, list) and isinstance(after, list) and name in LISTS:
        return _diff_list(before, after, path, KEYED_LISTS.get(name))
    return [Change("~", path, before, after)]


def _diff_list(before: list, after: list, path: str, key_field: str | None) -> list[Change]:
    def keyed(items: list) -> dict:
        return {
            (item.get(key_field) if key_field and isinstance(item, dict) else index): item
            for index, item in enumerate(items)
        }

    old, new = keyed(before), keyed(after)
    changes = []
    for key in [*old, *(k for k in new if k not in old)]:
        sub = f"{path}[{key}]"
        if key not in new:
            changes.append(Change("-", sub, before=old[key]))
        elif key not in old:
            changes.append(Change("+", sub, after=new[key]))
        else:
            changes.extend(diff(old[key], new[key], sub))
    return changes


# --- Reading documents ------------------------------------------------------------------


def environment_documents(document: Any) -> dict[str, dict]:
    """An export file's documents by environment key: one environment or a whole project."""
    if not isinstance(document, dict):
        raise ValidationError({"document": "must be a JSON object"})
    if "environments" not in document:
        _check_document("", document)
        return {str(document.get("environment") or ""): document}
    documents = document["environments"]
    if not isinstance(documents, dict) or not documents:
        raise ValidationError({"environments": "must be an object of flag documents"})
    for key, env_document in documents.items():
        _check_document(f"environments.{key}.", env_document)
    return documents


def _check_document(where: str, document: Any) -> None:
    """The structure the services need; the engine's compiler checks the flags themselves."""
    if not isinstance(document, dict):
        raise ValidationError({f"{where}document": "must be a JSON object"})
    if document.get("schemaVersion", SCHEMA_VERSION) != SCHEMA_VERSION:
        raise ValidationError({f"{where}schemaVersion": f"only version {SCHEMA_VERSION} is known"})
    try:
        snapshot = compile_document({**document, "version": 0})
    except DocumentError as error:
        raise ValidationError({f"{where}{error.field or 'document'}": error.message}) from error
    for key, entry in document["flags"].items():
        if not isinstance(entry, dict):
            raise ValidationError({f"{where}flags.{key}": "must be an object"})
        result = snapshot.evaluate(key, {"targetingKey": "import-check"})
        if result.error_code == ErrorCode.PARSE_ERROR:
            details = (result.error_details or "").removeprefix(f"flag {key!r}: ")
            raise ValidationError({f"{where}flags.{key}": details})


def _meta(key: str, entry: dict) -> dict:
    """A flag's project-wide fields from its document entry, in a comparable form."""
    metadata = entry.get("metadata") or {}
    # Files written before flags had `clientSide` leave each flag's own setting as it is.
    side = {"client_side": entry["clientSide"]} if isinstance(entry.get("clientSide"), bool) else {}
    return {
        **side,
        "type": entry.get("type"),
        "name": metadata.get("name") or key,
        "description": metadata.get("description") or "",
        "tags": sorted(metadata.get("tags") or []),
        "salt": entry.get("salt") or key,
        "bucketing": entry.get("bucketing") or "flagd",
        "archived": bool(entry.get("archived", False)),
        "variants": [
            {"key": v.get("key"), "value": v.get("value")} for v in entry.get("variants") or []
        ],
    }


def _config(entry: dict) -> dict:
    """A flag's configuration in one environment, as `services.flag_config_update` takes it.

    Rules keep their ids (their keys), so an imported or promoted rule is the same rule.
    """
    return {
        "enabled": entry.get("enabled", False),
        "offVariant": entry.get("offVariant"),
        "defaultServe": entry.get("defaultServe"),
        "rules": entry.get("rules") or [],
        "targets": entry.get("targets") or [],
        "prerequisites": entry.get("prerequisites") or [],
    }


def _segment(key: str, entry: Any) -> dict:
    entry = entry if isinstance(entry, dict) else {}
    return {
        "name": entry.get("name") or key,
        "conditions": entry.get("conditions") or [],
        "included": entry.get("included") or [],
        "excluded": entry.get("excluded") or [],
    }


@dataclass
class _Incoming:
    """The flags and segments a file brings, merged across its environments."""

    meta: dict[str, dict]
    configs: dict[str, dict[str, dict]]  # flag key -> environment key -> configuration
    segments: dict[str, dict]


def _incoming(documents: dict[str, dict]) -> _Incoming:
    incoming = _Incoming({}, {}, {})
    for env_key, document in documents.items():
        for key, entry in document["flags"].items():
            incoming.meta.setdefault(key, _meta(key, entry))
            incoming.configs.setdefault(key, {})[env_key] = _config(entry)
        for key, entry in (document.get("segments") or {}).items():
            incoming.segments.setdefault(key, _segment(key, entry))
    return incoming


# --- Import -----------------------------------------------------------------------------


@dataclass
class _Target:
    """Where an import goes: the project and environments, existing or to be created."""

    project_key: str
    project: Project | None
    environments: dict[str, Environment | None]  # file's environment key -> target


def _resolve_target(
    documents: dict[str, dict],
    project_key: str | None,
    environment_key: str | None,
    create_missing: bool,
) -> tuple[_Target, dict[str, dict]]:
    first = next(iter(documents.values()))
    project_key = project_key or first.get("project")
    if not project_key:
        raise ValidationError({"project": "the file names no project: give one"})
    if environment_key:
        if len(documents) > 1:
            raise ValidationError(
                {"environment": "the file holds several environments; import it into a project"}
            )
        documents = {environment_key: first}
    if "" in documents:
        raise ValidationError({"environment": "the file names no environment: give one"})
    project = Project.objects.filter(key=project_key).first()
    if project is None and not create_missing:
        raise ValidationError(
            {"project": f"unknown project {project_key!r} (--create-missing creates it)"}
        )
    environments = {}
    for key in documents:
        environment = project.environments.filter(key=key).first() if project else None
        if environment is None and project is not None and not create_missing:
            raise ValidationError(
                {
                    "environment": f"unknown environment {key!r} in project {project_key!r} "
                    "(--create-missing creates it)"
                }
            )
        environments[key] = environment
    return _Target(project_key, project, environments), documents


def plan_import(
    *,
    document: Any,
    project_key: str | None = None,
    environment_key: str | None = None,
    existing: str = "skip",
    create_missing: bool = False,
    actor: Actor = None,
) -> Plan:
    """What importing `document` would change, per flag; writes nothing."""
    documents = environment_documents(document)
    project_key = project_key or document.get("project")
    target, documents = _resolve_target(documents, project_key, environment_key, create_missing)
    return _plan(target, _incoming(documents), _check_existing(existing), actor)


def _check_existing(existing: str) -> str:
    if existing not in EXISTING:
        raise ValidationError({"existing": f"one of {', '.join(EXISTING)}, not {existing!r}"})
    return existing


def _plan(target: _Target, incoming: _Incoming, existing: str, actor: Actor) -> Plan:
    project = target.project
    if project is not None:
        authorize(actor, project, Action.READ)
    plan = Plan(target.project_key, list(target.environments))
    if project is None:
        plan.items.append(ItemPlan("project", target.project_key, "added"))
    for key, environment in target.environments.items():
        if environment is None and project is not None:
            plan.items.append(ItemPlan("environment", key, "added"))
    segments = {s.key: s for s in project.segments.all()} if project else {}
    for key, entry in incoming.segments.items():
        current = segments.get(key)
        before = segment_entry(current) if current else None
        plan.items.append(_item("segment", key, before, entry, existing))
    flags = (
        {f.key: f for f in project.flags.prefetch_related("variants", "tags")} if project else {}
    )
    several = len(target.environments) > 1
    for key, meta in incoming.meta.items():
        flag = flags.get(key)
        if flag is None:
            plan.items.append(_added_flag(key, meta, incoming.configs[key]))
            continue
        stored_meta = _stored_meta(flag)
        if "client_side" not in meta:
            stored_meta.pop("client_side")
        changes = diff(stored_meta, meta)
        for env_key, config in incoming.configs[key].items():
            environment = target.environments[env_key]
            stored = _config(flag_state(flag, environment)) if environment else None
            prefix = f"{env_key}: " if several else ""
            for change in diff(stored, config):
                change.path = prefix + (change.path or "configuration")
                changes.append(change)
        plan.items.append(_item("flag", key, changes, None, existing, diffed=True))
    plan.untouched = sorted(set(flags) - set(incoming.meta))
    return plan


def _item(
    kind: str, key: str, before: Any, after: Any, existing: str, diffed: bool = False
) -> ItemPlan:
    if not diffed and before is None:
        return ItemPlan(kind, key, "added")
    changes = before if diffed else diff(before, after)
    if not changes:
        return ItemPlan(kind, key, "unchanged")
    if existing == "skip":
        return ItemPlan(kind, key, "skipped", summary=f"{len(changes)} difference(s) not applied")
    return ItemPlan(kind, key, "changed", changes)


def _added_flag(key: str, meta: dict, configs: dict[str, dict]) -> ItemPlan:
    states = ", ".join(
        f"{env_key} {'on' if config['enabled'] else 'off'}" for env_key, config in configs.items()
    )
    summary = f"{meta['type']}, {len(meta['variants'])} variants; {states}"
    return ItemPlan("flag", key, "added", summary=summary)


def _stored_meta(flag: Flag) -> dict:
    return {
        "type": flag.type,
        "name": flag.name or flag.key,
        "description": flag.description or "",
        "tags": sorted(tag.name for tag in flag.tags.all()),
        "salt": flag.salt or flag.key,
        "bucketing": flag.bucketing,
        "archived": flag.archived,
        "client_side": flag.client_side,
        "variants": [{"key": v.key, "value": v.value} for v in flag.variants.all()],
    }


class _DryRun(Exception):
    """Raised to roll back a dry run's transaction once every write succeeded."""


def import_document(
    *,
    document: Any,
    project_key: str | None = None,
    environment_key: str | None = None,
    existing: str = "skip",
    create_missing: bool = False,
    dry_run: bool = False,
    actor: Actor,
    source: str,
    progress: Progress | None = None,
) -> Plan:
    """Import an export file into a project (or one environment): all or nothing.

    Flags missing from the project are created; existing ones are left alone with
    `existing="skip"` or made to match the file with `"overwrite"`. Flags of the project
    that the file does not mention are left unchanged. Returns the plan that was applied.
    """
    documents = environment_documents(document)
    project_key = project_key or document.get("project")
    target, documents = _resolve_target(documents, project_key, environment_key, create_missing)
    incoming = _incoming(documents)
    plan = _plan(target, incoming, _check_existing(existing), actor)
    try:
        with transaction.atomic():
            _apply_import(target, incoming, plan, actor, source, progress or _quiet)
            if dry_run:
                raise _DryRun
    except _DryRun:
        pass
    return plan


def _quiet(done: int, total: int, key: str) -> None:
    return None


def _within(prefix: str, error: ValidationError) -> ValidationError:
    """The same error with its fields named from the flag or segment it is about."""
    if hasattr(error, "error_dict"):
        return ValidationError(
            {f"{prefix}.{name}": messages for name, messages in error.message_dict.items()}
        )
    return ValidationError({prefix: error.messages})


def _apply_import(
    target: _Target,
    incoming: _Incoming,
    plan: Plan,
    actor: Actor,
    source: str,
    progress: Progress,
) -> None:
    write: dict[str, Any] = {"actor": actor, "source": source}
    project = target.project or services.project_create(
        key=target.project_key, name=target.project_key, **write
    )
    environments = {}
    for key, environment in target.environments.items():
        environments[key] = (
            environment
            or project.environments.filter(key=key).first()
            or services.environment_create(project=project, key=key, name=key, **write)
        )
    status = {(item.kind, item.key): item.status for item in plan.items}
    _create_segments(project, incoming, status, write)
    for key, entry in incoming.segments.items():
        _apply_segment(project, key, entry, status[("segment", key)], write)
    changed = [key for key in incoming.meta if status[("flag", key)] == "changed"]
    added = [key for key in incoming.meta if status[("flag", key)] == "added"]
    total = len(changed) + len(added)
    configure, trim = [], []
    for key in changed:  # their own fields first: the new flags' prerequisites may name them
        try:
            flag, trimmed = _write_flag(project, key, incoming.meta[key], write)
        except ValidationError as error:
            raise _within(f"flags.{key}", error) from error
        configure.append(flag)
        if trimmed:
            trim.append((flag, incoming.meta[key]["variants"]))
    several = len(environments) > 1
    _create_flags(project, added, incoming, environments, write, progress, total)
    for done, flag in enumerate(configure, start=len(added) + 1):
        for env_key, config in incoming.configs[flag.key].items():
            row = FlagConfig.objects.get(flag=flag, environment=environments[env_key])
            prefix = f"environments.{env_key}.flags.{flag.key}" if several else f"flags.{flag.key}"
            try:
                services.flag_config_update(config=row, data=config, **write)
            except ValidationError as error:
                raise _within(prefix, error) from error
        progress(done, total, flag.key)
    for flag, variants in trim:
        try:
            services.flag_update(flag=flag, data={"variants": variants}, **write)
        except ValidationError as error:
            raise _within(f"flags.{flag.key}", error) from error
    services.audit(
        action="import",
        obj_type="project",
        obj_key=project.key,
        project=project,
        environment=next(iter(environments.values())) if not several else None,
        after={"environments": list(environments), **plan.counts()},
        **write,
    )


def _create_flags(
    project: Project,
    keys: list[str],
    incoming: _Incoming,
    environments: dict[str, Environment],
    write: dict,
    progress: Progress,
    total: int,
) -> None:
    """The file's new flags, configured in each of its environments, in one bulk write."""
    if not keys:
        return
    flags = [_new_flag(key, incoming.meta[key]) for key in keys]
    configs = {
        key: {environments[env]: config for env, config in incoming.configs[key].items()}
        for key in keys
    }
    try:
        services.flags_create_many(
            project=project,
            flags=flags,
            configs=configs,
            progress=lambda done, _, key: progress(done, total, key),
            **write,
        )
    except services.FlagError as error:
        several = len(environments) > 1
        where = f"environments.{error.environment}." if several and error.environment else ""
        raise _within(f"{where}flags.{error.key}", error.error) from error


def _new_flag(key: str, meta: dict) -> dict:
    return {
        "key": key,
        "name": meta["name"],
        "type": meta["type"],
        "variants": meta["variants"],
        "description": meta["description"],
        "tags": meta["tags"],
        "salt": "" if meta["salt"] == key else meta["salt"],
        "bucketing": meta["bucketing"],
        "client_side": meta.get("client_side", False),
        "archived": meta["archived"],
    }


def _create_segments(project: Project, incoming: _Incoming, status: dict, write: dict) -> None:
    """The file's new segments, in one bulk write (the changed ones follow, one by one)."""
    added = {k: e for k, e in incoming.segments.items() if status[("segment", k)] == "added"}
    try:
        services.segments_create_many(project=project, segments=added, **write)
    except services.SegmentError as error:
        raise _within(f"segments.{error.key}", error.error) from error


def _apply_segment(project: Project, key: str, entry: dict, state: str, write: dict) -> None:
    try:
        if state == "changed":
            segment = project.segments.get(key=key)
            services.segment_update(segment=segment, data=entry, **write)
    except ValidationError as error:
        raise _within(f"segments.{key}", error) from error


def _write_flag(project: Project, key: str, meta: dict, write: dict):
    """Update a flag's own fields; returns it and whether variants must be trimmed.

    Variants the file drops are kept until the configurations stop serving them, so an
    update first writes the file's variants followed by the ones it leaves out.
    """
    salt = "" if meta["salt"] == key else meta["salt"]
    flag = project.flags.get(key=key)
    incoming_keys = {variant["key"] for variant in meta["variants"]}
    dropped = [
        {"key": v.key, "value": v.value} for v in flag.variants.all() if v.key not in incoming_keys
    ]
    data = {**meta, "salt": salt, "variants": meta["variants"] + dropped}
    services.flag_update(flag=flag, data=data, **write)
    return flag, bool(dropped)


# --- Promote ----------------------------------------------------------------------------

PROMOTED = ("enabled", "offVariant", "defaultServe", "rules", "targets", "prerequisites")


def plan_promote(
    *,
    from_environment: Environment,
    to_environment: Environment,
    flag_keys: Iterable[str],
    include_enabled: bool = True,
    actor: Actor = None,
) -> Plan:
    """What copying the flags' configuration from one environment to another would change."""
    project = from_environment.project
    if to_environment.project_id != project.pk:
        raise ValidationError({"environment": "both environments must be in the same project"})
    if to_environment.pk == from_environment.pk:
        raise ValidationError({"environment": "promote to another environment than the source"})
    authorize(actor, project, Action.READ)
    flags = _flags_named(project, flag_keys)
    plan = Plan(project.key, [to_environment.key])
    for flag in flags:
        wanted = _promoted(flag_state(flag, from_environment), include_enabled)
        current = _promoted(flag_state(flag, to_environment), include_enabled)
        changes = diff(current, wanted)
        plan.items.append(
            ItemPlan("flag", flag.key, "changed" if changes else "unchanged", changes)
        )
    return plan


def _flags_named(project: Project, keys: Iterable[str]) -> list[Flag]:
    keys = list(dict.fromkeys(keys))
    if not keys:
        raise ValidationError({"flags": "name at least one flag"})
    flags = {flag.key: flag for flag in project.flags.filter(key__in=keys)}
    unknown = [key for key in keys if key not in flags]
    if unknown:
        raise ValidationError({"flags": f"unknown flag {unknown[0]!r} in project {project.key!r}"})
    return [flags[key] for key in keys]


def _promoted(state: dict, include_enabled: bool) -> dict:
    config = _config(state)
    if not include_enabled:
        config.pop("enabled")
    return config


@transaction.atomic
def promote(
    *,
    from_environment: Environment,
    to_environment: Environment,
    flag_keys: Iterable[str],
    include_enabled: bool = True,
    actor: Actor,
    source: str,
) -> Plan:
    """Copy the flags' configuration from one environment to another, in one transaction."""
    plan = plan_promote(
        from_environment=from_environment,
        to_environment=to_environment,
        flag_keys=flag_keys,
        include_enabled=include_enabled,
        actor=actor,
    )
    project = from_environment.project
    changed = [item.key for item in plan.items if item.status == "changed"]
    for key in changed:
        flag = project.flags.get(key=key)
        wanted = _promoted(flag_state(flag, from_environment), include_enabled)
        row = FlagConfig.objects.get(flag=flag, environment=to_environment)
        try:
            services.flag_config_update(config=row, data=wanted, actor=actor, source=source)
        except ValidationError as error:
            raise _within(f"flags.{key}", error) from error
    if changed:
        services.audit(
            actor=actor,
            source=source,
            action="promote",
            obj_type="environment",
            obj_key=to_environment.key,
            project=project,
            environment=to_environment,
            after={"from": from_environment.key, "flags": changed},
        )
    return plan
