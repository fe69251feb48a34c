"""What a change does to the answers protected environments give: the approval gate's evidence.

A change to a flag's own fields (its variants' values, archived, salt, client-side
availability) or to a segment a rule uses changes what every environment serves, though it
is not a write to any environment's configuration. `measured` reads what each protected
environment serves of the changed flags and segments before and after the write, so the
services can hold such a change to the same gate as a direct write to those environments.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from evaluation.documents import flag_state, segment_entry
from flags.history import state_diff
from flags.models import Environment, Flag, Project, Rule, Segment

# Shown to people, never evaluated: a change to these alone serves nothing new.
_FLAG_METADATA = ("metadata",)
_RULE_METADATA = ("id", "name")


def served_flag(entry: dict | None) -> dict | None:
    """The parts of a flag's document entry that decide its answers."""
    if entry is None:
        return None
    served = {key: value for key, value in entry.items() if key not in _FLAG_METADATA}
    served["rules"] = [
        {key: value for key, value in rule.items() if key not in _RULE_METADATA}
        for rule in entry.get("rules", [])
    ]
    return served


def served_segment(entry: dict | None) -> dict | None:
    if entry is None:
        return None
    return {key: value for key, value in entry.items() if key != "name"}


def _segment_users(environment: Environment, key: str) -> list[str]:
    """Flags whose rules in `environment` ask for segment `key`."""
    users = set()
    rules = Rule.objects.filter(environment=environment).select_related("flag")
    for rule in rules:
        for condition in rule.conditions or []:
            if (
                isinstance(condition, dict)
                and condition.get("operator") == "in_segment"
                and key in (condition.get("values") or [])
            ):
                users.add(rule.flag.key)
    return sorted(users)


@dataclass
class Reading:
    """What each protected environment serves of some flags and segments, at one moment."""

    flags: dict[tuple[int, str], dict | None] = field(default_factory=dict)
    segments: dict[tuple[int, str], dict | None] = field(default_factory=dict)
    users: dict[tuple[int, str], list[str]] = field(default_factory=dict)


def protected_environments(project: Project) -> list[Environment]:
    return list(project.environments.filter(protected=True).select_related("project"))


def read(
    environments: list[Environment], flag_keys: Iterable[str], segment_keys: Iterable[str]
) -> Reading:
    reading = Reading()
    flag_keys, segment_keys = list(flag_keys), list(segment_keys)
    for environment in environments:
        for key in flag_keys:
            flag = Flag.objects.filter(project_id=environment.project_id, key=key).first()
            entry = flag_state(flag, environment) if flag is not None else None
            reading.flags[environment.pk, key] = served_flag(entry)
        for key in segment_keys:
            segment = Segment.objects.filter(project_id=environment.project_id, key=key).first()
            entry = segment_entry(segment) if segment is not None else None
            reading.segments[environment.pk, key] = served_segment(entry)
            reading.users[environment.pk, key] = _segment_users(environment, key)
    return reading


def _text(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _flag_lines(before: dict | None, after: dict | None) -> list[str]:
    if before is None or after is None:
        return ["created" if before is None else "removed"]
    lines = []
    for key in ("archived", "type", "salt", "clientSide"):
        if before.get(key) != after.get(key):
            lines.append(f"{key}: {_text(before.get(key))} → {_text(after.get(key))}")
    old = {v["key"]: v["value"] for v in before.get("variants", [])}
    new = {v["key"]: v["value"] for v in after.get("variants", [])}
    for variant in sorted(set(old) | set(new)):
        if variant not in new:
            lines.append(f"variant {variant} removed")
        elif variant not in old:
            lines.append(f"variant {variant} added: {_text(new[variant])}")
        elif old[variant] != new[variant]:
            lines.append(f"variant {variant}: {_text(old[variant])} → {_text(new[variant])}")
    return lines + state_diff(before, after)


def _segment_lines(before: dict | None, after: dict | None) -> list[str]:
    before, after = before or {}, after or {}
    return [
        f"{key}: {_text(before.get(key))} → {_text(after.get(key))}"
        for key in ("conditions", "included", "excluded")
        if before.get(key) != after.get(key)
    ]


def differences(
    environments: list[Environment], before: Reading, after: Reading
) -> list[tuple[Environment, str, list[str]]]:
    """(environment, subject, lines) for each protected environment whose answers change."""
    changed = []
    for environment in environments:
        for (env_pk, key), old in before.flags.items():
            new = after.flags.get((env_pk, key))
            if env_pk == environment.pk and old != new:
                changed.append((environment, f"flag {key}", _flag_lines(old, new)))
        for (env_pk, key), old in before.segments.items():
            new = after.segments.get((env_pk, key))
            used = before.users.get((env_pk, key)) or after.users.get((env_pk, key))
            if env_pk == environment.pk and old != new and used:
                lines = _segment_lines(old, new) + [f"used by {', '.join(used)}"]
                changed.append((environment, f"segment {key}", lines))
    return changed


@dataclass
class Measurement:
    changes: list[tuple[Environment, str, list[str]]] = field(default_factory=list)

    def as_json(self) -> list[dict]:
        return [
            {"environment": environment.key, "subject": subject, "changes": lines}
            for environment, subject, lines in self.changes
        ]


@contextmanager
def measured(
    project: Project, *, flag_keys: Iterable[str] = (), segment_keys: Iterable[str] = ()
) -> Iterator[Measurement]:
    """Around a write: afterwards, `changes` holds what it changed in protected environments."""
    environments = protected_environments(project)
    flag_keys, segment_keys = list(flag_keys), list(segment_keys)
    before = read(environments, flag_keys, segment_keys)
    measurement = Measurement()
    yield measurement
    after = read(environments, flag_keys, segment_keys)
    measurement.changes = differences(environments, before, after)
