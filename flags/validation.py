"""The one place that decides whether flag data is valid, whatever door it came through.

Model `clean()` methods (so admin forms) and the services call these functions; they raise
Django's `ValidationError` keyed by the offending field. Condition and serving rules are the
evaluation engine's own checks, so what is saved is exactly what the engine can compile.
"""

from __future__ import annotations

import json
import math
from typing import TYPE_CHECKING, Any

from django.core.exceptions import ValidationError
from django.core.validators import RegexValidator

from evaluation.batches import text_problem as name_problem
from evaluation.engine import BOOLEAN_VARIANTS, DocumentError, check_condition, check_serving

if TYPE_CHECKING:
    from django.utils.datastructures import MultiValueDict

    from flags.models import (
        Experiment,
        Flag,
        FlagConfig,
        Metric,
        Prerequisite,
        Project,
        Rule,
        Segment,
        Target,
    )

# The keys of projects, environments, flags, variants, segments, tags and rules.
KEY_PATTERN = r"[a-z0-9][a-z0-9_.-]*"
KEY_MESSAGE = "Use lowercase letters, digits, '-', '_' or '.', starting with a letter or digit."
KEY_VALIDATOR = RegexValidator(rf"^{KEY_PATTERN}\Z", KEY_MESSAGE)
MAX_TARGET_KEYS = 10_000
MAX_CONDITIONS = 100


def check_variant_value(flag_type: str, value: Any) -> None:
    expected = {
        "boolean": lambda v: isinstance(v, bool),
        "string": lambda v: isinstance(v, str),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "json": lambda v: isinstance(v, dict),
    }[flag_type]
    if not expected(value):
        article = "an" if flag_type == "json" else "a"
        kind = "JSON object" if flag_type == "json" else flag_type
        raise ValidationError({"value": f"must be {article} {kind} for a {flag_type} flag"})


def check_variants(flag_type: str, variants: list[dict]) -> None:
    """A flag's whole list of variants: typed values, unique keys, booleans fixed."""
    if not variants:
        raise ValidationError({"variants": "a flag needs at least one variant"})
    keys = [variant.get("key") for variant in variants]
    if len(set(keys)) != len(keys):
        raise ValidationError({"variants": "variant keys must be unique"})
    for variant in variants:
        try:
            check_variant_value(flag_type, variant.get("value"))
        except ValidationError as error:
            raise ValidationError(
                {"variants": f"variant {variant.get('key')!r}: {error.messages[0]}"}
            ) from error
    if flag_type == "boolean" and {v["key"]: v["value"] for v in variants} != BOOLEAN_VARIANTS:
        raise ValidationError({"variants": "a boolean flag has exactly on=true and off=false"})


def variant_keys(flag: Flag) -> list[str]:
    return [variant.key for variant in flag.variants.all()]


def serving_document(
    serve_variant: str, rollout: list | None, bucket_by: str | None, salt: str = ""
) -> dict:
    """The document form of a serving; the stored rollout is already the document's list,
    with its own salt when it has one.

    Fields holding both a variant and a rollout (or neither) give a serving the engine's
    `check_serving` refuses: whether a serving is one or the other is decided there only.
    """
    serving: dict = {"variant": serve_variant} if serve_variant or not rollout else {}
    if rollout:
        serving["rollout"] = {"bucketBy": bucket_by or "targetingKey", "variants": rollout}
        if salt:
            serving["rollout"]["salt"] = salt
    return serving


def _check_serving_of(obj: FlagConfig | Rule) -> None:
    keys = variant_keys(obj.flag)
    try:
        check_serving(obj.serving(), keys)
    except DocumentError as error:
        if error.field == "rollout.salt":
            raise ValidationError({"salt": error.message}) from error
        field = "rollout" if obj.rollout else "serve_variant"
        raise ValidationError({field: error.message}) from error


def _check_same_project(obj: Any) -> None:
    if obj.environment.project_id != obj.flag.project_id:
        raise ValidationError({"environment": "belongs to another project than the flag"})


def check_config(config: FlagConfig) -> None:
    _check_same_project(config)
    if config.off_variant not in variant_keys(config.flag):
        raise ValidationError({"off_variant": f"unknown variant {config.off_variant!r}"})
    _check_serving_of(config)


def check_conditions(conditions: Any, segment_keys: set[str] | None) -> None:
    """Each condition as the engine would compile it; `segment_keys=None` forbids segments."""
    if not isinstance(conditions, list):
        raise ValidationError({"conditions": "must be a list of conditions"})
    if len(conditions) > MAX_CONDITIONS:
        raise ValidationError({"conditions": f"at most {MAX_CONDITIONS} conditions"})
    for index, condition in enumerate(conditions, start=1):
        if not isinstance(condition, dict):
            raise ValidationError({"conditions": f"condition {index}: must be an object"})
        if segment_keys is None and condition.get("operator") == "in_segment":
            raise ValidationError(
                {"conditions": f"condition {index}: a segment cannot refer to another segment"}
            )
        try:
            check_condition(condition, segment_keys or set())
        except DocumentError as error:
            raise ValidationError(
                {"conditions": f"condition {index}: {error.field}: {error.message}"}
            ) from error


def check_rule(rule: Rule) -> None:
    _check_same_project(rule)
    check_conditions(rule.conditions, _segment_keys(rule.flag.project))
    _check_serving_of(rule)


def _segment_keys(project: Project) -> set[str]:
    """The project's segment keys. Where its segments are prefetched (a configuration's or
    an import's rules are checked, each against the same list), the set is made once per
    list: an import of 10,000 flags checks 90,000 rules against it."""
    segments = project.segments.all()
    prefetched = project.__dict__.get("_prefetched_objects_cache", {}).get("segments")
    if prefetched is None:
        return {segment.key for segment in segments}
    made = project.__dict__.get("_segment_key_set")
    if made is None or made[0] is not prefetched:
        made = (prefetched, {segment.key for segment in prefetched})
        project.__dict__["_segment_key_set"] = made
    return made[1]


def check_keys_list(field: str, values: Any) -> None:
    if not isinstance(values, list) or not all(isinstance(v, str) and v for v in values):
        raise ValidationError({field: "must be a list of non-empty strings"})
    if len(values) > MAX_TARGET_KEYS:
        raise ValidationError({field: f"at most {MAX_TARGET_KEYS} keys"})


def check_target(target: Target) -> None:
    _check_same_project(target)
    if target.variant not in variant_keys(target.flag):
        raise ValidationError({"variant": f"unknown variant {target.variant!r}"})
    check_keys_list("values", target.values)


def check_prerequisite(prerequisite: Prerequisite) -> None:
    _check_same_project(prerequisite)
    required = prerequisite.required_flag
    if required.project_id != prerequisite.flag.project_id:
        raise ValidationError({"required_flag": "belongs to another project"})
    if required.pk == prerequisite.flag.pk:
        raise ValidationError({"required_flag": "a flag cannot be its own prerequisite"})
    keys = variant_keys(required)
    if not isinstance(prerequisite.variants, list) or not prerequisite.variants:
        raise ValidationError({"variants": "list at least one variant of the required flag"})
    unknown = [key for key in prerequisite.variants if key not in keys]
    if unknown:
        raise ValidationError({"variants": f"{required.key} has no variant {unknown[0]!r}"})
    if _reaches(required.pk, prerequisite.flag.pk, prerequisite.environment_id):
        raise ValidationError(
            {"required_flag": f"{required.key} already depends on {prerequisite.flag.key}: a cycle"}
        )


def _reaches(start_flag_id: int, target_flag_id: int, environment_id: int) -> bool:
    """Whether `start` depends, directly or not, on `target` in the environment."""
    from flags.models import Prerequisite

    edges: dict[int, list[int]] = {}
    rows = Prerequisite.objects.filter(environment_id=environment_id)
    for flag_id, required_id in rows.values_list("flag_id", "required_flag_id"):
        edges.setdefault(flag_id, []).append(required_id)
    seen, stack = set(), [start_flag_id]
    while stack:
        current = stack.pop()
        if current == target_flag_id:
            return True
        if current not in seen:
            seen.add(current)
            stack.extend(edges.get(current, ()))
    return False


def check_segment(segment: Segment) -> None:
    check_conditions(segment.conditions, None)
    check_keys_list("included", segment.included)
    check_keys_list("excluded", segment.excluded)


MAX_WINDOW_DAYS = 90


def check_metric(metric: Metric) -> None:
    """A metric's event name as the events endpoint takes it; an aggregation for numeric
    metrics only; a window of 1 to MAX_WINDOW_DAYS days."""
    problem = "is empty" if metric.event == "" else name_problem("event", metric.event, 100)
    if problem:
        raise ValidationError({"event": f"an event name of 1 to 100 characters ({problem})"})
    if metric.kind == "numeric" and metric.aggregation not in ("sum", "mean"):
        raise ValidationError({"aggregation": "a numeric metric is a sum or a mean"})
    if metric.kind == "conversion" and metric.aggregation:
        raise ValidationError({"aggregation": "a conversion metric has no aggregation"})
    window = metric.window_days
    if (
        not isinstance(window, int)
        or isinstance(window, bool)
        or not 1 <= window <= MAX_WINDOW_DAYS
    ):
        raise ValidationError(
            {"window_days": f"a whole number of days from 1 to {MAX_WINDOW_DAYS}"}
        )


def check_experiment(experiment: Experiment) -> None:
    """The flag and environment belong to the experiment's project; the control is a variant."""
    project_id = experiment.project_id
    if experiment.flag_id is not None and experiment.flag.project_id != project_id:
        raise ValidationError({"flag": "belongs to another project than the experiment"})
    if experiment.environment_id is not None and experiment.environment.project_id != project_id:
        raise ValidationError({"environment": "belongs to another project than the experiment"})
    if experiment.flag_id is not None and experiment.control_variant not in variant_keys(
        experiment.flag
    ):
        known = ", ".join(variant_keys(experiment.flag))
        raise ValidationError(
            {"control_variant": f"unknown variant {experiment.control_variant!r} (one of {known})"}
        )


# --- Text from outside: what the database and C code can hold ------------------------------
#
# PostgreSQL refuses NUL in text and jsonb, psycopg (and every C library that wants UTF-8)
# refuses lone surrogates, and Python's JSON encoder and decoder recurse once per level.
# Every door checks what it received with these functions before anything reaches a
# service, so such input is a 400 / a form error / exit 2 naming the field, never a 500.

MAX_JSON_DEPTH = 64
DEPTH_MESSAGE = f"nested more than {MAX_JSON_DEPTH} levels deep"


def text_problem(text: str) -> str | None:
    """Why `text` cannot be stored (a NUL character, a lone surrogate), or None."""
    if "\x00" in text:
        return "contains a NUL character (\\u0000), which cannot be stored"
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        point = ord(text[error.start])
        return f"contains a lone surrogate (\\u{point:04x}), which is not valid Unicode"
    return None


def _path(root: str, steps: tuple | None) -> str:
    """The place `steps` (a linked (parent, key) chain, innermost first) names under root."""
    keys = []
    while steps is not None:
        steps, key = steps
        keys.append(key)
    path = root
    for key in reversed(keys):
        path = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else str(key)
    return path


def _suspect(text: str) -> bool:
    # Joined strings keep each one's lone surrogates lone, so one pass over them all tells.
    return text_problem(text) is not None


def _scalar_problem(item: Any) -> str | None:
    if type(item) is str:
        return text_problem(item)
    if type(item) is float and not math.isfinite(item):
        return "a number too large to store"
    return None


def find_text_problem(value: Any, root: str = "") -> tuple[str, str] | None:
    """Where and why `value` holds text the store cannot take (or nests past the limit).

    Walks dicts (their keys too), lists and tuples without recursion. The place is `root`,
    then `.key` and `[index]` steps, e.g. `rules[0].conditions[1]`. The strings of each
    container are looked at joined, in one pass in C, and a place is only spelled out for
    a problem: checking a clean body costs about what parsing it did.
    """
    if not isinstance(value, dict | list | tuple):
        problem = _scalar_problem(value)
        return (root, problem) if problem else None
    stack: list[tuple[Any, int, tuple | None]] = [(value, 0, None)]
    while stack:
        item, depth, steps = stack.pop()
        if depth >= MAX_JSON_DEPTH:
            path = _path(root, steps)
            return (path if len(path) <= 80 else path[:80] + "…"), DEPTH_MESSAGE
        if isinstance(item, dict):
            if _suspect("".join(key for key in item if type(key) is str)):
                for key in item:
                    if type(key) is str and (problem := text_problem(key)):
                        return _path(root, steps), f"a key {problem}"
            entries: Any = item.items()
        else:
            entries = enumerate(item)
        texts, containers, numbers = [], [], False
        for key, child in entries:
            kind = type(child)
            if kind is str:
                texts.append(child)
            elif kind is dict or kind is list or isinstance(child, dict | list | tuple):
                containers.append((key, child))
            elif kind is float:
                numbers = True
        if numbers or _suspect("".join(texts)):
            for key, child in item.items() if isinstance(item, dict) else enumerate(item):
                if problem := _scalar_problem(child):
                    return _path(root, (steps, key)), problem
        stack.extend((child, depth + 1, (steps, key)) for key, child in reversed(containers))
    return None


def check_text(value: Any, field: str = "") -> None:
    """`find_text_problem` as a ValidationError naming the place (`body` for the root)."""
    found = find_text_problem(value, field)
    if found is not None:
        path, problem = found
        raise ValidationError({path if path[:1] not in ("", "[") else f"body{path}": problem})


def check_fields(data: MultiValueDict) -> None:
    """`check_text` on a query string or a form body, each field named as sent."""
    for name, values in data.lists():
        check_text(name, "query")
        check_text(values[0] if len(values) == 1 else values, name)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def load_json(text: str, field: str) -> Any:
    """Parse JSON typed by a person or sent by a client, then `check_text` it.

    Bad JSON (code "invalid"), nesting past MAX_JSON_DEPTH, which would otherwise exhaust
    the recursion limit, and text the store cannot hold (code "unstorable") are all a
    ValidationError on `field`.
    """
    try:
        value = json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ValidationError({field: ValidationError(DEPTH_MESSAGE, code="unstorable")}) from None
    except ValueError as error:
        message = f"not valid JSON: {error}"
        raise ValidationError({field: ValidationError(message, code="invalid")}) from None
    found = find_text_problem(value, field)
    if found is not None:
        path, problem = found
        raise ValidationError({path: ValidationError(problem, code="unstorable")})
    return value
