"""The serving summary in words: the flag list's short form and the flag page's sentence."""

import pytest

from flags.admin.summary import sentence, sentence_html, short
from flags.models import Flag, FlagConfig, Prerequisite, Rule, Target

THIRTY = [{"variant": "on", "weight": 30}, {"variant": "off", "weight": 70}]
PRO_IN_US = [
    {"attribute": "country", "operator": "in", "values": ["US"]},
    {"attribute": "plan", "operator": "equals", "values": ["pro"]},
]


def config(enabled=True, serve="on", rollout=None, off="off", bucket_by="targetingKey"):
    return FlagConfig(
        enabled=enabled,
        serve_variant="" if rollout else serve,
        rollout=rollout or [],
        off_variant=off,
        bucket_by=bucket_by,
    )


def rule(name="", serve="on", rollout=None, position=0):
    return Rule(
        name=name,
        conditions=PRO_IN_US,
        serve_variant="" if rollout else serve,
        rollout=rollout or [],
        position=position,
    )


# --- The short form ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("row", "rules", "expected"),
    [
        (config(enabled=False), [], "Off"),
        (config(enabled=False, rollout=THIRTY), [rule("Pro in US")], "Off"),
        (config(), [], "On"),
        (config(rollout=THIRTY), [], "30% on"),
        (config(), [rule("a"), rule("b")], "On · 2 rules"),
        (config(rollout=THIRTY), [rule("Pro in US")], "30% on · 1 rule"),
        (config(serve="off"), [], "Serves off"),
        (config(serve="blue"), [], "Serves blue"),
    ],
)
def test_short_form_says_what_an_environment_serves(row, rules, expected):
    assert short(row, rules) == expected


def test_short_form_of_a_rollout_without_an_on_variant_names_the_first_two_shares():
    three = [
        {"variant": "red", "weight": 1},
        {"variant": "green", "weight": 1},
        {"variant": "blue", "weight": 2},
    ]
    assert short(config(rollout=three)) == "25% red / 25% green / …"
    two = [{"variant": "red", "weight": 1}, {"variant": "green", "weight": 3}]
    assert short(config(rollout=two)) == "25% red / 75% green"


def test_short_form_counts_targeted_keys_and_prerequisites():
    targets = [Target(variant="on", values=["u1", "u2"]), Target(variant="off", values=["u3"])]
    required = [Prerequisite(required_flag=Flag(key="login"), variants=["on"])]
    assert short(config(), [], targets, required) == "On · 3 targets · 1 prerequisite"
    assert short(config(), [], [Target(variant="on", values=["u1"])]) == "On · 1 target"


# --- The sentence ------------------------------------------------------------------------


def test_sentence_of_an_environment_that_is_off_names_the_off_variant():
    assert sentence(config(enabled=False)) == "Off → serves off"
    assert sentence(config(enabled=False, off="control")) == "Off → serves control"


def test_sentence_reads_rules_in_order_then_everyone_else():
    rules = [rule("Staff", position=2), rule("Pro in US", position=1)]
    assert sentence(config(rollout=THIRTY), rules) == (
        "On · rule “Pro in US” → on · rule “Staff” → on · everyone else: 30% on / 70% off"
    )


def test_sentence_without_rules_says_what_everyone_gets():
    assert sentence(config()) == "On → serves on"
    assert sentence(config(rollout=THIRTY)) == "On → serves 30% on / 70% off"
    by_company = config(rollout=THIRTY, bucket_by="companyId")
    assert sentence(by_company) == "On → serves 30% on / 70% off by companyId"


def test_sentence_names_unnamed_rules_by_their_place_and_shows_their_rollout():
    rules = [rule(rollout=[{"variant": "on", "weight": 1}, {"variant": "off", "weight": 2}])]
    assert sentence(config(serve="off"), rules) == (
        "On · rule 1 → 33.333% on / 66.667% off · everyone else: off"
    )


def test_sentence_puts_prerequisites_and_targets_before_rules():
    targets = [Target(variant="on", values=["u1", "u2"])]
    required = [Prerequisite(required_flag=Flag(key="login"), variants=["on", "beta"])]
    assert sentence(config(serve="off"), [rule("Pro")], targets, required) == (
        "On · only if login serves on or beta (otherwise off) · 2 targeted keys → on"
        " · rule “Pro” → on · everyone else: off"
    )


def test_sentence_html_puts_rule_names_in_emphasis_and_escapes_them():
    html = sentence_html(config(), [rule("<b>Pro</b> & co")])
    assert html == ("On · rule <em>&lt;b&gt;Pro&lt;/b&gt; &amp; co</em> → on · everyone else: on")


def test_weights_that_cannot_be_shared_read_as_nothing_served():
    broken = config(rollout=[{"variant": "on", "weight": 0}])
    assert sentence(broken) == "On → serves nothing"
    assert short(broken) == "Serves nothing"
