"""Reading the audit log: what an entry changed, for people, and its actions in groups.

The services name some actions with what they refer to (`restore v12`, `apply request #3`,
`rollout step #41`), so the log has one action per version or request: the filters and the
start page group them by kind instead, from a fixed list.
"""

from __future__ import annotations

import json
from typing import Any, TypeGuard

from django.db.models import Q, QuerySet

from flags import history
from flags.models import AuditEntry

# (value in the address, label, exact actions, action prefixes); most specific first.
ACTION_GROUPS: tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...] = (
    ("switch", "Switched on or off", ("enable", "disable", "trigger on"), ()),
    ("kill", "Kill switch", ("kill",), ()),
    ("restore", "Restored a version", (), ("restore v",)),
    ("update", "Changed", ("update",), ()),
    ("create", "Created", ("create",), ()),
    ("archive", "Archived", ("archive",), ()),
    ("delete", "Deleted", ("delete",), ()),
    (
        "request",
        "Change requests",
        ("propose", "approve", "reject", "rebase", "apply"),
        ("apply request #",),
    ),
    ("schedule", "Schedules and rollouts", ("schedule", "fail"), ("scheduled change #",)),
    ("rollout", "Rollout steps", (), ("rollout step #",)),
    ("cancel", "Cancelled", ("cancel",), ()),
    ("access", "Roles and access", ("role", "access"), ()),
    ("secret", "Keys and secrets", ("revoke", "create-secret", "rotate-secret"), ()),
    ("transfer", "Imports and promotions", ("import", "promote"), ()),
    ("trigger", "Triggers fired", ("fire",), ()),
    ("bypass", "Approval bypassed", ("bypass-approval",), ()),
    ("experiment", "Experiments started or stopped", ("start", "stop"), ()),
)
GROUP_NAMES = {value: label for value, label, _, _ in ACTION_GROUPS}

EMPTY: tuple[Any, ...] = (None, "", [], {})
# A value longer than this is cut in a diff line; the whole entry stays on its page.
LONGEST_VALUE = 200


def action_query(group: str) -> Q:
    """The entries whose action belongs to `group` (nothing for an unknown group)."""
    for value, _, exact, prefixes in ACTION_GROUPS:
        if value == group:
            query = Q(action__in=exact)
            for prefix in prefixes:
                query |= Q(action__startswith=prefix)
            return query
    return Q(pk__in=[])


def entries_in_group(entries: QuerySet[AuditEntry], group: str) -> QuerySet[AuditEntry]:
    return entries.filter(action_query(group))


def action_label(action: str) -> str:
    """An action as people read it: `restore v12` stays itself; `enable` becomes `switched on`."""
    words = {
        "enable": "switched on",
        "disable": "switched off",
        "kill": "kill switch",
        "propose": "proposed a change",
        "role": "role changed",
    }
    return words.get(action, action)


def entry_title(entry: AuditEntry) -> str:
    """`switched on flag new-checkout/production`: the entry in a few words."""
    noun = OBJECT_NOUNS.get(entry.object_type, entry.object_type.replace("_", " "))
    return f"{action_label(entry.action)} {noun} {entry.object_key}"


# How entries' object types read in a sentence ("flag new-checkout/production").
OBJECT_NOUNS = {"flag_config": "flag", "api_key": "API key", "scheduled_change": "schedule of"}


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "–"
    if value in ("", [], {}):
        return "(empty)"
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    return text if len(text) <= LONGEST_VALUE else text[: LONGEST_VALUE - 1] + "…"


def _dict_changes(before: dict, after: dict, prefix: str = "") -> list[str]:
    lines = []
    for key in dict.fromkeys([*before, *after]):
        old, new = before.get(key), after.get(key)
        if old == new:
            continue
        name = f"{prefix}{key}"
        if isinstance(old, dict) and isinstance(new, dict):
            lines += _dict_changes(old, new, f"{name}.")
        elif key not in before:
            lines.append(f"{name}: {_text(new)} (added)")
        elif key not in after:
            lines.append(f"{name}: {_text(old)} (removed)")
        else:
            lines.append(f"{name}: {_text(old)} → {_text(new)}")
    return lines


def _is_flag_entry(value: Any) -> TypeGuard[dict]:
    return isinstance(value, dict) and {"enabled", "rules", "defaultServe"} <= set(value)


def entry_changes(entry: AuditEntry) -> list[str]:
    """What the entry changed, one line per changed key (like a version's diff)."""
    before, after = entry.before, entry.after
    if _is_flag_entry(before) and _is_flag_entry(after):
        # A flag's configuration: the versions page's diff, then its own fields if any.
        rest = [key for key in {*before, *after} if key not in history.CONFIG_KEYS]
        own = _dict_changes({k: before.get(k) for k in rest}, {k: after.get(k) for k in rest})
        return history.state_diff(before, after) + own
    if isinstance(before, dict) and isinstance(after, dict):
        return _dict_changes(before, after)
    if before is None and _is_flag_entry(after):
        return ["created, off"] if not after["enabled"] else ["created"]
    if before is None and isinstance(after, dict):
        return [f"{key}: {_text(value)}" for key, value in after.items() if value not in EMPTY]
    if isinstance(before, dict) and after is None:
        return [f"{key}: {_text(value)} (removed)" for key, value in before.items()]
    if before == after:
        return []
    return [f"{_text(before)} → {_text(after)}"]
