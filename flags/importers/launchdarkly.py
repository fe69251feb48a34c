"""LaunchDarkly: flags and segments as its REST API or server-side SDK data returns them.

A flag keeps `bucketing: launchdarkly` and its salt, so a rollout hashes
`"{flagKey}.{salt}.{value}"` as LaunchDarkly does. Accepted: the SDK data
(`{"flags": {...}, "segments": {...}}`, one environment) or the REST API's flag list
(`{"items": [...]}`) and a segment list, each flag with exactly one environment (ask the API
with `?env=KEY`). User contexts only: the context's `key` is the `targetingKey`, every other
attribute keeps its name. A clause on an absent attribute is false, negated or not, in both
systems.
"""

from __future__ import annotations

from typing import Any, cast

from django.core.exceptions import ValidationError

from flags.importers.conversion import (
    Conversion,
    RolloutEntry,
    Unsupported,
    condition,
    export_object,
    flag_key_of,
    require_list,
    require_object,
)

OPERATORS = {
    "in": "in",
    "endsWith": "ends_with",
    "startsWith": "starts_with",
    "matches": "matches",
    "contains": "contains",
    "lessThan": "lt",
    "lessThanOrEqual": "lte",
    "greaterThan": "gt",
    "greaterThanOrEqual": "gte",
    "before": "before",
    "after": "after",
    "semVerEqual": "semver_eq",
    "semVerLessThan": "semver_lt",
    "semVerGreaterThan": "semver_gt",
}


def _attribute(name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise Unsupported("a clause names no attribute")
    return "targetingKey" if name == "key" else name


def _flags_and_segments(data: Any) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    data = require_object(data, "document")
    if "items" in data:  # the REST API: each flag's configuration per environment
        flags = []
        for index, item in enumerate(require_list(data["items"], "items")):
            item = require_object(item, f"items[{index}]")
            environments = item.get("environments")
            if not isinstance(environments, dict) or len(environments) != 1:
                flags.append({"key": item.get("key"), "_problem": "name one environment (?env=)"})
                continue
            configuration = require_object(next(iter(environments.values())), "environments")
            flags.append({**configuration, **item, "environments": None})
        segment_list = require_list(data.get("segments"), "segments")
        # A segment key is a string: another value names no segment a clause could match.
        segments = {
            s["key"]: s
            for s in segment_list
            if isinstance(s, dict) and isinstance(s.get("key"), str)
        }
        return flags, segments
    data = export_object(data, "flags", "a LaunchDarkly export holds flags (or REST items)")
    flag_map = require_object(data["flags"], "flags")
    segments = data.get("segments") or {}
    if not isinstance(segments, dict):
        raise ValidationError({"segments": "must be a JSON object"})
    return [
        {"key": key, **require_object(f, f"flags.{key}")} for key, f in flag_map.items()
    ], segments


def convert_launchdarkly(data: Any) -> Conversion:
    flags, raw_segments = _flags_and_segments(data)
    conversion = Conversion.empty()
    segments: dict[str, dict[str, Any] | str] = {}
    for key, segment in raw_segments.items():
        try:
            if flag_key_of(key, set()) != key:
                raise Unsupported("its key is not a segment key (lowercase letters, digits, -_.)")
            segments[key] = _segment(segment)
        except Unsupported as reason:
            segments[key] = str(reason)
    variations: dict[str, list[str]] = {}
    for flag in flags:
        flag_name = flag.get("key")
        if not isinstance(flag_name, str):  # no flag key, so no prerequisite names it
            continue
        try:
            variations[flag_name] = _variants(flag)[2]
        except Unsupported:
            continue
    taken: set[str] = set()
    used_segments: set[str] = set()
    for flag in flags:
        name = flag.get("key")
        try:
            if "_problem" in flag:
                raise Unsupported(flag["_problem"])
            key = flag_key_of(name, taken)
            name = cast(str, name)  # flag_key_of takes a non-empty string only
            entry, named = _flag(key, name, flag, segments, variations)
        except Unsupported as reason:
            conversion.skipped[str(name)] = str(reason)
            continue
        taken.add(key)
        used_segments |= named
        conversion.keys[name] = key
        conversion.document["flags"][key] = entry
    for key in sorted(used_segments):
        conversion.document["segments"][key] = segments[key]
    return conversion


def _variants(flag: dict[str, Any]) -> tuple[str, list[dict[str, Any]], list[str]]:
    raw = require_list(flag.get("variations"), "variations")
    values = [v.get("value") if isinstance(v, dict) and "value" in v else v for v in raw]
    if not values:
        raise Unsupported("it has no variations")
    booleans = [v for v in values if isinstance(v, bool)]
    if len(booleans) == len(values):
        if sorted(booleans) != [False, True]:
            raise Unsupported("a boolean flag here has exactly one true and one false variation")
        keys = ["on" if v else "off" for v in booleans]
        return "boolean", [{"key": "on", "value": True}, {"key": "off", "value": False}], keys
    kinds = (
        ("string", lambda v: isinstance(v, str)),
        ("number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
        ("json", lambda v: isinstance(v, dict)),
    )
    flag_type = next((kind for kind, test in kinds if all(test(v) for v in values)), None)
    if flag_type is None:
        raise Unsupported("its variations are not all strings, numbers or JSON objects")
    keys, table = [], []
    for index, (item, value) in enumerate(zip(raw, values, strict=True)):
        name = item.get("name") if isinstance(item, dict) else None
        key = name.lower() if isinstance(name, str) else ""
        if not key or key in keys or not key.replace("-", "").replace("_", "").isalnum():
            key = f"variation-{index}"
        keys.append(key)
        table.append({"key": key, "value": value})
    return flag_type, table, keys


def _index(value: Any, keys: list[str], what: str) -> str:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < len(keys):
        raise Unsupported(f"{what} names no variation: {value!r}")
    return keys[value]


def _flag(
    key: str,
    name: str,
    flag: dict[str, Any],
    segments: dict[str, dict[str, Any] | str],
    variations: dict[str, list[str]],
) -> tuple[dict[str, Any], set[str]]:
    flag_type, table, keys = _variants(flag)
    salt = flag.get("salt")
    if not isinstance(salt, str) or not salt:
        raise Unsupported("it has no salt, which its rollouts hash")
    on = flag.get("on")
    if not isinstance(on, bool):
        raise Unsupported("its on is not true or false")
    named: set[str] = set()
    rules = []
    for index, rule in enumerate(require_list(flag.get("rules"), "rules"), start=1):
        rule = require_object(rule, "rules[]")
        conditions = []
        for clause in require_list(rule.get("clauses"), "clauses"):
            built, segment_keys = _clause(clause, segments)
            conditions.append(built)
            named |= segment_keys
        serve = _serving(rule, keys, name, key, "a rule")
        rules.append({"id": str(index), "conditions": conditions, "serve": serve})
    targets = []
    for target in require_list(flag.get("targets"), "targets"):
        target = require_object(target, "targets[]")
        if target.get("contextKind", "user") != "user":
            raise Unsupported("it targets contexts of a kind other than user")
        values = [v for v in require_list(target.get("values"), "values") if isinstance(v, str)]
        targets.append(
            {"variant": _index(target.get("variation"), keys, "a target"), "values": values}
        )
    for target in require_list(flag.get("contextTargets"), "contextTargets"):
        if isinstance(target, dict) and target.get("contextKind", "user") != "user":
            raise Unsupported("it targets contexts of a kind other than user")
    prerequisites = []
    for prerequisite in require_list(flag.get("prerequisites"), "prerequisites"):
        prerequisite = require_object(prerequisite, "prerequisites[]")
        parent = prerequisite.get("key")
        if parent not in variations:
            raise Unsupported(f"its prerequisite {parent!r} is not imported")
        variant = _index(prerequisite.get("variation"), variations[parent], "a prerequisite")
        prerequisites.append({"flag": str(parent).lower(), "variants": [variant]})
    off = flag.get("offVariation")
    entry = {
        "type": flag_type,
        "enabled": on,
        "salt": salt,
        "bucketing": "launchdarkly",
        "variants": table,
        "offVariant": _index(off, keys, "offVariation"),
        "prerequisites": prerequisites,
        "targets": targets,
        "rules": rules,
        "defaultServe": _serving(
            require_object(flag.get("fallthrough"), "fallthrough"), keys, name, key, "fallthrough"
        ),
        "metadata": {
            "name": flag.get("name") or name,
            "description": flag.get("description") or "",
        },
    }
    return entry, named


def _serving(
    serving: dict[str, Any], keys: list[str], name: str, key: str, what: str
) -> dict[str, Any]:
    rollout = serving.get("rollout")
    if rollout is None:
        return {"variant": _index(serving.get("variation"), keys, what)}
    rollout = require_object(rollout, "rollout")
    if rollout.get("seed") is not None or rollout.get("kind") == "experiment":
        raise Unsupported("an experiment rollout hashes its seed, not the flag's salt")
    if name != key:
        raise Unsupported("its key is not lowercase, and its rollouts hash the key as it is")
    bucket_by = rollout.get("bucketBy") or "key"
    if rollout.get("contextKind", "user") != "user":
        raise Unsupported("a rollout buckets a context kind other than user")
    entries: list[RolloutEntry] = []
    for item in require_list(rollout.get("variations"), "rollout.variations"):
        item = require_object(item, "rollout.variations[]")
        weight = item.get("weight")
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            raise Unsupported(f"a rollout weight is not a non-negative integer: {weight!r}")
        entries.append(
            {"variant": _index(item.get("variation"), keys, "a rollout"), "weight": weight}
        )
    if sum(entry["weight"] for entry in entries) <= 0:
        raise Unsupported("a rollout's weights total 0")
    return {"rollout": {"bucketBy": _attribute(bucket_by), "variants": entries}}


def _clause(clause: Any, segments: dict[str, dict[str, Any] | str]) -> tuple[dict, set[str]]:
    clause = require_object(clause, "clauses[]")
    if clause.get("contextKind", "user") != "user":
        raise Unsupported("a clause tests a context kind other than user")
    operator = clause.get("op")
    values = require_list(clause.get("values"), "values")
    negate = clause.get("negate") is True
    if operator == "segmentMatch":
        for key in values:
            if not isinstance(key, str) or key not in segments:
                raise Unsupported(f"segment {key!r} is not in the export")
            if isinstance(segments[key], str):
                raise Unsupported(f"segment {key!r}: {segments[key]}")
        return (
            {"operator": "in_segment", "values": list(values), "negate": negate},
            set(values),
        )
    name = OPERATORS.get(operator)
    if name is None:
        raise Unsupported(f"the clause operator {operator!r} cannot be expressed")
    return condition(_attribute(clause.get("attribute")), name, list(values), negate), set()


def _segment(segment: Any) -> dict[str, Any]:
    segment = require_object(segment, "segments[]")
    rules = require_list(segment.get("rules"), "rules")
    if len(rules) > 1:
        raise Unsupported("more than one rule (any of several) cannot be expressed")
    conditions = []
    for rule in rules:
        rule = require_object(rule, "rules[]")
        if rule.get("weight") is not None:
            raise Unsupported("a rule with a percentage cannot be expressed")
        for clause in require_list(rule.get("clauses"), "clauses"):
            built, _ = _clause(clause, {})
            conditions.append(built)
    for field in ("includedContexts", "excludedContexts"):
        if require_list(segment.get(field), field):
            raise Unsupported("it lists contexts of a kind other than user")
    return {
        "name": segment.get("name") or segment.get("key") or "",
        "conditions": conditions,
        "included": [
            v for v in require_list(segment.get("included"), "included") if isinstance(v, str)
        ],
        "excluded": [
            v for v in require_list(segment.get("excluded"), "excluded") if isinstance(v, str)
        ],
    }
