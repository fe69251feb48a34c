"""Flagsmith: an environment document as flags bucketed the Flagsmith way.

A Flagsmith flag answers an `enabled` and a `value`; here each feature is a `json` flag whose
variants' values are exactly that answer (`{"enabled": true, "value": "blue"}`). Segment
overrides become rules in their priority order (a segment's rules in disjunctive form);
multivariate options become a rollout with `bucketing: flagsmith`, salted with the feature
state's id, bucketed by the `identityKey` attribute: the identity's key as Flagsmith hashes it
(`{environment key}_{identifier}` for identities evaluated locally), which PERCENTAGE_SPLIT
conditions hash with their segment's id. Traits are attributes of the same name; the
identifier is the `targetingKey`, so identity overrides become targets.
"""

from __future__ import annotations

from typing import Any, cast

from django.core.exceptions import ValidationError

from flags.importers.conversion import (
    Alternatives,
    Conversion,
    Unsupported,
    absent,
    all_of,
    condition,
    export_object,
    flag_key_of,
    percentage,
    present,
    require_list,
    require_object,
)
from flags.validation import MAX_TARGET_KEYS

# Percentages are kept to the thousandth: a weight is an allocation times SCALE.
SCALE = 1000
IDENTITY_KEY = "identityKey"
OPERATORS = {
    "EQUAL": ("equals", False),
    "NOT_EQUAL": ("equals", True),
    "CONTAINS": ("contains", False),
    "NOT_CONTAINS": ("contains", True),
    "REGEX": ("matches", False),
    "GREATER_THAN": ("gt", False),
    "GREATER_THAN_INCLUSIVE": ("gte", False),
    "LESS_THAN": ("lt", False),
    "LESS_THAN_INCLUSIVE": ("lte", False),
}
NUMERIC = {"gt", "gte", "lt", "lte"}


def convert_flagsmith(data: Any) -> Conversion:
    data = export_object(data, "feature_states", "a Flagsmith environment document lists them")
    states = require_list(data.get("feature_states"), "feature_states")
    project = data.get("project") or {}
    segments = require_list(
        project.get("segments") if isinstance(project, dict) else None, "project.segments"
    )
    overrides = _identity_overrides(data.get("identity_overrides"))
    conversion = Conversion.empty()
    taken: set[str] = set()
    for index, state in enumerate(states):
        state = require_object(state, f"feature_states[{index}]")
        feature = state.get("feature")
        if not isinstance(feature, dict):
            feature = {}
        name = feature.get("name")
        try:
            key = flag_key_of(name, taken)
            name = cast(str, name)  # flag_key_of takes a non-empty string only
            entry = _flag(name, feature, state, segments)
            entry["targets"] = _targets(entry["variants"], overrides.get(feature.get("id"), []))
        except Unsupported as reason:
            conversion.skipped[str(name)] = str(reason)
            continue
        taken.add(key)
        conversion.keys[name] = key
        conversion.document["flags"][key] = entry
    return conversion


# An identity's override of one feature: (identifier, its feature state).
Override = tuple[str, dict[str, Any]]


def _identity_overrides(identities: Any) -> dict[Any, list[Override]]:
    """The identity overrides of each feature id, in the document's order."""
    by_feature: dict[Any, list[Override]] = {}
    for index, identity in enumerate(require_list(identities, "identity_overrides")):
        field = f"identity_overrides[{index}]"
        identity = require_object(identity, field)
        identifier = identity.get("identifier")
        if not isinstance(identifier, str) or not identifier:
            raise ValidationError({f"{field}.identifier": "must be a non-empty string"})
        states = require_list(identity.get("identity_features"), f"{field}.identity_features")
        for position, state in enumerate(states):
            state = require_object(state, f"{field}.identity_features[{position}]")
            feature_id = _object(state.get("feature")).get("id")
            if isinstance(feature_id, int | str) and not isinstance(feature_id, bool):
                by_feature.setdefault(feature_id, []).append((identifier, state))
    return by_feature


def _targets(variants: list[dict[str, Any]], overrides: list[Override]) -> list[dict[str, Any]]:
    """Identity overrides as targets: each identifier gets the variant of its answer (one
    made for an answer no variant gives); the first override of an identifier wins."""
    keys: dict[str, list[str]] = {}
    seen: set[str] = set()
    for identifier, state in overrides:
        if require_list(state.get("multivariate_feature_state_values"), "mv values"):
            raise Unsupported(
                "an identity override with its own multivariate values cannot be expressed"
            )
        answer = _answer(state)
        key = next((v["key"] for v in variants if v["value"] == answer), None)
        if key is None:
            key = f"identity-{sum(1 for v in variants if v['key'].startswith('identity-'))}"
            variants.append({"key": key, "value": answer})
        if identifier not in seen:
            seen.add(identifier)
            keys.setdefault(key, []).append(identifier)
    if any(len(identifiers) > MAX_TARGET_KEYS for identifiers in keys.values()):
        raise Unsupported(f"more than {MAX_TARGET_KEYS} identities override it with one answer")
    return [{"variant": key, "values": identifiers} for key, identifiers in keys.items()]


def _answer(state: dict[str, Any], value: Any = None) -> dict[str, Any]:
    enabled = state.get("enabled")
    if not isinstance(enabled, bool):
        raise Unsupported("a feature state's enabled is not true or false")
    return {
        "enabled": enabled,
        "value": state.get("feature_state_value") if value is None else value,
    }


def _object(value: Any) -> dict[str, Any]:
    """A JSON object, or an empty one in place of anything else (a list, a number)."""
    return value if isinstance(value, dict) else {}


def _flag(name: str, feature: dict[str, Any], state: dict[str, Any], segments: list[Any]) -> dict:
    variants = [{"key": "control", "value": _answer(state)}]
    default = _multivariate(state, variants, "control")
    rules = []
    overrides = []
    for segment in segments:
        if not isinstance(segment, dict):
            continue
        for override in require_list(segment.get("feature_states"), "segment feature_states"):
            if not isinstance(override, dict) or _object(override.get("feature")).get(
                "id"
            ) != feature.get("id"):
                continue
            priority = _object(override.get("feature_segment")).get("priority")
            overrides.append(
                (priority if isinstance(priority, int) else 1 << 30, segment, override)
            )
    for position, (_, segment, override) in enumerate(sorted(overrides, key=lambda o: o[0])):
        if require_list(override.get("multivariate_feature_state_values"), "mv values"):
            raise Unsupported(
                "a segment override with its own multivariate values cannot be expressed"
            )
        key = f"segment-{position}"
        variants.append({"key": key, "value": _answer(override)})
        for alternative in _segment(segment):
            rules.append({"conditions": alternative, "serve": {"variant": key}})
    for index, rule in enumerate(rules, start=1):
        rule["id"] = str(index)
    salt = state.get("django_id") or state.get("featurestate_uuid")
    return {
        "type": "json",
        "enabled": True,  # Flagsmith's enabled is part of each answer
        "salt": str(salt) if salt is not None else name,
        "bucketing": "flagsmith",
        "variants": variants,
        "offVariant": "control",
        "prerequisites": [],
        "targets": [],
        "rules": rules,
        "defaultServe": default,
        "metadata": {"name": name, "description": str(feature.get("description") or "")},
    }


def _multivariate(state: dict[str, Any], variants: list[dict[str, Any]], control: str) -> dict:
    values = require_list(state.get("multivariate_feature_state_values"), "multivariate values")
    if not values:
        return {"variant": control}
    if state.get("django_id") is None and state.get("featurestate_uuid") is None:
        raise Unsupported("its feature state has no id, which its multivariate split hashes")
    entries, allocated = [], 0
    ordered = sorted(
        (v for v in values if isinstance(v, dict)),
        key=lambda v: (v.get("id") is None, v.get("id") or 0, str(v.get("mv_fs_value_uuid"))),
    )
    for position, value in enumerate(ordered):
        option = value.get("multivariate_feature_option") or {}
        allocation = value.get("percentage_allocation")
        if (
            not isinstance(allocation, int | float)
            or isinstance(allocation, bool)
            or allocation < 0
        ):
            raise Unsupported(f"a percentage allocation is not a number: {allocation!r}")
        weight = round(allocation * SCALE)
        key = f"option-{position}"
        variants.append({"key": key, "value": _answer(state, option.get("value"))})
        entries.append({"variant": key, "weight": weight})
        allocated += weight
    if allocated > 100 * SCALE:
        raise Unsupported("its multivariate allocations add up to more than 100%")
    entries.append({"variant": control, "weight": 100 * SCALE - allocated})
    return {"rollout": {"bucketBy": IDENTITY_KEY, "variants": entries}}


def _segment(segment: dict[str, Any]) -> Alternatives:
    segment_id = segment.get("id")
    rules = require_list(segment.get("rules"), "segment rules")
    parts = [_rule(rule, segment_id) for rule in rules]
    return all_of(parts) if parts else []


def _rule(rule: Any, segment_id: Any) -> Alternatives:
    rule = require_object(rule, "rules[]")
    kind = rule.get("type")
    conditions = require_list(rule.get("conditions"), "conditions")
    parts = [_condition(c, segment_id) for c in conditions]
    parts += [_rule(r, segment_id) for r in require_list(rule.get("rules"), "rules")]
    if kind == "ALL":
        return all_of(parts)
    if kind == "ANY":
        return [alternative for part in parts for alternative in part]
    if kind == "NONE":
        negated = []
        for part in parts:
            if len(part) != 1 or len(part[0]) != 1:
                raise Unsupported("a NONE rule of compound conditions cannot be expressed")
            tested = dict(part[0][0])
            if tested["operator"] in ("exists", "not_exists"):
                tested["operator"] = (
                    "exists" if tested["operator"] == "not_exists" else "not_exists"
                )
                negated.append([[tested]])
            else:
                tested["negate"] = not tested["negate"]
                negated.append([[tested], [absent(tested["attribute"])]])
        return all_of(negated)
    raise Unsupported(f"a segment rule of type {kind!r}")


def _percentage_split(segment_id: Any, trait: Any, value: Any) -> Alternatives:
    """Flagsmith's PERCENTAGE_SPLIT: the hashed percentage of the segment id and the
    identity key (or the trait the condition names, when the context has it) at most the
    condition's value."""
    if not isinstance(segment_id, int | str) or isinstance(segment_id, bool) or segment_id == "":
        raise Unsupported("a PERCENTAGE_SPLIT condition's segment has no id, which it hashes")
    values = [str(segment_id), percentage(value, "a PERCENTAGE_SPLIT's value")]
    if not isinstance(trait, str) or not trait:
        return [[condition(IDENTITY_KEY, "flagsmith_percentage", values)]]
    return [
        [condition(trait, "flagsmith_percentage", values)],
        [absent(trait), condition(IDENTITY_KEY, "flagsmith_percentage", values)],
    ]


def _condition(item: Any, segment_id: Any) -> Alternatives:
    item = require_object(item, "conditions[]")
    operator, trait, value = item.get("operator"), item.get("property_"), item.get("value")
    if operator == "PERCENTAGE_SPLIT":
        return _percentage_split(segment_id, trait, value)
    if not isinstance(trait, str) or not trait:
        raise Unsupported(f"a {operator} condition names no trait")
    if operator == "IS_SET":
        return [[present(trait)]]
    if operator == "IS_NOT_SET":
        return [[absent(trait)]]
    if operator == "IN":
        values = [part.strip() for part in str(value or "").split(",") if part.strip()]
        return [[condition(trait, "in", values)]] if values else []
    spec = OPERATORS.get(operator)
    if spec is None:
        raise Unsupported(f"the segment operator {operator!r} cannot be expressed")
    name, negate = spec
    if name in NUMERIC:
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise Unsupported(f"{operator} compares numbers, not {value!r}") from None
        typed: Any = int(number) if number.is_integer() else number
    else:
        typed = str(value)
    tested = condition(trait, name, [typed], negate)
    return [[tested], [absent(trait)]] if negate else [[tested]]
