"""Numbered versions of a flag's configuration in an environment: record, read, diff.

`flags.services.flag_config_update` records a version in the change's own transaction;
restoring (`services.version_restore`) writes an old version's state back through it, so a
restore is itself a new version with its own audit entry.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from evaluation.documents import flag_state
from flags.errors import NotFound
from flags.models import FlagConfig, FlagConfigVersion

if TYPE_CHECKING:
    from flags.roles import Actor

# The parts of a flag's state that belong to its configuration in one environment (what
# a version restores); the rest (type, variants, metadata) belongs to the flag itself.
CONFIG_KEYS = ("enabled", "offVariant", "defaultServe", "targets", "prerequisites", "rules")


def _actor_fields(actor: Actor) -> dict:
    if actor is None:
        return {"actor": None, "actor_name": "system"}
    return {"actor": actor if actor.pk else None, "actor_name": actor.get_username()}


def version_record(
    *,
    config: FlagConfig,
    before: dict,
    after: dict,
    action: str,
    actor: Actor,
    source: str,
) -> FlagConfigVersion:
    """Record `after` as `config.version` (already bumped), and `before` if not yet known.

    Configurations exist before their first change (a flag is created with one per
    environment), so the version a change starts from is recorded the first time it is left.
    """
    if config.version > 1:
        FlagConfigVersion.objects.get_or_create(
            config=config,
            version=config.version - 1,
            defaults={
                "state": before,
                "action": "create" if config.version == 2 else "unrecorded",
                "actor_name": "system",
                "source": "system",
            },
        )
    return FlagConfigVersion.objects.create(
        config=config,
        version=config.version,
        state=after,
        action=action,
        source=source,
        **_actor_fields(actor),
    )


def config_part(state: dict) -> dict:
    """The restorable part of a flag state, in the shape the configuration PATCH takes."""
    # Rules keep their ids: a restored rule is the same rule again.
    return {key: state[key] for key in CONFIG_KEYS if key in state}


# --- A readable diff ----------------------------------------------------------------------


def _serving_text(serving: Any) -> str:
    if not isinstance(serving, dict):
        return _text(serving)
    if "variant" in serving:
        return f"variant {serving['variant']}"
    rollout = serving.get("rollout") or {}
    parts = [f"{item['variant']} {item['weight']}%" for item in rollout.get("variants", [])]
    text = f"rollout {' / '.join(parts)} by {rollout.get('bucketBy', 'targetingKey')}"
    return f"{text} salted {rollout['salt']!r}" if rollout.get("salt") else text


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _rule_name(rule: dict, index: int) -> str:
    return f"rule {index + 1}" + (f" {rule['name']!r}" if rule.get("name") else "")


def _rule_changes(before: list[dict], after: list[dict]) -> list[str]:
    lines = []
    for index in range(max(len(before), len(after))):
        if index >= len(before):
            new = after[index]
            lines.append(f"{_rule_name(new, index)} added: serve {_serving_text(new['serve'])}")
        elif index >= len(after):
            lines.append(f"{_rule_name(before[index], index)} removed")
        else:
            old, new = before[index], after[index]
            for key in ("name", "conditions", "serve"):
                if old.get(key) != new.get(key):
                    render = _serving_text if key == "serve" else _text
                    lines.append(
                        f"{_rule_name(new, index)} {key}: "
                        f"{render(old.get(key))} → {render(new.get(key))}"
                    )
    return lines


def _target_changes(before: list[dict], after: list[dict]) -> list[str]:
    old = {target["variant"]: set(target["values"]) for target in before}
    new = {target["variant"]: set(target["values"]) for target in after}
    lines = []
    for variant in sorted(set(old) | set(new)):
        added = sorted(new.get(variant, set()) - old.get(variant, set()))
        removed = sorted(old.get(variant, set()) - new.get(variant, set()))
        if added:
            lines.append(f"targets {variant}: added {', '.join(added)}")
        if removed:
            lines.append(f"targets {variant}: removed {', '.join(removed)}")
    return lines


def change_text(data: object) -> str:
    """A scheduled change's or change request's data (the configuration PATCH's shape), in
    words: `enabled: on; defaultServe: rollout on 10% / off 90% by targetingKey`."""
    if not isinstance(data, dict):
        return _text(data)
    parts = []
    for key, value in data.items():
        if key == "defaultServe":
            parts.append(f"defaultServe: {_serving_text(value)}")
        elif key == "rules" and isinstance(value, list):
            parts.append(f"rules: {len(value)}")
        else:
            parts.append(f"{key}: {_text(value)}")
    return "; ".join(parts)


def state_diff(before: dict | None, after: dict) -> list[str]:
    """What changed between two configurations, one line per change, for people."""
    if before is None:
        return ["created"]
    old, new = config_part(before), config_part(after)
    lines = []
    if old.get("enabled") != new.get("enabled"):
        lines.append(f"enabled: {_text(old.get('enabled'))} → {_text(new.get('enabled'))}")
    if old.get("offVariant") != new.get("offVariant"):
        lines.append(f"offVariant: {old.get('offVariant')} → {new.get('offVariant')}")
    if old.get("defaultServe") != new.get("defaultServe"):
        lines.append(
            f"defaultServe: {_serving_text(old.get('defaultServe'))} → "
            f"{_serving_text(new.get('defaultServe'))}"
        )
    lines += _target_changes(old.get("targets", []), new.get("targets", []))
    if old.get("prerequisites") != new.get("prerequisites"):
        lines.append(
            f"prerequisites: {_text(old.get('prerequisites'))} → {_text(new.get('prerequisites'))}"
        )
    lines += _rule_changes(old.get("rules", []), new.get("rules", []))
    return lines


# --- Reads --------------------------------------------------------------------------------


def versions_of(config: FlagConfig) -> list[dict]:
    """The configuration's versions, newest first, each with the diff from the one before."""
    rows = list(config.versions.order_by("version"))
    if not rows or rows[-1].version != config.version:
        # Never changed since it was created (or changed before history was recorded).
        current = FlagConfigVersion(
            config=config,
            version=config.version,
            state=flag_state(config.flag, config.environment),
            action="create" if config.version == 1 else "unrecorded",
            actor_name="system",
            source="system",
            created_at=config.updated_at,
        )
        rows.append(current)
    versions, previous = [], None
    for row in rows:
        versions.append(
            {
                "version": row.version,
                "action": row.action,
                "actor": row.actor_name,
                "source": row.source,
                "created_at": row.created_at,
                "current": row.version == config.version,
                "changes": state_diff(previous.state if previous else None, row.state),
                "state": config_part(row.state),
            }
        )
        previous = row
    return versions[::-1]


def version_state(config: FlagConfig, version: int) -> dict:
    for entry in versions_of(config):
        if entry["version"] == version:
            return entry["state"]
    raise NotFound("version", version, within=str(config))
