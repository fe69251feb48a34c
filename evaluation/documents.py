"""Model rows -> the flag document of one environment (the format in docs/flag-document.md)."""

from __future__ import annotations

from django.db.models import Prefetch

from flags.models import (
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


def _build(environment: Environment) -> dict:
    flags = _flags_with_targeting(environment)
    segments = Segment.objects.filter(project_id=environment.project_id).order_by("key")
    return {
        "schemaVersion": SCHEMA_VERSION,
        "project": environment.project.key,
        "environment": environment.key,
        "version": environment.version,
        "flags": {flag.key: flag_entry(flag) for flag in flags},
        "segments": {segment.key: segment_entry(segment) for segment in segments},
    }


def build_document(environment_id: int) -> dict:
    """The environment's document, consistent with the version it carries.

    The version is bumped in the same transaction as every change, so if it reads the same
    before and after the rows are read, no change committed in between: the rows belong to
    that version. Otherwise read again.
    """
    for _ in range(5):
        environment = Environment.objects.select_related("project").get(pk=environment_id)
        document = _build(environment)
        latest = Environment.objects.filter(pk=environment_id).values_list("version", flat=True)
        if latest.first() == environment.version:
            return document
    return document
