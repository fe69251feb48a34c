"""`manage.py flags projects | environments | list | show`: tables, JSON, roles, bad names."""

import json

import pytest

from tests import factories
from tests.flags.command_line import fails, run

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    project = factories.project("shop", name="Shop")
    factories.flag(project, "new-checkout")
    factories.flag(
        project,
        "banner",
        type="string",
        variants=[{"key": "a", "value": "A"}, {"key": "b", "value": "B"}],
    )
    return project


def test_projects_prints_a_table(project):
    lines = run("projects").stdout.splitlines()
    assert lines[0].split() == ["KEY", "NAME", "ENVIRONMENTS", "FLAGS"]
    assert lines[1].split() == ["shop", "Shop", "development,", "staging,", "production", "2"]


def test_projects_json_is_for_scripts(project):
    rows = json.loads(run("projects", "--json").stdout)
    assert rows == [
        {
            "key": "shop",
            "name": "Shop",
            "environments": ["development", "staging", "production"],
            "flags": 2,
        }
    ]


def test_projects_as_a_user_shows_only_their_projects(project):
    factories.project("other")
    viewer = factories.member(project, "viewer")
    rows = json.loads(run("projects", "--json", "--as", viewer.username).stdout)
    assert [row["key"] for row in rows] == ["shop"]


def test_as_an_unknown_user_fails(project):
    assert fails("projects", "--as", "nobody") == "unknown user 'nobody'"


def test_environments_lists_keys_and_protection(project):
    lines = run("environments", "shop").stdout.splitlines()
    assert lines[0].split() == ["KEY", "NAME", "PROTECTED", "VERSION"]
    assert lines[3].split()[:3] == ["production", "Production", "yes"]
    rows = json.loads(run("environments", "shop", "--json").stdout)
    assert [(row["key"], row["protected"]) for row in rows] == [
        ("development", False),
        ("staging", False),
        ("production", True),
    ]


def test_environments_of_an_unknown_project_fails(project):
    assert fails("environments", "nope") == "unknown project 'nope'"


def test_list_shows_each_flag_on_or_off_per_environment(project):
    factories.configure(project.flags.get(key="new-checkout"), "staging", enabled=True)
    factories.configure(
        project.flags.get(key="banner"),
        "production",
        defaultServe={
            "rollout": {
                "variants": [{"variant": "a", "weight": 50}, {"variant": "b", "weight": 50}]
            }
        },
    )
    lines = run("list", "shop").stdout.splitlines()
    assert lines[0].split() == ["FLAG", "TYPE", "DEVELOPMENT", "STAGING", "PRODUCTION"]
    assert lines[1].split() == ["banner", "string", "off", "off", "off", "(rollout)"]
    assert lines[2].split() == ["new-checkout", "boolean", "off", "on", "off"]


def test_list_json_and_archived_flags(project):
    factories.flag(project, "old")
    run("archive", "shop/old")
    rows = json.loads(run("list", "shop", "--json").stdout)
    assert [row["key"] for row in rows] == ["banner", "new-checkout"]
    assert rows[1]["environments"]["production"] == {
        "enabled": False,
        "serves": "on",
        "summary": "off",
    }
    archived = json.loads(run("list", "shop", "--archived", "--json").stdout)
    assert [row["key"] for row in archived] == ["banner", "new-checkout", "old"]
    assert "old (archived)" in run("list", "shop", "--archived").stdout


def test_list_as_a_user_without_a_role_is_denied(project):
    outsider = factories.user()
    message = fails("list", "shop", "--as", outsider.username)
    assert message.startswith("permission denied:")
    assert "needs the viewer role" in message


def test_show_prints_the_flag_document_entry(project):
    factories.configure(project.flags.get(key="new-checkout"), "staging", enabled=True)
    entry = json.loads(run("show", "shop/new-checkout", "staging").stdout)
    assert entry["enabled"] is True
    assert entry["variants"] == [{"key": "on", "value": True}, {"key": "off", "value": False}]


def test_show_names_what_is_unknown(project):
    assert fails("show", "shop/nope", "staging") == "unknown flag 'nope' in project 'shop'"
    assert fails("show", "shop/banner", "qa") == (
        "unknown environment 'qa' in project 'shop' (one of: development, staging, production)"
    )
    assert fails("show", "banner", "staging") == "name a flag as PROJECT/FLAG, not 'banner'"
