"""flagd: its flag definition JSON (JSON Logic targeting) as rules, bucketed the flagd way.

flagd's `targeting` returns a variant name, or null for the default variant. It becomes
ordered rules: each `if` branch is its conditions (in disjunctive form: `or` gives one rule
per alternative) followed by what the branch returns; a branch that can return null ends
with a rule serving the default variant, so no later branch answers in its place.
`fractional` becomes a rollout (flagd's own scheme, this product's default); its bucketing
value is `$flagd.flagKey` + targetingKey by default, or the expression it names.
"""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError

from flags.importers.conversion import (
    Alternatives,
    Conversion,
    RolloutEntry,
    Unsupported,
    absent,
    all_of,
    condition,
    flag_key_of,
    require_object,
)

COMPARISONS = {"==": "equals", "===": "equals", "!=": "not_equals", "!==": "not_equals"}
ORDERINGS = {"<": "lt", "<=": "lte", ">": "gt", ">=": "gte"}
FLIPPED = {"lt": "gt", "lte": "gte", "gt": "lt", "gte": "lte"}
SEMVER = {
    "=": "semver_eq",
    "<": "semver_lt",
    "<=": "semver_lte",
    ">": "semver_gt",
    ">=": "semver_gte",
}
MAX_DEPTH = 64  # nesting of targeting past this is refused (the JSON was already parsed)
Rule = dict[str, Any]


class _Flag:
    """What converting one flag needs: its key, variant keys, default, evaluators, salt."""

    def __init__(self, key: str, variants: dict[str, str], default: str, evaluators: dict):
        self.key = key
        self.variants = variants  # flagd variant name -> variant key here
        self.default = default
        self.evaluators = evaluators
        self.salt: str | None = None


def convert_flagd(data: Any) -> Conversion:
    data = require_object(data, "document")
    flags = require_object(data.get("flags"), "flags")
    evaluators = data.get("$evaluators") or {}
    if not isinstance(evaluators, dict):
        raise ValidationError({"$evaluators": "must be a JSON object"})
    conversion = Conversion.empty()
    taken: set[str] = set()
    for name, flag in flags.items():
        try:
            key = flag_key_of(name, taken)
            entry = _convert_flag(key, name, flag, evaluators)
        except Unsupported as reason:
            conversion.skipped[str(name)] = str(reason)
            continue
        except RecursionError:
            conversion.skipped[str(name)] = "its targeting is nested too deep"
            continue
        taken.add(key)
        conversion.keys[name] = key
        conversion.document["flags"][key] = entry
    return conversion


def _variant_table(variants: Any) -> tuple[str, list[dict[str, Any]], dict[str, str]]:
    if not isinstance(variants, dict) or not variants:
        raise Unsupported("it has no variants object")
    values = list(variants.values())
    if all(isinstance(value, bool) for value in values):
        if sorted(values) != [False, True]:
            raise Unsupported("a boolean flag here has exactly one true and one false variant")
        names = {name: "on" if value else "off" for name, value in variants.items()}
        return "boolean", [{"key": "on", "value": True}, {"key": "off", "value": False}], names
    tests = (
        ("string", lambda v: isinstance(v, str)),
        ("number", lambda v: isinstance(v, int | float) and not isinstance(v, bool)),
        ("json", lambda v: isinstance(v, dict)),
    )
    flag_type = next((name for name, test in tests if all(test(v) for v in values)), None)
    if flag_type is None:
        raise Unsupported("its variants' values are not all of one type")
    names = {}
    table: list[dict[str, Any]] = []
    taken: set[str] = set()
    for name, value in variants.items():
        try:
            key = flag_key_of(name, taken)
        except Unsupported as reason:
            raise Unsupported(f"variant {name!r}: {reason}") from None
        taken.add(key)
        names[name] = key
        table.append({"key": key, "value": value})
    return flag_type, table, names


def _convert_flag(key: str, name: str, flag: Any, evaluators: dict) -> dict[str, Any]:
    if not isinstance(flag, dict):
        raise Unsupported("it is not an object")
    flag_type, variants, names = _variant_table(flag.get("variants"))
    default = flag.get("defaultVariant")
    if not isinstance(default, str) or default not in names:
        raise Unsupported(f"its defaultVariant {default!r} is not one of its variants")
    state = flag.get("state")
    if state not in ("ENABLED", "DISABLED"):
        raise Unsupported(f"its state is {state!r}, not ENABLED or DISABLED")
    context = _Flag(name, names, names[default], evaluators)
    targeting = flag.get("targeting")
    rules: list[Rule] = []
    if targeting not in (None, {}):
        rules = _branch(context, targeting, [], 0)
    for index, rule in enumerate(rules, start=1):
        rule["id"] = str(index)
    salt = context.salt if context.salt is not None else name
    metadata = flag.get("metadata")
    if not isinstance(metadata, dict):
        metadata = {}
    return {
        "type": flag_type,
        "enabled": state == "ENABLED",
        "salt": salt,
        "variants": variants,
        "offVariant": names[default],
        "prerequisites": [],
        "targets": [],
        "rules": rules,
        "defaultServe": {"variant": names[default]},
        "metadata": {"name": name, "description": str(metadata.get("description") or "")},
    }


# --- targeting -> rules -------------------------------------------------------------------


def _resolve(flag: _Flag, node: Any) -> Any:
    """A `$ref` to an evaluator, replaced by the evaluator."""
    seen = set()
    while isinstance(node, dict) and set(node) == {"$ref"}:
        name = node["$ref"]
        if not isinstance(name, str) or name not in flag.evaluators or name in seen:
            raise Unsupported(f"$ref {name!r} names no evaluator (or a cycle of them)")
        seen.add(name)
        node = flag.evaluators[name]
    return node


def _operation(node: Any) -> tuple[str, list[Any]]:
    if not isinstance(node, dict) or len(node) != 1:
        raise Unsupported(f"{_short(node)} is not a JSON Logic operation")
    operator, arguments = next(iter(node.items()))
    return operator, arguments if isinstance(arguments, list) else [arguments]


def _branch(flag: _Flag, node: Any, conditions: list[dict], depth: int) -> list[Rule]:
    """The rules answering `node` once `conditions` hold (a variant, null, if, fractional)."""
    if depth > MAX_DEPTH:
        raise Unsupported("its targeting is nested too deep")
    node = _resolve(flag, node)
    if node is None:
        if not conditions:  # the end of the targeting: the default serving answers
            return []
        return [{"conditions": conditions, "serve": {"variant": flag.default}}]
    if isinstance(node, str | bool):
        return [{"conditions": conditions, "serve": {"variant": _variant(flag, node)}}]
    operator, arguments = _operation(node)
    if operator == "fractional":
        return [{"conditions": conditions, "serve": _fractional(flag, arguments)}]
    if operator != "if":
        raise Unsupported(f"targeting returns {operator!r}, not a variant, if or fractional")
    rules: list[Rule] = []
    pairs, rest = arguments[: len(arguments) // 2 * 2], arguments[len(arguments) // 2 * 2 :]
    for test, then in zip(pairs[::2], pairs[1::2], strict=True):
        for alternative in _condition(flag, test, depth + 1):
            rules.extend(_branch(flag, then, [*conditions, *alternative], depth + 1))
    rules.extend(_branch(flag, rest[0] if rest else None, conditions, depth + 1))
    return rules


def _variant(flag: _Flag, name: Any) -> str:
    if isinstance(name, bool):
        name = next((n for n, k in flag.variants.items() if k == ("on" if name else "off")), None)
    if name not in flag.variants:
        raise Unsupported(f"targeting returns {name!r}, which is not one of its variants")
    return flag.variants[name]


def _fractional(flag: _Flag, arguments: list[Any]) -> dict[str, Any]:
    bucket_by, salt, buckets = "targetingKey", flag.key, arguments
    if arguments and not isinstance(arguments[0], list):
        bucket_by, salt = _bucketing_value(flag, arguments[0])
        buckets = arguments[1:]
    if flag.salt is not None and flag.salt != salt:
        raise Unsupported("its fractional rollouts hash different prefixes: one salt per flag")
    flag.salt = salt
    entries: list[RolloutEntry] = []
    for bucket in buckets:
        if not isinstance(bucket, list) or not bucket or not isinstance(bucket[0], str | bool):
            raise Unsupported("a fractional bucket is not [variant, weight]")
        weight = bucket[1] if len(bucket) > 1 else 1
        if isinstance(weight, float) and weight.is_integer():
            weight = int(weight)
        if not isinstance(weight, int) or isinstance(weight, bool) or weight < 0:
            raise Unsupported(f"a fractional weight is not a non-negative integer: {weight!r}")
        entries.append({"variant": _variant(flag, bucket[0]), "weight": weight})
    if sum(entry["weight"] for entry in entries) <= 0:
        raise Unsupported("its fractional weights total 0")
    return {"rollout": {"bucketBy": bucket_by, "variants": entries}}


def _bucketing_value(flag: _Flag, node: Any) -> tuple[str, str]:
    """(attribute, salt) of a bucketing expression: {"cat": [prefix, {"var": X}]}."""
    bare = isinstance(node, dict) and set(node) == {"var"}
    if isinstance(node, dict) and set(node) == {"cat"} and isinstance(node["cat"], list):
        bare = bare or (len(node["cat"]) == 2 and node["cat"][0] == "")
    if bare:
        # flagd hashes the bare value; a flag's salt here is never empty (empty is its key).
        raise Unsupported(
            "its fractional hashes a bare var without a prefix, which a salt cannot express "
            '(use {"cat": [{"var": "$flagd.flagKey"}, {"var": ...}]})'
        )
    if isinstance(node, dict) and set(node) == {"cat"} and isinstance(node["cat"], list):
        parts = node["cat"]
        if len(parts) == 2 and isinstance(parts[1], dict) and set(parts[1]) == {"var"}:
            prefix = parts[0]
            if isinstance(prefix, dict) and prefix == {"var": "$flagd.flagKey"}:
                return _var(parts[1]), flag.key
            if isinstance(prefix, str):
                return _var(parts[1]), prefix
    raise Unsupported(
        f"the bucketing value {_short(node)} is not a var or cat of a prefix and a var"
    )


def _var(node: dict[str, Any]) -> str:
    name = node["var"]
    if isinstance(name, list) and len(name) == 1:
        name = name[0]
    if not isinstance(name, str) or not name or name.startswith("$flagd."):
        raise Unsupported(f"{_short(node)} reads no context attribute")
    return name


def _condition(flag: _Flag, node: Any, depth: int) -> Alternatives:
    """A JSON Logic test in disjunctive form: a list of alternatives of conditions."""
    if depth > MAX_DEPTH:
        raise Unsupported("its targeting is nested too deep")
    node = _resolve(flag, node)
    if node is True:
        return [[]]
    if node is False or node is None:
        return []
    operator, arguments = _operation(node)
    if operator == "and":
        return all_of([_condition(flag, part, depth + 1) for part in arguments])
    if operator == "or":
        return [alt for part in arguments for alt in _condition(flag, part, depth + 1)]
    if operator == "!":
        return _negation(_condition(flag, arguments[0] if arguments else None, depth + 1))
    if operator in COMPARISONS:
        attribute, value = _attribute_and_value(arguments)
        tested = condition(attribute, COMPARISONS[operator], [value])
        # JSON Logic: an absent attribute is not equal to any value.
        return [[tested], [absent(attribute)]] if operator.startswith("!") else [[tested]]
    if operator in ORDERINGS:
        return _ordering(operator, arguments)
    if operator == "in":
        return _in(arguments)
    if operator in ("starts_with", "ends_with"):
        attribute, value = _attribute_and_value(arguments)
        if not isinstance(value, str):
            raise Unsupported(f"{operator} compares strings, not {value!r}")
        return [[condition(attribute, operator, [value])]]
    if operator == "sem_ver":
        if len(arguments) != 3 or not isinstance(arguments[1], str):
            raise Unsupported("sem_ver takes [var, operator, version]")
        name = SEMVER.get(arguments[1])
        if name is None:
            raise Unsupported(
                f"sem_ver {arguments[1]!r} (only =, <, <=, >, >=) cannot be expressed"
            )
        attribute, value = _attribute_and_value([arguments[0], arguments[2]])
        return [[condition(attribute, name, [value])]]
    raise Unsupported(f"the JSON Logic operation {operator!r} cannot be expressed")


def _negation(alternatives: Alternatives) -> Alternatives:
    if alternatives == [[]]:
        return []
    if not alternatives:
        return [[]]
    if len(alternatives) != 1 or len(alternatives[0]) != 1:
        raise Unsupported("! of more than one condition cannot be expressed")
    tested = dict(alternatives[0][0])
    if tested["operator"] in ("exists", "not_exists"):
        tested["operator"] = "exists" if tested["operator"] == "not_exists" else "not_exists"
        return [[tested]]
    tested["negate"] = not tested["negate"]
    return [[tested], [absent(tested["attribute"])]]


def _attribute_and_value(arguments: list[Any]) -> tuple[str, Any]:
    if len(arguments) != 2:
        raise Unsupported("a comparison takes a var and a value")
    left, right = arguments
    if isinstance(left, dict) and set(left) == {"var"} and not isinstance(right, dict | list):
        return _var(left), right
    if isinstance(right, dict) and set(right) == {"var"} and not isinstance(left, dict | list):
        return _var(right), left
    raise Unsupported("a comparison here is between a var and a value")


def _ordering(operator: str, arguments: list[Any]) -> Alternatives:
    name = ORDERINGS[operator]
    if len(arguments) == 3:  # between: {"<": [1, {"var": "x"}, 10]}
        low, middle, high = arguments
        attribute, _ = _attribute_and_value([middle, 0])
        return [[condition(attribute, FLIPPED[name], [low]), condition(attribute, name, [high])]]
    right = arguments[1] if len(arguments) > 1 else None
    attribute, value = _attribute_and_value(arguments)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise Unsupported(f"{operator} compares numbers, not {value!r}")
    if isinstance(right, dict):  # {"<": [5, {"var": "x"}]} is x > 5
        name = FLIPPED[name]
    return [[condition(attribute, name, [value])]]


def _in(arguments: list[Any]) -> Alternatives:
    if len(arguments) != 2:
        raise Unsupported("in takes two arguments")
    needle, haystack = arguments
    if isinstance(needle, dict) and set(needle) == {"var"} and isinstance(haystack, list):
        return [[condition(_var(needle), "in", haystack)]] if haystack else []
    if isinstance(needle, str) and isinstance(haystack, dict) and set(haystack) == {"var"}:
        return [[condition(_var(haystack), "contains", [needle])]]
    raise Unsupported("in tests a var against a list, or a string inside a var")


def _short(node: Any) -> str:
    text = repr(node)
    return text if len(text) <= 60 else text[:59] + "…"
