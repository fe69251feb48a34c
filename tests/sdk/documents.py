"""Flag documents for the SDK's tests that need no server."""

from __future__ import annotations

import copy


def boolean_flag(enabled: bool = True) -> dict:
    return {
        "type": "boolean",
        "enabled": enabled,
        "variants": [{"key": "on", "value": True}, {"key": "off", "value": False}],
        "offVariant": "off",
        "rules": [
            {
                "id": "1",
                "conditions": [{"attribute": "country", "operator": "equals", "values": ["US"]}],
                "serve": {"variant": "on"},
            }
        ],
        "defaultServe": {"variant": "off"},
    }


DOCUMENT = {
    "schemaVersion": 1,
    "version": 7,
    "flags": {
        "new-checkout": boolean_flag(),
        "banner-text": {
            "type": "string",
            "enabled": True,
            "variants": [{"key": "hello", "value": "Hello"}],
            "offVariant": "hello",
            "defaultServe": {"variant": "hello"},
        },
        "theme": {
            "type": "json",
            "enabled": True,
            "variants": [{"key": "dark", "value": {"color": "black"}}],
            "offVariant": "dark",
            "defaultServe": {"variant": "dark"},
        },
    },
}


def document(version: int = 7) -> dict:
    copied = copy.deepcopy(DOCUMENT)
    copied["version"] = version
    return copied
