"""LaunchDarkly flags and segments, written from its REST API and SDK data documentation.

Bucket expectations come from LaunchDarkly's published formula computed here with hashlib:
the first 15 hex digits of SHA-1 of "{flagKey}.{salt}.{value}" over 0xFFFFFFFFFFFFFFF,
walked over the weights on a 100,000 scale.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from flags.importers import convert
from flags.models import Flag
from tests import factories
from tests.flags.command_line import run
from tests.flags.importing import import_and_compile

pytestmark = pytest.mark.django_db

SDK_DATA = {
    "flags": {
        "checkout-api": {
            "key": "checkout-api",
            "on": True,
            "salt": "0b1c2d",
            "variations": [True, False],
            "offVariation": 1,
            "fallthrough": {"variation": 0},
        },
        "new-checkout": {
            "key": "new-checkout",
            "on": True,
            "salt": "e9f1a2b3c4",
            "variations": [True, False],
            "offVariation": 1,
            "prerequisites": [{"key": "checkout-api", "variation": 0}],
            "targets": [{"values": ["vip-1"], "variation": 0}],
            "rules": [
                {
                    "clauses": [
                        {"attribute": "email", "op": "endsWith", "values": ["@example.com"]}
                    ],
                    "variation": 0,
                },
                {
                    "clauses": [{"attribute": "", "op": "segmentMatch", "values": ["beta"]}],
                    "rollout": {
                        "variations": [
                            {"variation": 0, "weight": 10_000},
                            {"variation": 1, "weight": 90_000},
                        ]
                    },
                },
            ],
            "fallthrough": {
                "rollout": {
                    "variations": [
                        {"variation": 0, "weight": 25_000},
                        {"variation": 1, "weight": 75_000},
                    ]
                }
            },
        },
        "banner": {
            "key": "banner",
            "on": True,
            "salt": "s4lt",
            "variations": [{"value": "blue", "name": "Blue"}, {"value": "red", "name": "Red"}],
            "offVariation": 0,
            "fallthrough": {
                "rollout": {
                    "bucketBy": "company",
                    "variations": [
                        {"variation": 0, "weight": 33_333},
                        {"variation": 1, "weight": 66_667},
                    ],
                }
            },
        },
        "experiment": {
            "key": "experiment",
            "on": True,
            "salt": "x",
            "variations": [True, False],
            "offVariation": 1,
            "fallthrough": {
                "rollout": {
                    "kind": "experiment",
                    "seed": 61,
                    "variations": [
                        {"variation": 0, "weight": 50_000},
                        {"variation": 1, "weight": 50_000},
                    ],
                }
            },
        },
        "bad-regex": {
            "key": "bad-regex",
            "on": True,
            "salt": "y",
            "variations": [True, False],
            "offVariation": 1,
            "rules": [
                {
                    "clauses": [{"attribute": "email", "op": "matches", "values": ["(?<=x)"]}],
                    "variation": 0,
                }
            ],
            "fallthrough": {"variation": 1},
        },
    },
    "segments": {
        "beta": {
            "key": "beta",
            "included": ["tester-1"],
            "excluded": ["blocked-1"],
            "rules": [{"clauses": [{"attribute": "plan", "op": "in", "values": ["beta"]}]}],
        }
    },
}


def ld_variant(flag_key: str, salt: str, value: str, weights: list[tuple[str, int]]) -> str:
    digest = hashlib.sha1(f"{flag_key}.{salt}.{value}".encode()).hexdigest()
    point = int(digest[:15], 16) / 0xFFFFFFFFFFFFFFF
    cumulative = 0
    for variant, weight in weights:
        cumulative += weight
        if point < cumulative / 100_000:
            return variant
    return weights[-1][0]


@pytest.fixture
def imported():
    return import_and_compile("launchdarkly", SDK_DATA)


def test_rollouts_keep_launchdarklys_buckets(imported):
    snapshot, _ = imported
    fallthrough = [("on", 25_000), ("off", 75_000)]
    in_beta = [("on", 10_000), ("off", 90_000)]
    for index in range(300):
        user = f"user-{index}"
        result = snapshot.evaluate("new-checkout", {"targetingKey": user})
        assert result.variant == ld_variant("new-checkout", "e9f1a2b3c4", user, fallthrough)
        beta = snapshot.evaluate("new-checkout", {"targetingKey": user, "plan": "beta"})
        assert beta.variant == ld_variant("new-checkout", "e9f1a2b3c4", user, in_beta)
        company = snapshot.evaluate("banner", {"targetingKey": "u", "company": f"c{index}"})
        expected = ld_variant("banner", "s4lt", f"c{index}", [("blue", 33_333), ("red", 66_667)])
        assert company.variant == expected


@pytest.mark.parametrize(
    "context, variant",
    [
        ({"targetingKey": "vip-1"}, "on"),  # an individual target
        ({"targetingKey": "x", "email": "a@example.com"}, "on"),  # the first rule
        ({"targetingKey": "tester-1"}, "off"),  # in the segment, then the 10% rollout
    ],
)
def test_targets_rules_and_segments(imported, context, variant):
    snapshot, _ = imported
    result = snapshot.evaluate("new-checkout", context)
    if context["targetingKey"] == "tester-1":
        expected = ld_variant(
            "new-checkout", "e9f1a2b3c4", "tester-1", [("on", 10_000), ("off", 90_000)]
        )
        assert result.variant == expected
    else:
        assert result.variant == variant


def test_what_cannot_be_expressed_is_skipped_with_the_reason(imported):
    _, conversion = imported
    assert "seed" in conversion.skipped["experiment"]
    assert "invalid regular expression" in conversion.skipped["bad-regex"]
    assert not Flag.objects.filter(key__in=["experiment", "bad-regex"]).exists()
    assert Flag.objects.get(key="banner").bucketing == "launchdarkly"


def test_the_rest_api_needs_one_environment(tmp_path):
    project = factories.project("shop")
    factories.environment(project, "production")
    flag = {**SDK_DATA["flags"]["checkout-api"]}
    rest = {
        "items": [
            {
                "key": "checkout-api",
                "variations": [{"value": True}, {"value": False}],
                "environments": {
                    "production": {k: v for k, v in flag.items() if k not in ("key", "variations")}
                },
            },
            {"key": "two-envs", "variations": [], "environments": {"a": {}, "b": {}}},
        ]
    }
    path = tmp_path / "ld.json"
    path.write_text(json.dumps(rest), encoding="utf-8")
    out = run("import", str(path), "shop", "production", "--from", "launchdarkly").stdout
    assert "! flag two-envs: not imported: name one environment" in out
    assert Flag.objects.filter(key="checkout-api").exists()


def test_a_segment_named_by_a_list_is_skipped_not_a_crash():
    flag = {**SDK_DATA["flags"]["checkout-api"]}
    rule = {"clauses": [{"attribute": "", "op": "segmentMatch", "values": [["beta"]]}]}
    rest = {
        "items": [
            {
                "key": "checkout-api",
                "variations": [True, False],
                "environments": {"production": {**flag, "rules": [rule]}},
            }
        ],
        "segments": [{"key": ["beta"], "included": ["user-1"]}],
    }
    conversion = convert("launchdarkly", rest)
    assert "is not in the export" in conversion.skipped["checkout-api"]
