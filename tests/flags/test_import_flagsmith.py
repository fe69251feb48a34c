"""Flagsmith environment documents, written from its documentation, imported and evaluated.

Multivariate expectations come from Flagsmith's published formula computed here with
hashlib: MD5 of the feature state id and the identity key joined with ",", as an integer,
`% 9999 / 9998 * 100`, against the options' cumulative allocations in id order.
"""

from __future__ import annotations

import hashlib

import pytest

from flags.importers import convert
from flags.models import Flag
from tests.flags.importing import import_and_compile

pytestmark = pytest.mark.django_db

ENVIRONMENT = {
    "api_key": "env-key",
    "feature_states": [
        {
            "feature": {"id": 1, "name": "button_colour", "type": "MULTIVARIATE"},
            "enabled": True,
            "django_id": 101,
            "feature_state_value": "grey",
            "multivariate_feature_state_values": [
                {
                    "id": 9,
                    "percentage_allocation": 20.0,
                    "multivariate_feature_option": {"id": 2, "value": "blue"},
                },
                {
                    "id": 7,
                    "percentage_allocation": 33.3,
                    "multivariate_feature_option": {"id": 1, "value": "red"},
                },
            ],
        },
        {
            "feature": {"id": 2, "name": "beta_banner", "type": "STANDARD"},
            "enabled": False,
            "django_id": 102,
            "feature_state_value": "off",
        },
        {
            "feature": {"id": 3, "name": "split_segment", "type": "STANDARD"},
            "enabled": True,
            "django_id": 103,
            "feature_state_value": None,
        },
    ],
    "project": {
        "segments": [
            {
                "id": 5,
                "name": "power users",
                "rules": [
                    {
                        "type": "ALL",
                        "conditions": [],
                        "rules": [
                            {
                                "type": "ANY",
                                "conditions": [
                                    {"operator": "EQUAL", "property_": "plan", "value": "pro"},
                                    {
                                        "operator": "GREATER_THAN",
                                        "property_": "logins",
                                        "value": "100",
                                    },
                                ],
                                "rules": [],
                            },
                            {
                                "type": "NONE",
                                "conditions": [
                                    {
                                        "operator": "CONTAINS",
                                        "property_": "email",
                                        "value": "@competitor",
                                    }
                                ],
                                "rules": [],
                            },
                        ],
                    }
                ],
                "feature_states": [
                    {
                        "feature": {"id": 2},
                        "enabled": True,
                        "feature_state_value": "welcome",
                        "feature_segment": {"priority": 0},
                    }
                ],
            },
            {
                "id": 6,
                "name": "half",
                "rules": [
                    {
                        "type": "ALL",
                        "conditions": [
                            {"operator": "PERCENTAGE_SPLIT", "property_": "", "value": "50"}
                        ],
                        "rules": [],
                    }
                ],
                "feature_states": [
                    {"feature": {"id": 3}, "enabled": False, "feature_state_value": None}
                ],
            },
        ]
    },
}


def flagsmith_value(state_id: int, identity_key: str) -> str:
    digest = hashlib.md5(f"{state_id},{identity_key}".encode()).hexdigest()
    percentage = int(digest, 16) % 9999 / 9998 * 100
    # Options in id order: red (id 7) 33.3%, then blue (id 9) 20%; the rest is the control.
    if percentage < 33.3:
        return "red"
    if percentage < 53.3:
        return "blue"
    return "grey"


@pytest.fixture
def imported():
    return import_and_compile("flagsmith", ENVIRONMENT)


def test_multivariate_keeps_flagsmiths_buckets(imported):
    snapshot, _ = imported
    seen = set()
    for index in range(400):
        identity = f"env-key_user-{index}"
        result = snapshot.evaluate(
            "button_colour", {"targetingKey": f"user-{index}", "identityKey": identity}
        )
        assert result.value == {"enabled": True, "value": flagsmith_value(101, identity)}, identity
        seen.add(result.value["value"])
    assert seen == {"red", "blue", "grey"}


@pytest.mark.parametrize(
    "traits, answer",
    [
        ({"plan": "pro"}, {"enabled": True, "value": "welcome"}),
        ({"logins": 150}, {"enabled": True, "value": "welcome"}),
        ({"plan": "pro", "email": "a@competitor.com"}, {"enabled": False, "value": "off"}),
        ({"plan": "free"}, {"enabled": False, "value": "off"}),
    ],
)
def test_segment_overrides_answer_enabled_and_value(imported, traits, answer):
    snapshot, _ = imported
    assert snapshot.evaluate("beta_banner", {"targetingKey": "u", **traits}).value == answer


def test_what_cannot_be_expressed_is_skipped_with_the_reason(imported):
    _, conversion = imported
    assert "PERCENTAGE_SPLIT" in conversion.skipped["split_segment"]
    assert not Flag.objects.filter(key="split_segment").exists()
    assert Flag.objects.get(key="button_colour").bucketing == "flagsmith"


def test_a_segment_override_whose_feature_is_no_object_overrides_nothing():
    document = {
        "feature_states": [{"feature": {"name": "banner", "id": 1}, "enabled": True}],
        "project": {
            "segments": [
                {"feature_states": [{"feature": [1], "feature_segment": 5, "enabled": False}]}
            ]
        },
    }
    conversion = convert("flagsmith", document)
    assert conversion.keys == {"banner": "banner"}
    assert conversion.document["flags"]["banner"]["rules"] == []
