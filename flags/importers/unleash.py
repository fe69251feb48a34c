"""Unleash: its client features API (and delta API) JSON as flags bucketed the Unleash way.

An Unleash feature becomes one flag with `bucketing: unleash` salted with the groupId its
variants hash (the feature name, or the groupId of the strategies whose variants it serves);
where its strategies hash several groupIds, each rollout has its strategy's as its salt.
Each strategy becomes rules, in order; a constraint that Unleash makes true for a context
without the attribute (`NOT_IN`, `inverted`) becomes one rule with the attribute and one
without, since a condition here never matches an absent attribute.
Context fields: Unleash's `userId` is the `targetingKey`; every other field (`sessionId`,
`remoteAddress`, `environment`, `appName`, `currentTime`) and every property is an
attribute of the same name.
"""

from __future__ import annotations

import ipaddress
import math
from typing import Any, cast

from django.core.exceptions import ValidationError

from evaluation.engine import DocumentError
from evaluation.engine.bucketing import RANDOM_ATTRIBUTE
from evaluation.engine.conditions import compile_pattern, number_of_text
from evaluation.engine.dates import timestamp
from evaluation.engine.semver import parse_version
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
from flags.models import Flag

DISABLED = "disabled"  # Unleash's variant of a feature that is off for the context
ENABLED = "on"  # a feature on for the context that has no variant to give it
STRING_OPERATORS = {
    "STR_CONTAINS": ("contains", "icontains"),
    "STR_STARTS_WITH": ("starts_with", "istarts_with"),
    "STR_ENDS_WITH": ("ends_with", "iends_with"),
}
SINGLE_VALUE_OPERATORS = {
    "NUM_EQ": "equals",
    "NUM_GT": "gt",
    "NUM_GTE": "gte",
    "NUM_LT": "lt",
    "NUM_LTE": "lte",
    "DATE_AFTER": "after",
    "DATE_BEFORE": "before",
    "SEMVER_EQ": "semver_eq",
    "SEMVER_GT": "semver_gt",
    "SEMVER_LT": "semver_lt",
    "SEMVER_GTE": "semver_gte",
    "SEMVER_LTE": "semver_lte",
}
# Unleash's `default` stickiness of a variant choice: the first of these the context has.
DEFAULT_VARIANT_STICKINESS = ("targetingKey", "sessionId", "remoteAddress")
# A salt the store holds, the flag's or a rollout's.
MAX_SALT = Flag._meta.get_field("salt").max_length or 100
NEVER: Alternatives = []  # a constraint no context satisfies
ALWAYS: Alternatives = [[]]


def attribute_of(context_name: Any) -> str:
    if not isinstance(context_name, str) or not context_name:
        raise Unsupported("a constraint names no context field")
    return "targetingKey" if context_name == "userId" else context_name


# --- reading the input ------------------------------------------------------------------


# Unleash names a feature with a string and a segment with a number: a list or an object in
# their place names nothing (and cannot key a lookup).
Identity = str | int | float | bool | None
Segments = dict[Identity, dict[str, Any]]


def _is_identity(value: Any) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _identity(value: Any, field_name: str) -> Identity:
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    raise ValidationError({field_name: "must be a string or a number"})


def _features_and_segments(data: Any) -> tuple[list[Any], Segments]:
    if isinstance(data, dict) and "events" in data:  # the delta API
        return _delta_events(data["events"])
    data = export_object(data, "features", "an Unleash export lists its features")
    features_list = require_list(data["features"], "features")
    segments: Segments = {}
    for index, segment in enumerate(require_list(data.get("segments"), "segments")):
        segment = require_object(segment, f"segments[{index}]")
        segments[_identity(segment.get("id"), f"segments[{index}].id")] = segment
    return features_list, segments


def _delta_events(events: Any) -> tuple[list[Any], Segments]:
    """The features and segments the delta API's events leave, applied in order."""
    features: dict[Identity, dict[str, Any]] = {}
    segments: Segments = {}
    for index, event in enumerate(require_list(events, "events")):
        event = require_object(event, f"events[{index}]")
        kind = event.get("type")
        if kind == "hydration":
            features = {
                _identity(f.get("name"), f"features[{position}].name"): f
                for position, f in enumerate(require_list(event.get("features"), "features"))
                if isinstance(f, dict)
            }
            segments = {
                _identity(s.get("id"), f"segments[{position}].id"): s
                for position, s in enumerate(require_list(event.get("segments"), "segments"))
                if isinstance(s, dict)
            }
        elif kind == "feature-updated":
            feature = require_object(event.get("feature"), f"events[{index}].feature")
            features[_identity(feature.get("name"), f"events[{index}].feature.name")] = feature
        elif kind == "feature-removed":
            name = _identity(event.get("featureName"), f"events[{index}].featureName")
            features.pop(name, None)
        elif kind == "segment-updated":
            segment = require_object(event.get("segment"), f"events[{index}].segment")
            segments[_identity(segment.get("id"), f"events[{index}].segment.id")] = segment
        elif kind == "segment-removed":
            segment_id = _identity(event.get("segmentId"), f"events[{index}].segmentId")
            segments.pop(segment_id, None)
    return list(features.values()), segments


def convert_unleash(data: Any) -> Conversion:
    features, segments = _features_and_segments(data)
    conversion = Conversion.empty()
    taken: set[str] = set()
    names: dict[str, dict[str, Any]] = {}
    for index, feature in enumerate(features):
        feature = require_object(feature, f"features[{index}]")
        name = feature.get("name")
        try:
            key = flag_key_of(name, taken)
        except Unsupported as reason:
            conversion.skipped[str(name)] = str(reason)
            continue
        name = cast(str, name)  # flag_key_of takes a non-empty string only
        taken.add(key)
        conversion.keys[name] = key
        names[name] = feature
    # Variant keys first: a dependency on a parent names the parent's variants.
    shapes: dict[str, list[dict[str, Any]] | None] = {}
    for name, feature in names.items():
        try:
            shapes[name] = _variants(feature)
        except Unsupported as reason:
            conversion.skipped[name] = str(reason)
    for name, feature in names.items():
        if name in conversion.skipped:
            continue
        try:
            entry = _flag(name, feature, segments, shapes, conversion.keys, names)
        except Unsupported as reason:
            conversion.skipped[name] = str(reason)
            continue
        conversion.document["flags"][conversion.keys[name]] = entry
    for name in conversion.skipped:
        conversion.keys.pop(name, None)
    return conversion


# --- a feature --------------------------------------------------------------------------


def _variants(feature: dict[str, Any]) -> list[dict[str, Any]] | None:
    """The flag's variants (a json flag), or None for a feature without any (boolean)."""
    seen: dict[str, Any] = {}
    lists = [feature.get("variants")]
    lists += [
        s.get("variants")
        for s in require_list(feature.get("strategies"), "strategies")
        if isinstance(s, dict)
    ]
    for variants in lists:
        for variant in require_list(variants, "variants"):
            variant = require_object(variant, "variants[]")
            name, payload = variant.get("name"), variant.get("payload")
            if not isinstance(name, str) or not name:
                raise Unsupported("a variant has no name")
            if name in (DISABLED, ENABLED):
                raise Unsupported(f"a variant is named {name!r}, which stands for no variant here")
            value = {"name": name, "enabled": True, "feature_enabled": True}
            if isinstance(payload, dict):
                value["payload"] = payload
            if name in seen and seen[name] != value:
                raise Unsupported(f"variant {name!r} has different payloads in different places")
            seen[name] = value
    if not seen:
        return None
    variants = []
    taken: set[str] = {DISABLED, ENABLED}
    for name, value in seen.items():
        try:
            key = flag_key_of(name, taken)
        except Unsupported as reason:
            raise Unsupported(
                f"variant {name!r}: {str(reason).replace('its name', 'the name')}"
            ) from None
        taken.add(key)
        variants.append({"key": key, "value": value})
    # Each value is what Unleash's getVariant answers, these two included.
    enabled = {"name": DISABLED, "enabled": False, "feature_enabled": True}
    disabled = {"name": DISABLED, "enabled": False, "feature_enabled": False}
    return [*variants, {"key": ENABLED, "value": enabled}, {"key": DISABLED, "value": disabled}]


def _flag(
    name: str,
    feature: dict[str, Any],
    segments: Segments,
    shapes: dict[str, list[dict[str, Any]] | None],
    keys: dict[str, str],
    features: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    variants = shapes[name]
    boolean = variants is None
    on, off = ("on", "off") if boolean else (ENABLED, DISABLED)
    enabled = feature.get("enabled")
    if not isinstance(enabled, bool):
        raise Unsupported("its enabled is not true or false")
    feature_variants = require_list(feature.get("variants"), "variants")
    strategies = require_list(feature.get("strategies"), "strategies")
    rules: list[dict[str, Any]] = []
    groups: set[str] = set()  # the groupIds that weighted variant choices hash
    if not strategies:  # Unleash: a feature without strategies is on for everyone
        choice = _Choice(feature_variants, name, _stickiness_of(feature_variants), on, groups)
        default = choice.rules([])
        rules.extend(default[:-1])
        default_serve = default[-1]["serve"]
    else:
        for strategy in strategies:
            strategy = require_object(strategy, "strategies[]")
            rules.extend(_strategy_rules(name, strategy, feature_variants, segments, on, groups))
        default_serve = {"variant": off}
    # The flag's salt is the groupId its variants hash; where strategies hash several, the
    # feature name, and each rollout hashing another groupId has it as its own salt.
    salt = next(iter(groups)) if len(groups) == 1 else name
    longest = max([salt, *groups], key=len)
    if len(longest) > MAX_SALT:
        raise Unsupported(f"its groupId {longest[:40]!r}... is longer than {MAX_SALT} characters")
    for serving in [rule["serve"] for rule in rules] + [default_serve]:
        rollout = serving.get("rollout")
        if rollout is not None and rollout.get("salt") == salt:
            del rollout["salt"]
    for index, rule in enumerate(rules, start=1):
        rule["id"] = str(index)
    prerequisites = _prerequisites(feature, shapes, keys, features)
    return {
        "type": "boolean" if boolean else "json",
        "enabled": enabled,
        "salt": salt,
        "bucketing": "unleash",
        "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}]
        if boolean
        else variants,
        "offVariant": off,
        "prerequisites": prerequisites or [],
        "targets": [],
        "rules": rules if prerequisites is not None else [],
        "defaultServe": default_serve if prerequisites is not None else {"variant": off},
        "metadata": {"name": name, "description": feature.get("description") or ""},
    }


def _prerequisites(
    feature: dict[str, Any],
    shapes: dict[str, list[dict[str, Any]] | None],
    keys: dict[str, str],
    features: dict[str, dict[str, Any]],
) -> list[dict[str, Any]] | None:
    """The prerequisites; None when Unleash would never satisfy them."""
    prerequisites = []
    for dependency in require_list(feature.get("dependencies"), "dependencies"):
        dependency = require_object(dependency, "dependencies[]")
        parent = dependency.get("feature")
        if parent not in keys or parent not in shapes:
            raise Unsupported(f"it depends on {parent!r}, which is not imported")
        if require_list(features[parent].get("dependencies"), "dependencies"):
            # Unleash: a parent that has parents of its own is never satisfied.
            return None
        parent_variants = shapes[parent]
        wanted_on = dependency.get("enabled", True) is not False
        chosen = require_list(dependency.get("variants"), "dependencies[].variants")
        if parent_variants is None:
            accepted = ["on"] if wanted_on else ["off"]
        elif not wanted_on:
            accepted = [DISABLED]
        elif chosen:
            accepted = [v.lower() for v in chosen if isinstance(v, str)]
        else:
            accepted = [v["key"] for v in parent_variants if v["key"] != DISABLED]
        if parent_variants is not None:
            known = {variant["key"] for variant in parent_variants}
            accepted = [key for key in accepted if key in known]
        if not accepted:  # variants the parent does not have: never satisfied
            return None
        prerequisites.append({"flag": keys[parent], "variants": accepted})
    return prerequisites


def _strategy_rules(
    name: str,
    strategy: dict[str, Any],
    feature_variants: list[Any],
    segments: Segments,
    on: str,
    groups: set[str],
) -> list[dict[str, Any]]:
    parameters = strategy.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise Unsupported("a strategy's parameters are not an object")
    parts = [_strategy_test(name, strategy.get("name"), parameters)]
    for constraint in require_list(strategy.get("constraints"), "constraints"):
        parts.append(_constraint(constraint))
    for segment_id in require_list(strategy.get("segments"), "segments"):
        segment = segments.get(segment_id) if _is_identity(segment_id) else None
        if segment is None:  # Unleash: a strategy on a segment it does not know never matches
            return []
        for constraint in require_list(segment.get("constraints"), "segment constraints"):
            parts.append(_constraint(constraint))
    alternatives = all_of(parts)
    strategy_variants = require_list(strategy.get("variants"), "variants")
    if strategy_variants:
        # Unleash: a strategy's own variants hash its groupId, by its stickiness.
        group = str(parameters.get("groupId") or name)
        stickiness = parameters.get("stickiness") or _stickiness_of(strategy_variants)
        choice = _Choice(strategy_variants, group, stickiness, on, groups)
    else:
        choice = _Choice(feature_variants, name, _stickiness_of(feature_variants), on, groups)
    rules = []
    for conditions in alternatives:
        rules.extend(choice.rules(conditions))
    return rules


def _weight(variant: Any) -> int:
    weight = variant.get("weight") if isinstance(variant, dict) else None
    if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
        raise Unsupported(f"a variant's weight is not a non-negative integer: {weight!r}")
    return weight


def _stickiness_of(variants: list[Any]) -> Any:
    """Unleash: a feature's variants are chosen by the first variant's stickiness."""
    first = variants[0] if variants and isinstance(variants[0], dict) else {}
    return first.get("stickiness") or "default"


class _Choice:
    """Unleash's choice of a variant among weighted ones: its groupId and stickiness."""

    def __init__(
        self, variants: list[Any], group: str, stickiness: Any, on: str, groups: set[str]
    ) -> None:
        self.weighted = [(v, _weight(v)) for v in variants]
        self.group = group
        self.stickiness = stickiness if isinstance(stickiness, str) else "default"
        self.on = on
        self.groups = groups

    def rules(self, conditions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The rules serving the choice once `conditions` (the strategy) hold.

        Overrides first, then the weighted choice by the stickiness: `default` reads userId,
        then sessionId, then remoteAddress. A context without the stickiness value, and the
        `random` stickiness, get a variant drawn at random at each evaluation, as in Unleash.
        """
        weighted = self.weighted
        if sum(weight for _, weight in weighted) <= 0:
            return [{"conditions": conditions, "serve": {"variant": self.on}}]
        rules = []
        for variant, _ in weighted:
            for override in require_list(variant.get("overrides"), "overrides"):
                override = require_object(override, "overrides[]")
                values = [str(v) for v in require_list(override.get("values"), "values")]
                if values:
                    attribute = attribute_of(override.get("contextName"))
                    rules.append(
                        {
                            "conditions": [*conditions, condition(attribute, "in", values)],
                            "serve": {"variant": variant["name"].lower()},
                        }
                    )
        served = [(v["name"].lower(), w) for v, w in weighted if w > 0]
        if len(served) == 1:
            rules.append({"conditions": conditions, "serve": {"variant": served[0][0]}})
            return rules
        self.groups.add(self.group)
        entries = [{"variant": key, "weight": weight} for key, weight in weighted_names(weighted)]
        if self.stickiness == "random":
            attributes = []
        elif self.stickiness == "default":
            attributes = list(DEFAULT_VARIANT_STICKINESS)
        else:
            attributes = [attribute_of(self.stickiness)]
        before: list[dict[str, Any]] = []  # the attributes a context lacks to get this far
        for attribute in attributes:
            rules.append(
                {
                    "conditions": [*conditions, *before, present(attribute)],
                    "serve": _rollout(attribute, entries, self.group),
                }
            )
            before.append(absent(attribute))
        # Without a stickiness value Unleash hashes a random string: a random variant.
        random_rollout = _rollout(RANDOM_ATTRIBUTE, entries, self.group)
        rules.append({"conditions": conditions, "serve": random_rollout})
        return rules


def weighted_names(weighted: list[tuple[dict[str, Any], int]]) -> list[tuple[str, int]]:
    return [(variant["name"].lower(), weight) for variant, weight in weighted]


def _rollout(attribute: str, entries: list[dict[str, Any]], group: str) -> dict[str, Any]:
    """A weighted variant choice salted with its groupId (left out where it is the flag's)."""
    return {"rollout": {"bucketBy": attribute, "variants": entries, "salt": group}}


# --- strategies and constraints ---------------------------------------------------------


def _percentage(value: Any) -> float:
    return percentage(value, "a rollout percentage")


def _gradual(group: str, percentage: float, attribute: str) -> Alternatives:
    if percentage <= 0:
        return NEVER
    return [[condition(attribute, "unleash_percentage", [group, percentage])]]


def _strategy_test(name: str, kind: Any, parameters: dict[str, Any]) -> Alternatives:
    group = str(parameters.get("groupId") or name)
    if kind == "default":
        return ALWAYS
    if kind == "userWithId":
        ids = [part.strip() for part in str(parameters.get("userIds") or "").split(",")]
        ids = [part for part in ids if part]
        return [[condition("targetingKey", "in", ids)]] if ids else NEVER
    if kind == "remoteAddress":
        return _remote_address(str(parameters.get("IPs") or ""))
    if kind == "gradualRolloutUserId":
        return _gradual(group, _percentage(parameters.get("percentage")), "targetingKey")
    if kind == "gradualRolloutSessionId":
        return _gradual(group, _percentage(parameters.get("percentage")), "sessionId")
    if kind == "gradualRolloutRandom":
        return _random(group, _percentage(parameters.get("percentage")))
    if kind == "flexibleRollout":
        percentage = _percentage(parameters.get("rollout"))
        stickiness = parameters.get("stickiness") or "default"
        if stickiness == "random":
            return _random(group, percentage)
        if stickiness != "default":
            return _gradual(group, percentage, attribute_of(stickiness))
        if percentage <= 0:
            return NEVER
        user = _gradual(group, percentage, "targetingKey")[0]
        session = [absent("targetingKey"), *_gradual(group, percentage, "sessionId")[0]]
        # Neither: Unleash draws at random.
        lacking = [absent("targetingKey"), absent("sessionId")]
        neither = [[*lacking, *alternative] for alternative in _random(group, percentage)]
        return [user, session, *neither]
    raise Unsupported(f"strategy {kind!r} is not one of Unleash's built-in strategies")


def _random(group: str, percentage: float) -> Alternatives:
    """A rollout drawn at random at each evaluation, as Unleash's `random` stickiness."""
    if percentage <= 0:
        return NEVER
    if percentage >= 100:
        return ALWAYS
    return [[condition(RANDOM_ATTRIBUTE, "unleash_percentage", [group, percentage])]]


def _remote_address(text: str) -> Alternatives:
    networks, others = [], []
    for part in (item.strip() for item in text.split(",")):
        if not part:
            continue
        try:
            ipaddress.ip_network(part, strict=False)
            networks.append(part)
        except ValueError:
            others.append(part)
    alternatives: Alternatives = []
    if networks:
        alternatives.append([condition("remoteAddress", "in_cidr", networks)])
    if others:
        alternatives.append([condition("remoteAddress", "in", others)])
    return alternatives


def _constraint(constraint: Any) -> Alternatives:
    """A constraint as alternatives of conditions (Unleash's truth, absent attribute too)."""
    if not isinstance(constraint, dict):
        raise Unsupported("a constraint is not an object")
    attribute = attribute_of(constraint.get("contextName"))
    operator = constraint.get("operator")
    inverted = constraint.get("inverted") is True
    values = constraint.get("values")
    values = [str(v) for v in values] if isinstance(values, list) else []
    single = constraint.get("value")
    if operator in ("IN", "NOT_IN"):
        holds_when_absent = (operator == "NOT_IN") is not inverted
        negate = holds_when_absent
        if not values:
            return ALWAYS if negate else NEVER
        return _with_absence(
            condition(attribute, "in", values, negate), attribute, holds_when_absent
        )
    if operator in STRING_OPERATORS:
        plain, folded = STRING_OPERATORS[operator]
        name = folded if constraint.get("caseInsensitive") is True else plain
        if not values:
            return ALWAYS if inverted else NEVER
        return _with_absence(condition(attribute, name, values, inverted), attribute, inverted)
    if operator in SINGLE_VALUE_OPERATORS:
        value = single if single is not None else (values[0] if values else None)
        typed = _single_value(operator, value)
        if typed is None:  # Unleash: a value it cannot read makes the constraint false
            return ALWAYS if inverted else NEVER
        name = SINGLE_VALUE_OPERATORS[operator]
        tested = condition(attribute, name, [typed], inverted)
        if operator.startswith("NUM_"):
            # Unleash's context values are strings: its NUM_ operators read them as numbers.
            tested["numericStrings"] = True
        if operator.startswith("SEMVER_") and not inverted:
            # Unleash's versions have no leading "v", which this product's accept.
            return [[tested, condition(attribute, "matches", ["^[0-9]"])]]
        return _with_absence(tested, attribute, inverted)
    if operator == "REGEX":
        pattern = single if isinstance(single, str) else (values[0] if values else None)
        if not isinstance(pattern, str):
            return ALWAYS if inverted else NEVER
        if constraint.get("caseInsensitive") is True:
            pattern = f"(?i){pattern}"
        try:
            compile_pattern(pattern)
        except DocumentError:  # Unleash: a pattern it cannot compile never matches
            return NEVER
        return _with_absence(
            condition(attribute, "matches", [pattern], inverted), attribute, inverted
        )
    if operator == "IN_CIDR":
        networks = []
        for value in values:
            try:
                ipaddress.ip_network(value, strict=False)
                networks.append(value)
            except ValueError:
                continue
        if not networks:
            return ALWAYS if inverted else NEVER
        return _with_absence(
            condition(attribute, "in_cidr", networks, inverted), attribute, inverted
        )
    # Unleash: an operator it does not know makes the constraint false, inverted or not.
    return NEVER


def _with_absence(tested: dict[str, Any], attribute: str, holds_when_absent: bool) -> Alternatives:
    if holds_when_absent:
        return [[tested], [absent(attribute)]]
    return [[tested]]


def _single_value(operator: str, value: Any) -> Any:
    if not isinstance(value, str | int | float) or isinstance(value, bool):
        return None
    if operator.startswith("NUM_"):
        # The constraint's value is read as the context's are; a JSON number as it is.
        try:
            number = number_of_text(value) if isinstance(value, str) else float(value)
        except (OverflowError, UnicodeEncodeError):  # an integer past a double, a surrogate
            return None
        if number is None or not math.isfinite(number):
            return None
        return int(number) if number.is_integer() else number
    if operator.startswith("SEMVER_"):
        return value if isinstance(value, str) and parse_version(value) is not None else None
    return value if timestamp(value) is not None else None
