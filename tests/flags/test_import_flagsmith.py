"""Flagsmith environment documents, written from its documentation, imported and evaluated.

Bucket expectations come from Flagsmith's published formula computed here with hashlib:
MD5 of the object ids joined with ",", as an integer, `% 9999 / 9998 * 100` (a result of
exactly 100 hashes the ids repeated twice). Multivariate options hash the feature state id
and the identity key, against their cumulative allocations in id order; a PERCENTAGE_SPLIT
condition holds when the segment id and the identity key hash to at most its value.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from flags.importers import convert
from flags.models import Flag
from tests import factories
from tests.flags.command_line import fails
from tests.flags.importing import import_and_compile
from tests.flags.test_api_management import client_for

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
        {
            "feature": {"id": 4, "name": "modulo_segment", "type": "STANDARD"},
            "enabled": True,
            "django_id": 104,
            "feature_state_value": None,
        },
    ],
    # Identity overrides, as the environment document lists them.
    "identity_overrides": [
        {
            "identifier": "vip-1",
            "identity_uuid": "5e1e5a8c-0000-4000-8000-000000000001",
            "environment_api_key": "env-key",
            "identity_features": [
                {
                    "feature": {"id": 1, "name": "button_colour", "type": "MULTIVARIATE"},
                    "enabled": True,
                    "featurestate_uuid": "5e1e5a8c-0000-4000-8000-0000000000f1",
                    "feature_state_value": "gold",
                    "multivariate_feature_state_values": [],
                },
                {
                    "feature": {"id": 2, "name": "beta_banner", "type": "STANDARD"},
                    "enabled": False,
                    "feature_state_value": "off",
                    "multivariate_feature_state_values": [],
                },
            ],
        },
        {
            "identifier": "tester",
            "identity_uuid": "5e1e5a8c-0000-4000-8000-000000000002",
            "environment_api_key": "env-key",
            "identity_features": [
                {
                    "feature": {"id": 2, "name": "beta_banner", "type": "STANDARD"},
                    "enabled": True,
                    "feature_state_value": "welcome",
                },
                {
                    "feature": {"id": 3, "name": "split_segment", "type": "STANDARD"},
                    "enabled": True,
                    "feature_state_value": "chosen",
                },
            ],
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
            {
                "id": 7,
                "name": "odd",
                "rules": [
                    {
                        "type": "ALL",
                        "conditions": [{"operator": "MODULO", "property_": "n", "value": "2|1"}],
                        "rules": [],
                    }
                ],
                "feature_states": [
                    {"feature": {"id": 4}, "enabled": False, "feature_state_value": None}
                ],
            },
        ]
    },
}


def hashed_percentage(*ids: object) -> float:
    repeated = [str(i) for i in ids]
    while True:
        digest = hashlib.md5(",".join(repeated).encode()).hexdigest()
        percentage = int(digest, 16) % 9999 / 9998 * 100
        if percentage != 100:
            return percentage
        repeated += [str(i) for i in ids]


def flagsmith_value(state_id: int, identity_key: str) -> str:
    percentage = hashed_percentage(state_id, identity_key)
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


def test_a_percentage_split_segment_hashes_its_id_and_the_identity_key(imported):
    snapshot, _ = imported
    inside = 0
    for index in range(400):
        identity = f"env-key_user-{index}"
        in_segment = hashed_percentage(6, identity) <= 50
        inside += in_segment
        context = {"targetingKey": f"user-{index}", "identityKey": identity}
        answer = snapshot.evaluate("split_segment", context).value
        assert answer == {"enabled": not in_segment, "value": None}, identity
    assert 150 < inside < 250
    # Without an identity Flagsmith evaluates no segment: the environment's answer.
    assert snapshot.evaluate("split_segment", {}).value == {"enabled": True, "value": None}


def test_a_percentage_split_on_a_trait_hashes_the_trait_when_the_context_has_it():
    segment = {
        "id": 12,
        "rules": [
            {
                "type": "ALL",
                "conditions": [{"operator": "PERCENTAGE_SPLIT", "property_": "org", "value": "30"}],
            }
        ],
        "feature_states": [{"feature": {"id": 1}, "enabled": True, "feature_state_value": "in"}],
    }
    document = {
        "feature_states": [
            {"feature": {"id": 1, "name": "by_org"}, "enabled": False, "feature_state_value": "x"}
        ],
        "project": {"segments": [segment]},
    }
    snapshot, _ = import_and_compile("flagsmith", document)
    for index in range(200):
        org, identity = f"org-{index}", f"env-key_u{index}"
        by_trait = snapshot.evaluate("by_org", {"org": org, "identityKey": identity}).value
        assert (by_trait["value"] == "in") is (hashed_percentage(12, org) <= 30), org
        by_identity = snapshot.evaluate("by_org", {"identityKey": identity}).value
        assert (by_identity["value"] == "in") is (hashed_percentage(12, identity) <= 30)


@pytest.mark.parametrize(
    "identifier, flag, answer",
    [
        # An identity override beats the multivariate split ...
        ("vip-1", "button_colour", {"enabled": True, "value": "gold"}),
        # ... and the segment override (vip-1 is a power user below).
        ("vip-1", "beta_banner", {"enabled": False, "value": "off"}),
        ("tester", "beta_banner", {"enabled": True, "value": "welcome"}),
        ("tester", "split_segment", {"enabled": True, "value": "chosen"}),
        # An identity without overrides gets the segment override.
        ("someone", "beta_banner", {"enabled": True, "value": "welcome"}),
    ],
)
def test_identity_overrides_become_targets(imported, identifier, flag, answer):
    snapshot, _ = imported
    context = {"targetingKey": identifier, "identityKey": f"env-key_{identifier}", "plan": "pro"}
    result = snapshot.evaluate(flag, context)
    assert result.value == answer
    if identifier != "someone":
        assert result.reason == "TARGETING_MATCH" and result.rule_id is None


def test_identity_overrides_share_the_variant_of_their_answer(imported):
    _, conversion = imported
    banner = conversion.document["flags"]["beta_banner"]
    assert {(t["variant"], tuple(t["values"])) for t in banner["targets"]} == {
        ("control", ("vip-1",)),
        ("segment-0", ("tester",)),
    }
    colours = conversion.document["flags"]["button_colour"]
    assert colours["targets"] == [{"variant": "identity-0", "values": ["vip-1"]}]


def test_what_cannot_be_expressed_is_skipped_with_the_reason(imported):
    _, conversion = imported
    assert "MODULO" in conversion.skipped["modulo_segment"]
    assert not Flag.objects.filter(key="modulo_segment").exists()
    assert Flag.objects.get(key="button_colour").bucketing == "flagsmith"
    assert Flag.objects.get(key="split_segment").bucketing == "flagsmith"


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


# --- hostile documents: the new fields refused cleanly at both doors ----------------------

BANNER = {"feature": {"id": 1, "name": "banner"}, "enabled": True, "feature_state_value": "x"}


def with_identities(identities: str) -> str:
    """A document of one feature whose identity_overrides is the JSON text given."""
    states = '"feature_states": [' + json.dumps(BANNER) + "]"
    return "{" + states + ', "identity_overrides": ' + identities + "}"


def overriding(value: str, identifier: str = '"u1"') -> str:
    """Raw JSON texts, so that what no JSON encoder writes (a lone surrogate) can be sent."""
    feature = '{"feature": {"id": 1}, "enabled": true, "feature_state_value": ' + value + "}"
    identity = '{"identifier": ' + identifier + ', "identity_features": [' + feature + "]}"
    return with_identities("[" + identity + "]")


HOSTILE = {
    "identities not a list": (with_identities('"all"'), "identity_overrides"),
    "an identity not an object": (with_identities("[5]"), "identity_overrides[0]"),
    "an identifier not a string": (overriding('"v"', "[1]"), "identity_overrides[0].identifier"),
    "an empty identifier": (overriding('"v"', '""'), "identity_overrides[0].identifier"),
    "features not a list": (
        with_identities('[{"identifier": "u1", "identity_features": {"a": 1}}]'),
        "identity_overrides[0].identity_features",
    ),
    "a NUL in an identifier": (overriding('"v"', '"u\\u0000"'), "NUL"),
    "a lone surrogate in an identifier": (overriding('"v"', '"\\udc00"'), "surrogate"),
    "a lone surrogate in a value": (overriding('"\\ud800"'), "surrogate"),
    "a value nested 10,000 deep": (overriding("[" * 10_000 + "]" * 10_000), "deep"),
}


@pytest.mark.parametrize("text, words", HOSTILE.values(), ids=HOSTILE)
def test_hostile_identity_overrides_are_refused_by_the_command(tmp_path, text, words):
    project = factories.project("shop")
    factories.environment(project, "production")
    path = tmp_path / "flagsmith.json"
    path.write_text(text, encoding="utf-8")
    message = fails("import", str(path), "shop", "production", "--from", "flagsmith")
    assert words.lower() in message.lower()
    assert not Flag.objects.filter(project=project).exists()


@pytest.mark.parametrize("text, words", HOSTILE.values(), ids=HOSTILE)
def test_hostile_identity_overrides_are_json_400s(text, words):
    project = factories.project("shop")
    factories.environment(project, "production")
    api = client_for(factories.member(project, "admin"))
    body = '{"source": "flagsmith", "document": ' + text + "}"
    url = "/api/v1/projects/shop/environments/production/import"
    response = api.generic("POST", url, body.encode(), content_type="application/json")
    assert response.status_code == 400, response.content
    if words not in ("NUL", "surrogate", "deep"):  # the parser's own message names no field
        assert words in json.dumps(response.json())
    assert not Flag.objects.filter(project=project).exists()


@pytest.mark.parametrize(
    "condition, reason",
    [
        ({"operator": "PERCENTAGE_SPLIT", "value": "half"}, "is not a number"),
        ({"operator": "PERCENTAGE_SPLIT", "value": "150"}, "from 0 to 100"),
        ({"operator": "PERCENTAGE_SPLIT", "value": ["50"]}, "is not a number"),
        ({"operator": "PERCENTAGE_SPLIT", "value": "1e400"}, "from 0 to 100"),
    ],
)
def test_a_percentage_split_that_cannot_be_read_skips_its_flag_whole(condition, reason):
    segment = {
        "id": 3,
        "rules": [{"type": "ALL", "conditions": [condition]}],
        "feature_states": [{"feature": {"id": 1}, "enabled": False}],
    }
    document = {"feature_states": [BANNER], "project": {"segments": [segment]}}
    conversion = convert("flagsmith", document)
    assert reason in conversion.skipped["banner"]
    assert conversion.document["flags"] == {}


def test_a_percentage_split_of_a_segment_without_an_id_skips_its_flag():
    segment = {
        "rules": [{"type": "ALL", "conditions": [{"operator": "PERCENTAGE_SPLIT", "value": "5"}]}],
        "feature_states": [{"feature": {"id": 1}, "enabled": False}],
    }
    document = {"feature_states": [BANNER], "project": {"segments": [segment]}}
    conversion = convert("flagsmith", document)
    assert "no id" in conversion.skipped["banner"]


def test_more_identity_overrides_than_targets_hold_skip_the_flag_not_the_import():
    override = {"feature": {"id": 1}, "enabled": False, "feature_state_value": "y"}
    identities = [
        {"identifier": f"user-{index}", "identity_features": [override]} for index in range(10_001)
    ]
    other = {"feature": {"id": 2, "name": "other"}, "enabled": True, "feature_state_value": 1}
    conversion = convert(
        "flagsmith", {"feature_states": [BANNER, other], "identity_overrides": identities}
    )
    assert "more than 10000 identities" in conversion.skipped["banner"]
    assert list(conversion.document["flags"]) == ["other"]


def test_an_identity_override_with_its_own_split_skips_the_flag():
    override = {
        "feature": {"id": 1},
        "enabled": True,
        "multivariate_feature_state_values": [{"id": 1, "percentage_allocation": 50}],
    }
    identities = [{"identifier": "u1", "identity_features": [override]}]
    document = {"feature_states": [BANNER], "identity_overrides": identities}
    conversion = convert("flagsmith", document)
    assert "own multivariate values" in conversion.skipped["banner"]
