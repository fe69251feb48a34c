"""Patterns RE2 cannot compile are refused on save, by the API and by the admin, by name.

Python's `re` took these; RE2 (linear time, no backtracking) has no look-around and no
backreferences, and refuses repetition counts past 1000. What the doors save is what the
engine compiles, since both call the engine's own check.
"""

from __future__ import annotations

import json

import pytest

from flags.models import Rule
from tests import factories
from tests.flags.test_admin import as_role, errors_of, new_rule, post_flag_page
from tests.flags.test_api_management import client_for

pytestmark = pytest.mark.django_db

REFUSED = {
    "look-ahead": ("^(?!admin)", "invalid perl operator: (?!"),
    "look-behind": ("(?<=@)example", "invalid perl operator: (?<"),
    "backreference": (r"(a)\1", "invalid escape sequence: \\1"),
    "possessive": ("a++", "bad repetition operator: ++"),
    "huge repetition": ("a{1001}", "invalid repetition size: {1001}"),
    "lone surrogate": ("a\ud800", "not valid Unicode"),
}


@pytest.fixture
def project():
    return factories.project("shop")


@pytest.mark.parametrize(("pattern", "message"), REFUSED.values(), ids=REFUSED)
def test_the_api_refuses_a_pattern_re2_cannot_compile(project, pattern, message):
    api = client_for(factories.member(project, "admin"))
    factories.flag(project, "guarded")
    url = "/api/v1/projects/shop/flags/guarded/environments/development"
    rule = {
        "conditions": [{"attribute": "email", "operator": "matches", "values": [pattern]}],
        "serve": {"variant": "on"},
    }
    body = json.dumps({"rules": [rule]}, ensure_ascii=True)
    response = api.patch(url, body, content_type="application/json")
    assert response.status_code == 400, response.content
    answer = response.json()
    # The field named is the rule, or (for text that is not valid Unicode, refused before
    # the rule is compiled) the exact value inside it.
    fields = [name for name in answer["fields"] if name.startswith("rules[0]")]
    assert fields, answer
    assert (
        "invalid regular expression" in answer["detail"] or "not valid Unicode" in answer["detail"]
    ), answer
    assert message in answer["fields"][fields[0]][0], answer
    assert api.get(url).json()["rules"] == []


@pytest.mark.parametrize(("pattern", "message"), list(REFUSED.values())[:5], ids=list(REFUSED)[:5])
def test_the_admin_shows_a_form_error_for_a_pattern_re2_cannot_compile(
    client, project, pattern, message
):
    checkout = factories.flag(project, "new-checkout")
    as_role(client, project, "editor")
    conditions = json.dumps([{"attribute": "email", "operator": "matches", "values": [pattern]}])
    response = post_flag_page(client, checkout, **new_rule("development", 0, conditions=conditions))
    assert response.status_code == 200  # the form again, with its error
    errors = errors_of(response)
    assert "condition 1: values: invalid regular expression" in errors, errors
    assert message.split(":")[0] in errors  # (errors_of shows a repr: backslashes doubled)
    assert not Rule.objects.filter(flag=checkout).exists()


def test_a_pattern_re2_compiles_is_saved_and_matches_in_linear_time(project):
    api = client_for(factories.member(project, "admin"))
    factories.flag(project, "pathological")
    url = "/api/v1/projects/shop/flags/pathological/environments/development"
    rule = {
        "conditions": [{"attribute": "email", "operator": "matches", "values": ["(a+)+$"]}],
        "serve": {"variant": "on"},
    }
    response = api.patch(url, {"rules": [rule], "enabled": True}, format="json")
    assert response.status_code == 200, response.content
