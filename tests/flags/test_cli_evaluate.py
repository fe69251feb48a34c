"""`manage.py flags evaluate`: the server's engine, contexts from arguments, JSON or a file."""

import json

import pytest

from evaluation.documents import build_document
from evaluation.engine import compile_document
from tests import factories
from tests.flags.command_line import fails, run

pytestmark = pytest.mark.django_db


@pytest.fixture
def banner():
    project = factories.project("shop")
    flag = factories.flag(
        project,
        "banner",
        type="string",
        variants=[{"key": "plain", "value": "Hi"}, {"key": "sale", "value": "Sale!"}],
    )
    factories.configure(
        flag,
        "staging",
        enabled=True,
        targets=[{"variant": "sale", "values": ["vip"]}],
        rules=[
            {
                "name": "Pro plan, large teams",
                "conditions": [
                    {"attribute": "plan", "operator": "equals", "values": ["pro"]},
                    {"attribute": "seats", "operator": "gt", "values": [10]},
                ],
                "serve": {"variant": "sale"},
            }
        ],
    )
    return flag


def test_evaluate_prints_value_variant_and_reason(banner):
    out = run("evaluate", "shop/banner", "staging", "targetingKey=vip")
    assert out.stdout.splitlines() == [
        'value:   "Sale!"',
        "variant: sale",
        "reason:  TARGETING_MATCH",
    ]


def test_attributes_take_text_or_json_and_may_follow_options(banner):
    out = run("evaluate", "shop/banner", "staging", "--type", "string", "plan=pro", "seats:=12")
    rule_id = banner.rules.get().key
    assert out.stdout.splitlines()[1:] == [
        "variant: sale",
        f"reason:  TARGETING_MATCH (rule {rule_id})",
    ]
    out = run("evaluate", "shop/banner", "staging", "plan=pro", "seats=12")
    assert out.stdout.splitlines()[1] == "variant: plain"  # "12" is text, not a number


def test_context_as_json_or_from_a_file(banner, tmp_path):
    context = {"targetingKey": "u-1", "plan": "pro", "seats": 20}
    out = run("evaluate", "shop/banner", "staging", "--context", json.dumps(context), "--json")
    result = json.loads(out.stdout)
    assert (result["value"], result["reason"]) == ("Sale!", "TARGETING_MATCH")
    path = tmp_path / "context.json"
    path.write_text(json.dumps(context))
    out = run("evaluate", "shop/banner", "staging", "--context-file", str(path), "seats:=1")
    assert out.stdout.splitlines()[2] == "reason:  DEFAULT"
    out = run("evaluate", "shop/banner", "staging", "--context-file", "-", stdin='{"plan": "x"}')
    assert out.stdout.splitlines()[1] == "variant: plain"


def test_the_answer_is_the_server_engines(banner):
    context = {"targetingKey": "someone", "plan": "pro", "seats": 11}
    environment = factories.environment(banner.project, "staging")
    expected = compile_document(build_document(environment.pk)).evaluate("banner", context)
    out = run("evaluate", "shop/banner", "staging", "--context", json.dumps(context), "--json")
    assert json.loads(out.stdout) == expected.to_dict()


def test_a_disabled_flag_serves_its_off_variant(banner):
    out = run("evaluate", "shop/banner", "production", "targetingKey=vip")
    assert out.stdout.splitlines()[2] == "reason:  DISABLED"


def test_an_evaluation_error_is_printed_and_exits_1(banner):
    message = fails("evaluate", "shop/banner", "staging", "--type", "boolean", code=1)
    assert message == "evaluation failed: TYPE_MISMATCH"


def test_bad_contexts_fail_with_exit_code_2(banner, tmp_path):
    assert fails("evaluate", "shop/banner", "staging", "--context", "{nope").startswith(
        "invalid JSON in --context:"
    )
    assert fails("evaluate", "shop/banner", "staging", "--context", "[1]") == (
        "the context must be a JSON object"
    )
    assert fails("evaluate", "shop/banner", "staging", "seats:=twelve").startswith(
        "invalid JSON in attribute 'seats':"
    )
    assert fails("evaluate", "shop/banner", "staging", "=x") == (
        "give context attributes as NAME=VALUE or NAME:=JSON, not '=x'"
    )
    missing = tmp_path / "missing.json"
    assert fails("evaluate", "shop/banner", "staging", "--context-file", str(missing)) == (
        f"cannot read {missing}: No such file or directory"
    )
    assert fails(
        "evaluate", "shop/banner", "staging", "--context", "{}", "--context-file", str(missing)
    ) == ("give --context or --context-file, not both")


def test_evaluate_an_unknown_flag_or_environment_fails(banner):
    assert fails("evaluate", "shop/nope", "staging") == "unknown flag 'nope' in project 'shop'"
    assert fails("evaluate", "shop/banner", "qa").startswith("unknown environment 'qa'")


def test_evaluate_as_an_outsider_is_denied(banner):
    outsider = factories.user()
    assert fails("evaluate", "shop/banner", "staging", "--as", outsider.username).startswith(
        "permission denied:"
    )
