"""flagd flag files, written from flagd's documentation, imported and evaluated.

Every expectation is computed here: flagd's fractional formula (MurmurHash3 x86_32, seed 0,
of the bucketing value; `(hash * total) >> 32` walked over the weights) with mmh3, and the
JSON Logic by reading it. Nothing calls the engine's bucketing.
"""

from __future__ import annotations

import json

import mmh3
import pytest

from flags.importers import convert
from flags.models import Flag
from tests import factories
from tests.flags.command_line import run
from tests.flags.importing import import_and_compile

pytestmark = pytest.mark.django_db

COLORS = {"red": "#FF0000", "blue": "#0000FF", "green": "#00FF00", "yellow": "#FFFF00"}
FOUR = [["red", 25], ["blue", 25], ["green", 25], ["yellow", 25]]
EMAILS = [f"user{index}@faas.com" for index in range(200)] + ["rachel@faas.com", "é@faas.com"]

FLAGS = {
    "$evaluators": {"is_faas": {"in": ["@faas.com", {"var": ["email"]}]}},
    "flags": {
        # The fractional documentation's example, seeded as flagd suggests.
        "headerColor": {
            "state": "ENABLED",
            "variants": COLORS,
            "defaultVariant": "red",
            "targeting": {
                "if": [
                    {"$ref": "is_faas"},
                    {"fractional": [{"cat": [{"var": "$flagd.flagKey"}, {"var": "email"}]}, *FOUR]},
                    None,
                ]
            },
        },
        # No bucketing value: flagKey + targetingKey; weights that are not percentages.
        "new-welcome-banner": {
            "state": "ENABLED",
            "variants": {"true": True, "false": False},
            "defaultVariant": "false",
            "targeting": {"fractional": [["true", 1], ["false", 3]]},
        },
        # Targeting rules from the flag definition documentation.
        "fibAlgo": {
            "state": "ENABLED",
            "variants": {"recursive": "r", "memo": "m", "loop": "l", "binet": "b"},
            "defaultVariant": "recursive",
            "targeting": {
                "if": [
                    {
                        "and": [
                            {"ends_with": [{"var": "email"}, "@faas.com"]},
                            {"!": {"==": [{"var": "beta"}, "no"]}},
                        ]
                    },
                    "binet",
                    {
                        "or": [
                            {"sem_ver": [{"var": "version"}, ">=", "2.0.0"]},
                            {"in": [{"var": "country"}, ["NZ", "AU"]]},
                        ]
                    },
                    "loop",
                    {"<": [1, {"var": "age"}, 18]},
                    "memo",
                    None,
                ]
            },
        },
        "disabledFlag": {
            "state": "DISABLED",
            "variants": {"on": True, "off": False},
            "defaultVariant": "off",
        },
        "bareVar": {
            "state": "ENABLED",
            "variants": {"a": "A", "b": "B"},
            "defaultVariant": "a",
            "targeting": {"fractional": [{"var": "email"}, ["a", 50], ["b", 50]]},
        },
        "caretRange": {
            "state": "ENABLED",
            "variants": {"a": "A", "b": "B"},
            "defaultVariant": "a",
            "targeting": {"if": [{"sem_ver": [{"var": "version"}, "^", "1.0.0"]}, "b", None]},
        },
    },
}


def flagd_variant(value: str, buckets: list[list]) -> str:
    total = sum(weight for _, weight in buckets)
    point = (mmh3.hash(value.encode(), 0, signed=False) * total) >> 32
    cumulative = 0
    for name, weight in buckets:
        cumulative += weight
        if point < cumulative:
            return name
    raise AssertionError(point)


@pytest.fixture
def imported():
    return import_and_compile("flagd", FLAGS)


def test_fractional_keeps_flagds_buckets(imported):
    snapshot, conversion = imported
    assert conversion.keys["headerColor"] == "headercolor"
    for email in EMAILS:
        result = snapshot.evaluate("headercolor", {"email": email})
        assert result.variant == flagd_variant("headerColor" + email, FOUR), email
    assert snapshot.evaluate("headercolor", {"email": "x@other.com"}).variant == "red"


def test_fractional_defaults_to_flag_key_and_targeting_key(imported):
    snapshot, _ = imported
    buckets = [["on", 1], ["off", 3]]
    for index in range(300):
        key = f"user-{index}"
        expected = flagd_variant(f"new-welcome-banner{key}", buckets)
        assert snapshot.evaluate("new-welcome-banner", {"targetingKey": key}).variant == expected


@pytest.mark.parametrize(
    "context, variant",
    [
        ({"email": "a@faas.com"}, "binet"),
        ({"email": "a@faas.com", "beta": "no"}, "recursive"),
        ({"version": "2.1.0"}, "loop"),
        ({"version": "1.9.9", "country": "AU"}, "loop"),
        ({"age": 17}, "memo"),
        ({"age": 18}, "recursive"),
        ({}, "recursive"),
    ],
)
def test_json_logic_targeting_maps_onto_rules(imported, context, variant):
    snapshot, _ = imported
    assert snapshot.evaluate("fibalgo", context).variant == variant


def test_what_cannot_be_expressed_is_skipped_with_the_reason(imported):
    snapshot, conversion = imported
    assert "bare var" in conversion.skipped["bareVar"]
    assert "'^'" in conversion.skipped["caretRange"]
    assert not Flag.objects.filter(key__in=["barevar", "caretrange"]).exists()
    assert snapshot.evaluate("disabledflag", {}).reason == "DISABLED"


def test_the_cli_imports_flagd_files(tmp_path):
    project = factories.project("shop")
    factories.environment(project, "production")
    path = tmp_path / "flags.flagd.json"
    path.write_text(json.dumps(FLAGS), encoding="utf-8")
    out = run("import", str(path), "shop", "production", "--from", "flagd").stdout
    assert "! flag bareVar: not imported" in out
    assert Flag.objects.get(key="fibalgo").bucketing == "flagd"


def test_a_default_variant_that_is_a_list_is_skipped_not_a_crash():
    flag = {"variants": {"on": True, "off": False}, "defaultVariant": ["on"], "state": "ENABLED"}
    conversion = convert("flagd", {"flags": {"banner": flag}})
    assert "defaultVariant ['on'] is not one of its variants" in conversion.skipped["banner"]
