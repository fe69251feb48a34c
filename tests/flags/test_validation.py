"""Every model validation, each with an input it rejects, through the services every door uses."""

import pytest
from django.core.exceptions import ValidationError

from evaluation.documents import build_document
from flags import services
from flags.models import Flag, Rule
from tests import factories
from tests.factories import SYSTEM

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    return factories.project("shop")


def rejected(call, field: str) -> str:
    with pytest.raises(ValidationError) as caught:
        call()
    messages = caught.value.message_dict
    assert field in messages, messages
    return " ".join(messages[field])


def rule_with(condition: dict) -> dict:
    return {"rules": [{"conditions": [condition], "serve": {"variant": "on"}}]}


def test_flag_key_must_be_a_slug(project):
    message = rejected(lambda: factories.flag(project, "Not A Slug"), "key")
    assert "lowercase" in message


def test_flag_key_is_unique_per_project(project):
    factories.flag(project, "once")
    rejected(lambda: factories.flag(project, "once"), "key")
    other = factories.project("other")
    assert factories.flag(other, "once").key == "once"


def test_variant_value_of_the_wrong_type(project):
    message = rejected(
        lambda: factories.flag(
            project, "limit", type="number", variants=[{"key": "low", "value": "10"}]
        ),
        "variants",
    )
    assert "number" in message


def test_json_flag_values_are_objects(project):
    rejected(
        lambda: factories.flag(project, "cfg", type="json", variants=[{"key": "a", "value": [1]}]),
        "variants",
    )


def test_boolean_flag_variants_are_fixed(project):
    rejected(
        lambda: factories.flag(project, "b", variants=[{"key": "yes", "value": True}]),
        "variants",
    )


def test_duplicate_variant_keys(project):
    rejected(
        lambda: factories.flag(
            project,
            "dup",
            type="string",
            variants=[{"key": "a", "value": "x"}, {"key": "a", "value": "y"}],
        ),
        "variants",
    )


def test_weights_need_one_above_zero(project):
    flag = factories.flag(project, "split")
    serving = {
        "rollout": {"variants": [{"variant": "on", "weight": 0}, {"variant": "off", "weight": 0}]}
    }
    message = rejected(lambda: factories.configure(flag, defaultServe=serving), "defaultServe")
    assert "above 0" in message


def test_weights_need_not_sum_to_100(project):
    flag = factories.flag(project, "split")
    serving = {
        "rollout": {
            "variants": [{"variant": "on", "weight": 1}, {"variant": "off", "weight": 99_999}]
        }
    }
    config = factories.configure(flag, defaultServe=serving)
    document = build_document(config.environment_id)
    assert document["flags"]["split"]["defaultServe"]["rollout"]["variants"] == [
        {"variant": "on", "weight": 1},
        {"variant": "off", "weight": 99_999},
    ]


def test_negative_weight(project):
    flag = factories.flag(project, "neg")
    serving = {
        "rollout": {
            "variants": [{"variant": "on", "weight": 110}, {"variant": "off", "weight": -10}]
        }
    }
    rejected(lambda: factories.configure(flag, defaultServe=serving), "defaultServe")


def test_invalid_regex(project):
    flag = factories.flag(project, "re")
    message = rejected(
        lambda: factories.configure(
            flag, **rule_with({"attribute": "email", "operator": "matches", "values": ["(["]})
        ),
        "rules[0]",
    )
    assert "regular expression" in message


def test_invalid_semantic_version(project):
    flag = factories.flag(project, "ver")
    rejected(
        lambda: factories.configure(
            flag,
            **rule_with({"attribute": "app", "operator": "semver_gte", "values": ["1.2.banana"]}),
        ),
        "rules[0]",
    )


def test_invalid_date(project):
    flag = factories.flag(project, "date")
    rejected(
        lambda: factories.configure(
            flag, **rule_with({"attribute": "t", "operator": "after", "values": ["next tuesday"]})
        ),
        "rules[0]",
    )


def test_invalid_cidr(project):
    flag = factories.flag(project, "ip")
    rejected(
        lambda: factories.configure(
            flag, **rule_with({"attribute": "ip", "operator": "in_cidr", "values": ["10.0.0/33"]})
        ),
        "rules[0]",
    )


def test_number_operator_needs_a_number(project):
    flag = factories.flag(project, "num")
    rejected(
        lambda: factories.configure(
            flag, **rule_with({"attribute": "age", "operator": "gt", "values": ["eighteen"]})
        ),
        "rules[0]",
    )


def test_unknown_operator(project):
    flag = factories.flag(project, "op")
    message = rejected(
        lambda: factories.configure(
            flag, **rule_with({"attribute": "a", "operator": "resembles", "values": ["x"]})
        ),
        "rules[0]",
    )
    assert "resembles" in message


def test_rule_serving_a_variant_of_another_flag(project):
    factories.flag(project, "colour", type="string", variants=[{"key": "red", "value": "#f00"}])
    flag = factories.flag(project, "toggle")
    message = rejected(
        lambda: factories.configure(flag, rules=[{"conditions": [], "serve": {"variant": "red"}}]),
        "rules[0]",
    )
    assert "red" in message


def test_unknown_segment_in_a_rule(project):
    flag = factories.flag(project, "seg")
    rejected(
        lambda: factories.configure(
            flag, **rule_with({"operator": "in_segment", "values": ["nobody"]})
        ),
        "rules[0]",
    )


def test_segment_cannot_refer_to_a_segment(project):
    services.segment_create(project=project, key="inner", data={}, **SYSTEM)
    message = rejected(
        lambda: services.segment_create(
            project=project,
            key="outer",
            data={"conditions": [{"operator": "in_segment", "values": ["inner"]}]},
            **SYSTEM,
        ),
        "conditions",
    )
    assert "segment" in message


def test_segment_key_lists_must_be_strings(project):
    rejected(
        lambda: services.segment_create(
            project=project, key="s", data={"included": [1, 2]}, **SYSTEM
        ),
        "included",
    )


def test_target_of_unknown_variant(project):
    flag = factories.flag(project, "t")
    rejected(
        lambda: factories.configure(flag, targets=[{"variant": "maybe", "values": ["u1"]}]),
        "targets[0]",
    )


def test_prerequisite_on_itself_and_cycles(project):
    a = factories.flag(project, "a")
    b = factories.flag(project, "b")
    rejected(
        lambda: factories.configure(a, prerequisites=[{"flag": "a", "variants": ["on"]}]),
        "prerequisites[0]",
    )
    factories.configure(a, prerequisites=[{"flag": "b", "variants": ["on"]}])
    message = rejected(
        lambda: factories.configure(b, prerequisites=[{"flag": "a", "variants": ["on"]}]),
        "prerequisites[0]",
    )
    assert "cycle" in message


def test_prerequisite_cycle_is_per_environment(project):
    a = factories.flag(project, "a")
    b = factories.flag(project, "b")
    factories.configure(a, "development", prerequisites=[{"flag": "b", "variants": ["on"]}])
    factories.configure(b, "staging", prerequisites=[{"flag": "a", "variants": ["on"]}])


def test_prerequisite_of_unknown_variant(project):
    factories.flag(project, "base")
    flag = factories.flag(project, "top")
    rejected(
        lambda: factories.configure(flag, prerequisites=[{"flag": "base", "variants": ["up"]}]),
        "prerequisites[0]",
    )


def test_off_variant_must_exist(project):
    flag = factories.flag(project, "off")
    rejected(lambda: factories.configure(flag, offVariant="dim"), "offVariant")


def test_variant_in_use_cannot_be_removed(project):
    flag = factories.flag(
        project,
        "colour",
        type="string",
        variants=[{"key": "red", "value": "r"}, {"key": "blue", "value": "b"}],
    )
    factories.configure(flag, rules=[{"conditions": [], "serve": {"variant": "blue"}}])
    rejected(
        lambda: services.flag_update(
            flag=flag, data={"variants": [{"key": "red", "value": "r"}]}, **SYSTEM
        ),
        "variants",
    )
    assert list(flag.variants.values_list("key", flat=True)) == ["red", "blue"]


def test_failed_configuration_change_writes_nothing(project):
    flag = factories.flag(project, "atomic")
    factories.configure(flag, rules=[{"conditions": [], "serve": {"variant": "on"}}])
    with pytest.raises(ValidationError):
        factories.configure(
            flag,
            enabled=True,
            rules=[
                {"conditions": [], "serve": {"variant": "off"}},
                {
                    "conditions": [{"attribute": "x", "operator": "bogus"}],
                    "serve": {"variant": "on"},
                },
            ],
        )
    config = factories.config(flag)
    assert config.enabled is False
    assert list(Rule.objects.filter(flag=flag).values_list("serve_variant", flat=True)) == ["on"]


def test_flag_type_cannot_change(project):
    flag = factories.flag(project, "typed")
    rejected(lambda: services.flag_update(flag=flag, data={"type": "string"}, **SYSTEM), "type")
    assert Flag.objects.get(pk=flag.pk).type == "boolean"
