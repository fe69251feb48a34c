"""What a flag serves in one environment, in words: a short form for lists, a sentence for
the flag's page.

Pure functions over a configuration and its environment's rules, targets and prerequisites
(rows already read: nothing here queries), so the flag list can describe fifty flags from
one prefetch.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any, Protocol

from django.utils.html import conditional_escape, format_html
from django.utils.safestring import SafeString, mark_safe

DEFAULT_BUCKET_BY = "targetingKey"


class ServingRow(Protocol):
    serve_variant: str
    rollout: Any
    bucket_by: str


class ConfigRow(ServingRow, Protocol):
    enabled: bool
    off_variant: str


def percent_text(weight: int, total: int) -> str:
    """A share as users get it: "25", "33.333", "<0.001", ">99.999" (no % sign)."""
    percent = 100 * weight / total if total > 0 else 0
    if 0 < percent < 0.001:
        return "<0.001"
    if 99.999 < percent < 100:
        return ">99.999"
    return f"{percent:.3f}".rstrip("0").rstrip(".")


def _weight(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def shares(rollout: object) -> list[tuple[str, str]]:
    """(variant, percent text) of a rollout's weights; [] for no or an unusable rollout."""
    if not isinstance(rollout, list) or not rollout:
        return []
    weights = [
        (str(entry.get("variant", "")), _weight(entry.get("weight")))
        for entry in rollout
        if isinstance(entry, dict)
    ]
    total = sum(weight for _, weight in weights)
    if total <= 0:
        return []
    return [(variant, percent_text(weight, total)) for variant, weight in weights]


def serving_text(row: ServingRow) -> str:
    """What a serving gives: "on", or "30% on / 70% off" (bucketed "by plan" if not by key)."""
    split = shares(row.rollout)
    if not split:
        return row.serve_variant or "nothing"
    text = " / ".join(f"{percent}% {variant}" for variant, percent in split)
    if row.bucket_by and row.bucket_by != DEFAULT_BUCKET_BY:
        text += f" by {row.bucket_by}"
    return text


def _short_serving(row: ServingRow) -> str:
    split = shares(row.rollout)
    if split:
        on = [percent for variant, percent in split if variant == "on"]
        if on:
            return f"{on[0]}% on"
        shown = " / ".join(f"{percent}% {variant}" for variant, percent in split[:2])
        return shown + (" / …" if len(split) > 2 else "")
    if row.serve_variant == "on":
        return "On"
    return f"Serves {row.serve_variant}" if row.serve_variant else "Serves nothing"


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}" if number == 1 else f"{number} {noun}s"


def _key_count(targets: Iterable[Any]) -> int:
    return sum(len(target.values) for target in targets if isinstance(target.values, list))


def short(
    config: ConfigRow,
    rules: Sequence[Any] = (),
    targets: Sequence[Any] = (),
    prerequisites: Sequence[Any] = (),
) -> str:
    """The list's form: "Off", "On", "30% on", "On · 2 rules", "Serves blue · 1 target"."""
    if not config.enabled:
        return "Off"
    parts = [_short_serving(config)]
    keys = _key_count(targets)
    if rules:
        parts.append(_count(len(rules), "rule"))
    if keys:
        parts.append(_count(keys, "target"))
    if prerequisites:
        parts.append(_count(len(prerequisites), "prerequisite"))
    return " · ".join(parts)


def _in_order(rules: Iterable[Any]) -> list[Any]:
    return sorted(rules, key=lambda rule: (rule.position or 0, rule.pk or 0))


def _sentence(
    config: ConfigRow,
    rules: Sequence[Any],
    targets: Sequence[Any],
    prerequisites: Sequence[Any],
    text: Callable[[str], str],
    name: Callable[[str], str],
) -> str:
    """The sentence with `text` applied to plain words and `name` to a rule's name."""
    if not config.enabled:
        return text(f"Off → serves {config.off_variant}")
    parts = []
    for prerequisite in prerequisites:
        required = getattr(prerequisite.required_flag, "key", "?")
        variants = " or ".join(str(v) for v in prerequisite.variants or []) or "nothing"
        parts.append(text(f"only if {required} serves {variants} (otherwise {config.off_variant})"))
    for target in targets:
        keys = len(target.values) if isinstance(target.values, list) else 0
        parts.append(text(f"{_count(keys, 'targeted key')} → {target.variant}"))
    for index, rule in enumerate(_in_order(rules), start=1):
        label = text("rule ") + name(rule.name) if rule.name else text(f"rule {index}")
        parts.append(label + text(f" → {serving_text(rule)}"))
    if not parts:
        return text(f"On → serves {serving_text(config)}")
    parts.append(text(f"everyone else: {serving_text(config)}"))
    separator = text(" · ")
    return text("On") + separator + separator.join(parts)


def sentence(
    config: ConfigRow,
    rules: Sequence[Any] = (),
    targets: Sequence[Any] = (),
    prerequisites: Sequence[Any] = (),
) -> str:
    """The page's form, in plain text: "On · rule “Pro in US” → on · everyone else: 30% on /
    70% off"; "Off → serves off"."""
    return _sentence(config, rules, targets, prerequisites, str, lambda value: f"“{value}”")


def sentence_html(
    config: ConfigRow,
    rules: Sequence[Any] = (),
    targets: Sequence[Any] = (),
    prerequisites: Sequence[Any] = (),
) -> SafeString:
    """The sentence as HTML, the rules' names in <em>: every part escaped."""

    def text(value: str) -> str:
        return str(conditional_escape(value))

    def name(value: str) -> str:
        return str(format_html("<em>{}</em>", value))

    return mark_safe(_sentence(config, rules, targets, prerequisites, text, name))  # noqa: S308
