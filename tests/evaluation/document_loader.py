"""Test-only: put a flag document into the database through flags.services, and make keys.

The conformance files and the HTTP tests describe flags as documents; this turns one into a
project whose environment serves the same document (rule ids aside: the database numbers
them). Flags or segments the services refuse are reported, not loaded, so a caller can skip
the cases that need them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from django.core.exceptions import ValidationError

from evaluation import credentials
from flags import services
from flags.models import Environment, FlagConfig
from tests import factories

SYSTEM = factories.SYSTEM


@dataclass
class Loaded:
    environment: Environment
    refused: dict[str, str] = field(default_factory=dict)  # flag or segment key -> reason


def load_document(document: dict, environment_key: str = "production") -> Loaded:
    project = factories.project()
    environment = factories.environment(project, environment_key)
    loaded = Loaded(environment)
    for key, segment in (document.get("segments") or {}).items():
        data = {
            name: segment[name]
            for name in ("conditions", "included", "excluded")
            if name in segment
        }
        try:
            services.segment_create(project=project, key=key, data=data, **SYSTEM)
        except ValidationError as error:
            loaded.refused[key] = str(error)
    created = {}
    for key, flag in document["flags"].items():
        try:
            created[key] = _create_flag(project, key, flag)
        except (ValidationError, KeyError, TypeError) as error:
            loaded.refused[key] = str(error)
    for key, flag in document["flags"].items():
        if key not in created:
            continue
        try:
            _configure(created[key], environment, flag)
        except (ValidationError, KeyError, TypeError) as error:
            loaded.refused[key] = str(error)
    environment.refresh_from_db()
    return loaded


def _create_flag(project, key: str, flag: dict):
    metadata = flag.get("metadata") or {}
    created = services.flag_create(
        project=project,
        key=key,
        name=metadata.get("name", ""),
        description=metadata.get("description", ""),
        tags=metadata.get("tags", []),
        type=flag["type"],
        variants=[{"key": v["key"], "value": v["value"]} for v in flag["variants"]],
        salt="" if flag.get("salt") in (None, key) else flag["salt"],
        client_side=flag.get("clientSide", False),
        **SYSTEM,
    )
    return created


def _configure(flag, environment: Environment, entry: dict) -> None:
    data = {
        "offVariant": entry["offVariant"],
        "defaultServe": entry["defaultServe"],
        "rules": [
            {
                "name": rule.get("name", ""),
                "conditions": rule.get("conditions", []),
                "serve": rule["serve"],
            }
            for rule in entry.get("rules") or []
        ],
        "targets": entry.get("targets") or [],
        "prerequisites": entry.get("prerequisites") or [],
        "enabled": entry["enabled"],
    }
    config = FlagConfig.objects.get(flag=flag, environment=environment)
    services.flag_config_update(config=config, data=data, **SYSTEM)
    if entry.get("archived"):
        services.flag_update(flag=flag, data={"archived": True}, **SYSTEM)


def api_key(environment: Environment, kind: str = "server", **kwargs) -> str:
    """A new key's secret."""
    _, secret = services.api_key_create(
        environment=environment, kind=kind, name=f"{kind} key", **SYSTEM, **kwargs
    )
    return secret


def _boolean(enabled: bool = True, **extra) -> dict:
    return {
        "type": "boolean",
        "enabled": enabled,
        "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}],
        "offVariant": "off",
        "defaultServe": {"variant": "on"},
        **extra,
    }


# A small environment with one flag of each type and each way of being served.
SAMPLE_DOCUMENT = {
    "flags": {
        "new-checkout": _boolean(
            rules=[
                {
                    "id": "1",
                    "conditions": [
                        {"attribute": "country", "operator": "in", "values": ["US", "CA"]}
                    ],
                    "serve": {"variant": "on"},
                }
            ],
            defaultServe={"variant": "off"},
            metadata={"name": "New checkout", "description": "The new flow", "tags": ["shop"]},
        ),
        "banner-text": {
            "type": "string",
            "enabled": True,
            "variants": [{"key": "hello", "value": "Hello"}, {"key": "bye", "value": "Bye"}],
            "offVariant": "bye",
            "targets": [{"variant": "bye", "values": ["user-9"]}],
            "defaultServe": {"variant": "hello"},
        },
        "max-items": {
            "type": "number",
            "enabled": True,
            "variants": [{"key": "few", "value": 3}, {"key": "many", "value": 10}],
            "offVariant": "few",
            "defaultServe": {
                "rollout": {
                    "bucketBy": "targetingKey",
                    "variants": [
                        {"variant": "few", "weight": 50},
                        {"variant": "many", "weight": 50},
                    ],
                }
            },
        },
        "price-factor": {
            "type": "number",
            "enabled": True,
            "variants": [{"key": "full", "value": 1.0}, {"key": "sale", "value": 0.75}],
            "offVariant": "full",
            "defaultServe": {"variant": "sale"},
        },
        "theme": {
            "type": "json",
            "enabled": True,
            "variants": [
                {"key": "dark", "value": {"color": "black", "size": 2}},
                {"key": "light", "value": {"color": "white", "size": 1}},
            ],
            "offVariant": "light",
            "defaultServe": {"variant": "dark"},
        },
        "old-feature": _boolean(enabled=False),
        "needs-checkout": _boolean(prerequisites=[{"flag": "new-checkout", "variants": ["on"]}]),
    }
}
# Client keys evaluate every sample flag; tests/evaluation/test_client_keys.py has the flags
# they may not see.
for _flag in SAMPLE_DOCUMENT["flags"].values():
    _flag["clientSide"] = True


@pytest.fixture(autouse=True)
def fresh_credentials():
    """Forget resolved keys around each test (import this fixture into a test module)."""
    credentials.clear_local()
    yield
    credentials.clear_local()
