"""Model rows -> the flag document of one environment (the format in docs/flag-document.md)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.db.models import Prefetch, QuerySet

from flags.models import (
    DocumentChange,
    Environment,
    Flag,
    FlagConfig,
    Prerequisite,
    Rule,
    Segment,
    Target,
)
from flags.validation import serving_document

SCHEMA_VERSION = 1


def targeting_prefetches(environment: Environment, *, configs: bool = True) -> list:
    """What `flag_entry` reads of a flag for one environment, as prefetches (without the
    configuration row, for a caller that holds it)."""
    in_environment = {"environment_id": environment.pk}
    config = [Prefetch("configs", queryset=FlagConfig.objects.filter(**in_environment))]
    return [
        "variants",
        "tags",
        *(config if configs else []),
        Prefetch("rules", queryset=Rule.objects.filter(**in_environment)),
        Prefetch("targets", queryset=Target.objects.filter(**in_environment)),
        Prefetch(
            "prerequisites",
            queryset=Prerequisite.objects.filter(**in_environment).select_related("required_flag"),
        ),
    ]


def _flags_with_targeting(environment: Environment):
    """Every flag of the project with its rows for this environment, in a fixed few queries."""
    return (
        Flag.objects.filter(project_id=environment.project_id)
        .prefetch_related(*targeting_prefetches(environment))
        .order_by("key")
    )


def _serving(obj: FlagConfig | Rule) -> dict:
    return serving_document(obj.serve_variant, obj.rollout, obj.bucket_by, obj.salt)


def flag_entry(flag: Flag, config: FlagConfig | None = None) -> dict:
    """One flag as the document describes it; expects `_flags_with_targeting` prefetches
    (`config`, the flag's configuration in the environment, is read from them if not given)."""
    variants = list(flag.variants.all())
    keys = [variant.key for variant in variants]
    if config is None:
        configs = list(flag.configs.all())
        config = configs[0] if configs else None
    metadata = {"name": flag.name, "tags": sorted(tag.name for tag in flag.tags.all())}
    if flag.description:
        metadata["description"] = flag.description
    entry = {
        "type": flag.type,
        "enabled": bool(config and config.enabled),
        "archived": flag.archived,
        # Whether client-side keys may evaluate it (the evaluation views decide what that
        # means for their answers); a flag's own field, the same in every environment.
        "clientSide": flag.client_side,
        "salt": flag.salt or flag.key,
        # Only a flag imported with another system's scheme names it: flagd's is the default.
        **({"bucketing": flag.bucketing} if flag.bucketing != "flagd" else {}),
        "variants": [{"key": v.key, "value": v.value} for v in variants],
        "offVariant": config.off_variant if config else (keys[-1] if keys else ""),
        "prerequisites": [
            {"flag": p.required_flag.key, "variants": list(p.variants)}
            for p in flag.prerequisites.all()
        ],
        "targets": [{"variant": t.variant, "values": list(t.values)} for t in flag.targets.all()],
        "rules": [
            {
                "id": rule.key,
                "name": rule.name,
                "conditions": rule.conditions,
                "serve": _serving(rule),
            }
            for rule in flag.rules.all()
        ],
        # Every flag gets a configuration per environment; the fallback covers a half-made one.
        "defaultServe": _serving(config) if config else {"variant": keys[0] if keys else ""},
        "metadata": metadata,
    }
    return entry


def segment_entry(segment: Segment) -> dict:
    return {
        "name": segment.name,
        "conditions": segment.conditions,
        "included": list(segment.included),
        "excluded": list(segment.excluded),
    }


def flag_state(flag: Flag, environment: Environment) -> dict:
    """One flag's configuration in one environment, as audit entries and history record it."""
    fresh = _flags_with_targeting(environment).get(pk=flag.pk)
    return flag_entry(fresh)


# Revision of a flag's entry in one environment: every write that changes the entry goes
# through flags.services, which saves the flag (its own fields, variants, tags: `updated_at`,
# `version`) or the configuration (its rules, targets, prerequisites: `version`,
# `updated_at`); a configuration made or replaced has another id. Prerequisites name the
# required flag by its key, which never changes, and rules name segments by key (segments
# are their own entries), so no other row changes a flag's entry. A segment's revision is
# its `version` and `updated_at`, both saved by every segment write.
#
# What changed since the document of version V is known two ways. Each write records, in
# its transaction, the ids of the flags and segments it changed at the version it made
# (DocumentChange, flags.services.steps): when those records cover every version after V,
# the build reads the rows of those flags and segments only. Otherwise (no document yet, a
# document older than the records kept, a write of too many to list) it reads the revision
# of every flag and segment and compares it with the one each entry was built from. (A
# build inside a transaction that then rolls back would keep entries of a version never
# committed; none happens there: previews roll their writes back before anything builds.)

Held = tuple[tuple, str, dict]  # (revision, key, entry)


class _Fragments:
    """The entries of one environment's last document, by row id in key order, with their
    revisions and the version they were built at: what the next document reuses of the flags
    and segments that did not change."""

    __slots__ = ("flags", "segments", "version")

    def __init__(self, version: int | None = None) -> None:
        self.version = version
        self.flags: dict[int, Held] = {}
        self.segments: dict[int, Held] = {}


# Per process, by environment id; replaced whole by each build (so deleted rows go with it).
_fragments: dict[int, _Fragments] = {}
# Above this share of changed flags, one query for every flag is cheaper than `pk__in`.
_READ_ALL_SHARE = 0.5
# Each new flag or segment costs a query for its place in key order: above this many, the
# build reads every revision (one query of every key) instead.
_PLACED_AT_MOST = 20


def holds_fragments(environment_id: int) -> bool:
    """Whether this process built a document of the environment (whose entries it keeps)."""
    return environment_id in _fragments


def clear_fragments() -> None:
    """Forget every cached entry (tests, where rolled-back rows may come back with an id)."""
    _fragments.clear()


def _flag_revisions(environment: Environment) -> list[tuple[int, str, tuple]]:
    """(flag id, key, revision) of every flag of the project, in key order: two light queries."""
    configs = {
        flag_id: (pk, version, updated_at)
        for flag_id, pk, version, updated_at in FlagConfig.objects.filter(
            environment_id=environment.pk
        ).values_list("flag_id", "pk", "version", "updated_at")
    }
    flags = (
        Flag.objects.filter(project_id=environment.project_id)
        .order_by("key")
        .values_list("pk", "key", "version", "updated_at")
    )
    return [
        (pk, key, (version, updated_at, configs.get(pk))) for pk, key, version, updated_at in flags
    ]


def _flag_revision(flag: Flag) -> tuple:
    """`_flag_revisions`' revision of a flag read with `_flags_with_targeting`."""
    configs = list(flag.configs.all())
    config = (configs[0].pk, configs[0].version, configs[0].updated_at) if configs else None
    return (flag.version, flag.updated_at, config)


def _flag_entries(environment: Environment, held: dict[int, Held]) -> dict[int, Held]:
    revisions = _flag_revisions(environment)
    changed = [pk for pk, _, revision in revisions if held.get(pk, (None,))[0] != revision]
    built: dict[int, dict] = {}
    if changed:
        rows = _flags_with_targeting(environment)
        if len(changed) <= _READ_ALL_SHARE * len(revisions):
            rows = rows.filter(pk__in=changed)
        built = {flag.pk: flag_entry(flag) for flag in rows}
    fresh = {}
    for pk, key, revision in revisions:
        entry = built.get(pk)
        if entry is None:
            entry = held[pk][2] if pk in held else None
        if entry is None:  # made after the revisions were read: the next build has it
            continue
        fresh[pk] = (revision, key, entry)
    return fresh


def _segment_entries(environment: Environment, held: dict[int, Held]) -> dict[int, Held]:
    segments = Segment.objects.filter(project_id=environment.project_id).order_by("key")
    revisions = list(segments.values_list("pk", "key", "version", "updated_at"))
    changed = [pk for pk, _, *revision in revisions if held.get(pk, (None,))[0] != tuple(revision)]
    built = {}
    if changed:
        built = {segment.pk: segment_entry(segment) for segment in segments.filter(pk__in=changed)}
    fresh = {}
    for pk, key, *revision in revisions:
        entry = built.get(pk)
        if entry is None:
            entry = held[pk][2] if pk in held else None
        if entry is None:
            continue
        fresh[pk] = (tuple(revision), key, entry)
    return fresh


def _changes_since(environment: Environment, version: int) -> tuple[set[int], set[int]] | None:
    """The ids of the flags and segments that the environment's versions after `version`
    changed, or None if the recorded changes do not list every one of those versions.

    Every version up to the one read is committed (see flags.services.steps), with its
    record; records of later versions, committed since, only add rows to read again.
    """
    if environment.version < version:
        return None
    records = DocumentChange.objects.filter(environment_id=environment.pk, version__gt=version)
    flags: set[int] = set()
    segments: set[int] = set()
    versions = set()
    for number, flag_ids, segment_ids in records.values_list("version", "flags", "segments"):
        if flag_ids is None or segment_ids is None:
            return None
        versions.add(number)
        flags.update(flag_ids)
        segments.update(segment_ids)
    if not versions.issuperset(range(version + 1, environment.version + 1)):
        return None
    return flags, segments


def _merged(
    held: dict[int, Held],
    changed: set[int],
    rows: list[Any],
    entry: Callable[[Any], dict],
    revision: Callable[[Any], tuple],
    preceding: Callable[[Any, list[int]], int | None],
) -> dict[int, Held] | None:
    """`held` with the entries of the `changed` ids made anew from `rows` (in key order; an
    id without a row was deleted), new rows placed in key order after the id `preceding`
    gives them (None: first); None where that place is not among the held entries."""
    new = [row for row in rows if row.pk not in held]
    if len(new) > _PLACED_AT_MOST:
        return None
    following: dict[int | None, list] = {}
    for row in new:
        before = preceding(row, [other.pk for other in new])
        if before is not None and before not in held:
            return None
        following.setdefault(before, []).append(row)
    by_pk = {row.pk: row for row in rows}
    fresh: dict[int, Held] = {}

    def add(row: Any) -> None:
        fresh[row.pk] = (revision(row), row.key, entry(row))

    for row in following.get(None, ()):
        add(row)
    for pk, kept in held.items():
        if pk not in changed:
            fresh[pk] = kept
        elif pk in by_pk:
            add(by_pk[pk])
        for row in following.get(pk, ()):
            add(row)
    return fresh


def _preceding(queryset: QuerySet) -> Callable[[Any, list[int]], int | None]:
    """The id of the row before `row` in the database's key order (its collation), leaving
    out the rows `new`."""

    def preceding(row: Any, new: list[int]) -> int | None:
        earlier = queryset.filter(key__lt=row.key).exclude(pk__in=new).order_by("-key")
        return earlier.values_list("pk", flat=True).first()

    return preceding


def _changed_flag_entries(
    environment: Environment, held: dict[int, Held], changed: set[int]
) -> dict[int, Held] | None:
    if not changed:
        return dict(held)
    if len(changed) > _READ_ALL_SHARE * len(held):
        return None
    rows = list(_flags_with_targeting(environment).filter(pk__in=changed))
    project_flags = Flag.objects.filter(project_id=environment.project_id)
    return _merged(held, changed, rows, flag_entry, _flag_revision, _preceding(project_flags))


def _changed_segment_entries(
    environment: Environment, held: dict[int, Held], changed: set[int]
) -> dict[int, Held] | None:
    if not changed:
        return dict(held)
    segments = Segment.objects.filter(project_id=environment.project_id)
    rows = list(segments.filter(pk__in=changed).order_by("key"))
    return _merged(
        held,
        changed,
        rows,
        segment_entry,
        lambda segment: (segment.version, segment.updated_at),
        _preceding(segments),
    )


def _build(environment: Environment) -> dict:
    """The document, reusing the last build's entry of every flag and segment that did not
    change (the same dict object: evaluation.engine then reuses its compiled flag without
    comparing it), reading the rows of the others only."""
    held = _fragments.get(environment.pk) or _Fragments()
    fresh = _Fragments(environment.version)
    changes = _changes_since(environment, held.version) if held.version is not None else None
    flags = segments = None
    if changes is not None:
        flags = _changed_flag_entries(environment, held.flags, changes[0])
        segments = _changed_segment_entries(environment, held.segments, changes[1])
    fresh.flags = flags if flags is not None else _flag_entries(environment, held.flags)
    fresh.segments = (
        segments if segments is not None else _segment_entries(environment, held.segments)
    )
    _fragments[environment.pk] = fresh
    return {
        "schemaVersion": SCHEMA_VERSION,
        "project": environment.project.key,
        "environment": environment.key,
        "version": environment.version,
        "flags": {key: entry for _, key, entry in fresh.flags.values()},
        "segments": {key: entry for _, key, entry in fresh.segments.values()},
    }


def build_document(environment_id: int) -> dict:
    """The environment's document, consistent with the version it carries.

    The version is bumped in the same transaction as every change, so if it reads the same
    before and after the rows are read, no change committed in between: the rows belong to
    that version. Otherwise read again. Entries of flags and segments unchanged since this
    process last built the environment's document are reused (see `_build`): the cost is
    that of the rows that changed, plus one light query of the recorded changes since that
    document (or, where they do not cover it, of every flag's and segment's revision). The
    entries are shared between documents: a document must not be edited.
    """
    for _ in range(5):
        environment = Environment.objects.select_related("project").get(pk=environment_id)
        document = _build(environment)
        latest = Environment.objects.filter(pk=environment_id).values_list("version", flat=True)
        if latest.first() == environment.version:
            return document
    return document
