"""One writer for a flag's targeting: the same change, whatever the door, is the same write.

The admin's flag page, the API and the command line change a configuration through
`services.flag_config_update`; rules keep their identity (`id`) through every door; a
rollout is stored in one format, the flag document's list.
"""

import importlib
import json

import pytest
from django.apps import apps
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from rest_framework.test import APIClient

from evaluation.documents import flag_state
from flags.models import AuditEntry, Rule
from tests import factories
from tests.evaluation.document_loader import api_key
from tests.flags.command_line import fails, run
from tests.flags.test_admin import flag_url
from tests.flags.test_admin import form_data as admin_form_data
from tests.review_steps import confirm_review, is_review

pytestmark = pytest.mark.django_db


def test_rollouts_stored_by_the_old_admin_become_the_documents_list():
    project = factories.project("shop")
    flag = factories.flag(project, "checkout")
    config = factories.config(flag, "staging")
    development = factories.environment(project, "development")
    rule = Rule.objects.create(flag=flag, environment=development, serve_variant="on")
    type(config).objects.filter(pk=config.pk).update(
        serve_variant="", rollout={"off": 75, "on": 25}
    )
    Rule.objects.filter(pk=rule.pk).update(rollout={})
    migration = importlib.import_module("flags.migrations.0006_rollout_as_list")
    migration.forwards(apps, None)
    config.refresh_from_db()
    rule.refresh_from_db()
    # In the flag's variant order (on, off): the order the document gave them before.
    assert config.rollout == [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}]
    assert rule.rollout == []


# --- Rule identity --------------------------------------------------------------------------

RULES = [
    {
        "name": "US",
        "conditions": [
            {"attribute": "country", "operator": "in", "values": ["US"], "negate": False}
        ],
        "serve": {"variant": "on"},
    },
    {
        "name": "beta",
        "conditions": [
            {"attribute": "plan", "operator": "equals", "values": ["beta"], "negate": False}
        ],
        "serve": {
            "rollout": {
                "bucketBy": "targetingKey",
                "variants": [{"variant": "on", "weight": 30}, {"variant": "off", "weight": 70}],
            }
        },
    },
]


@pytest.fixture
def project():
    return factories.project("shop")


@pytest.fixture
def checkout(project):
    flag = factories.flag(project, "checkout")
    factories.configure(flag, "production", enabled=True, rules=RULES)
    return flag


def api_for(user) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def config_url(flag, environment_key="production") -> str:
    return f"/api/v1/projects/{flag.project.key}/flags/{flag.key}/environments/{environment_key}"


def rule_ids(flag, environment_key="production") -> list[str]:
    return [
        rule["id"]
        for rule in flag_state(flag, factories.environment(flag.project, environment_key))["rules"]
    ]


def rule_rows(flag, environment_key="production") -> list[tuple[int, str]]:
    rows = Rule.objects.filter(flag=flag, environment__key=environment_key)
    return list(rows.values_list("pk", "key"))


def evaluated_rule_id(flag, environment_key, context) -> str:
    secret = api_key(factories.environment(flag.project, environment_key), "server")
    response = Client().post(
        f"/api/v1/evaluate/{flag.key}",
        json.dumps({"context": context}),
        content_type="application/json",
        HTTP_AUTHORIZATION=f"Bearer {secret}",
    )
    assert response.status_code == 200, response.content
    return response.json().get("ruleId")


def test_an_api_patch_with_the_same_rules_keeps_them(project, checkout):
    api = api_for(factories.member(project, "admin"))
    before_rows = rule_rows(checkout)
    before_rule_id = evaluated_rule_id(
        checkout, "production", {"targetingKey": "u", "country": "US"}
    )
    read = api.get(config_url(checkout)).json()
    assert [rule["id"] for rule in read["rules"]] == [key for _, key in before_rows]
    response = api.patch(config_url(checkout), {"rules": read["rules"]}, format="json")
    assert response.status_code == 200, response.content
    assert rule_rows(checkout) == before_rows  # not deleted and made again
    after = evaluated_rule_id(checkout, "production", {"targetingKey": "u", "country": "US"})
    assert after == before_rule_id


def test_an_api_patch_edits_a_rule_in_place_adds_and_removes_by_id(project, checkout):
    api = api_for(factories.member(project, "admin"))
    first, second = api.get(config_url(checkout)).json()["rules"]
    first["conditions"][0]["values"] = ["US", "CA"]
    added = {"name": "everyone", "serve": {"variant": "off"}}
    response = api.patch(config_url(checkout), {"rules": [added, first]}, format="json")
    assert response.status_code == 200, response.content
    rules = response.json()["rules"]
    assert rules[1]["id"] == first["id"]
    assert rules[1]["conditions"][0]["values"] == ["US", "CA"]
    assert rules[0]["id"] not in (first["id"], second["id"])
    assert second["id"] not in rule_ids(checkout)
    entry = AuditEntry.objects.filter(flag_key="checkout").first()
    assert [rule["id"] for rule in entry.before["rules"]] == [first["id"], second["id"]]
    assert [rule["id"] for rule in entry.after["rules"]] == [rules[0]["id"], first["id"]]


def test_a_rule_id_given_twice_or_badly_is_a_400_naming_it(project, checkout):
    api = api_for(factories.member(project, "admin"))
    rules = api.get(config_url(checkout)).json()["rules"]
    twice = api.patch(config_url(checkout), {"rules": [rules[0], rules[0]]}, format="json")
    assert twice.status_code == 400
    assert "rules[1]" in twice.content.decode()
    for bad in ("Not A Key", "\ud800", "x" * 65, 7):
        body = json.dumps({"rules": [{**rules[0], "id": bad}]})  # "\ud800" escaped
        response = api.patch(config_url(checkout), body, content_type="application/json")
        assert response.status_code == 400, (bad, response.content)
        assert "id" in response.content.decode()
    assert rule_ids(checkout) == [rule["id"] for rule in rules]


def test_rule_ids_survive_export_and_import(project, checkout, tmp_path):
    ids = rule_ids(checkout)
    path = tmp_path / "production.json"
    run("export", "shop", "production", "--output", str(path))
    factories.configure(checkout, "production", rules=[])
    run("import", str(path), "shop", "production", "--existing", "overwrite")
    assert rule_ids(checkout) == ids
    document = json.loads(path.read_text())
    assert [rule["id"] for rule in document["flags"]["checkout"]["rules"]] == ids


def test_promotion_keeps_the_rules_ids(project, checkout):
    ids = rule_ids(checkout)
    run("promote", "shop", "production", "staging", "checkout", "--yes")
    assert rule_ids(checkout, "staging") == ids
    run("promote", "shop", "production", "staging", "checkout", "--yes")  # again: nothing new
    assert rule_ids(checkout, "staging") == ids


# --- The same change from every door --------------------------------------------------------


def open_production_to(project, role="publisher"):
    user = factories.member(project, role)
    client = Client()
    client.force_login(user)
    return user, client


def production_form(client, flag) -> dict:
    return admin_form_data(client.get(flag_url(flag)))


def admin_toggle(project, flag):
    _, client = open_production_to(project)
    data = production_form(client, flag)
    environment = factories.environment(project, "production")
    [index] = [
        key.split("-")[1]
        for key, value in data.items()
        if key.startswith("configs-")
        and key.endswith("-id")
        and value == str(factories.config(flag, "production").pk)
    ]
    data[f"configs-{index}-enabled"] = "on"
    review = client.post(flag_url(flag), data)
    assert is_review(review) and not factories.config(flag, "production").enabled
    response = confirm_review(client, review, "launch")
    assert response.status_code == 302, response.content[:2000]
    assert environment.pk


def api_toggle(project, flag):
    user, _ = open_production_to(project)
    response = api_for(user).patch(config_url(flag), {"enabled": True}, format="json")
    assert response.status_code == 200, response.content


def cli_toggle(project, flag):
    run("toggle", f"{project.key}/{flag.key}", "production", "on")


DOORS = {"admin": admin_toggle, "api": api_toggle, "cli": cli_toggle}


def outcome(flag) -> dict:
    """What a user sees of a change: its audit entry, version record and evaluation."""
    entry = AuditEntry.objects.filter(object_type="flag_config", flag_key=flag.key).first()
    record = factories.config(flag, "production").versions.first()
    context = {"targetingKey": "u-1", "country": "US"}
    secret = api_key(factories.environment(flag.project, "production"), "server")
    answer = (
        Client()
        .post(
            f"/api/v1/evaluate/{flag.key}",
            json.dumps({"context": context}),
            content_type="application/json",
            HTTP_AUTHORIZATION=f"Bearer {secret}",
        )
        .json()
    )
    return {
        "audit": (entry.action, entry.object_key, entry.before, entry.after),
        "version": (record.version, record.action, record.state),
        "evaluation": answer,
    }


def test_switching_production_on_is_the_same_change_from_every_door():
    outcomes = {}
    for door, switch in DOORS.items():
        project = factories.project(f"shop-{door}")
        flag = factories.flag(project, "checkout")
        factories.configure(flag, "production", rules=[{**RULES[0], "id": "us"}])
        switch(project, flag)
        outcomes[door] = outcome(flag)
    assert outcomes["admin"] == outcomes["api"] == outcomes["cli"]
    action, key, before, after = outcomes["api"]["audit"]
    assert (action, key, before["enabled"], after["enabled"]) == (
        "enable",
        "checkout/production",
        False,
        True,
    )
    assert outcomes["api"]["version"][:2] == (3, "enable")
    assert outcomes["api"]["evaluation"]["ruleId"] == "us"
    sources = AuditEntry.objects.filter(action="enable").values_list("source", flat=True)
    assert sorted(sources) == ["admin", "api", "cli"]


def rules_form_index(data: dict, rule: Rule) -> str:
    [index] = [
        key.split("-")[1]
        for key, value in data.items()
        if key.startswith("rules-") and key.endswith("-id") and value == str(rule.pk)
    ]
    return index


def test_editing_a_rule_in_the_admin_is_the_apis_edit_and_keeps_its_identity(
    project, checkout, django_capture_on_commit_callbacks
):
    rows = rule_rows(checkout)
    ruled = evaluated_rule_id(checkout, "production", {"targetingKey": "u", "country": "CA"})
    _, client = open_production_to(project)
    data = production_form(client, checkout)
    index = rules_form_index(data, Rule.objects.get(key=rows[0][1]))
    conditions = [
        {"attribute": "country", "operator": "in", "values": ["US", "CA"], "negate": False}
    ]
    data[f"rules-{index}-conditions"] = json.dumps(conditions)
    review = client.post(flag_url(checkout), data)
    assert is_review(review)
    with django_capture_on_commit_callbacks(execute=True):  # caches hear of the change
        response = confirm_review(client, review, "Canada too")
    assert response.status_code == 302, response.content[:2000]
    assert rule_rows(checkout) == rows  # changed in place, not deleted and made again
    assert ruled != rows[0][1]  # Canada matched no rule before the change
    assert (
        evaluated_rule_id(checkout, "production", {"targetingKey": "u", "country": "CA"})
        == rows[0][1]
    )
    admin_entry = AuditEntry.objects.filter(object_type="flag_config").first()
    # The API's same edit, on a twin flag, is audited and recorded the same way.
    twin = factories.flag(project, "twin")
    factories.configure(
        twin,
        "production",
        enabled=True,
        rules=[{**r, "id": k} for r, (_, k) in zip(RULES, rows, strict=True)],
    )
    api = api_for(factories.member(project, "admin"))
    rules = api.get(config_url(twin)).json()["rules"]
    rules[0]["conditions"] = conditions
    assert api.patch(config_url(twin), {"rules": rules}, format="json").status_code == 200
    api_entry = AuditEntry.objects.filter(object_type="flag_config").first()
    assert api_entry.action == admin_entry.action == "update"
    assert api_entry.after["rules"] == admin_entry.after["rules"]
    admin_record = factories.config(checkout, "production").versions.first()
    api_record = factories.config(twin, "production").versions.first()
    assert (admin_record.action, admin_record.state["rules"]) == (
        api_record.action,
        api_record.state["rules"],
    )


def test_an_admin_save_that_changes_nothing_keeps_every_rule(project, checkout):
    rows = rule_rows(checkout)
    _, client = open_production_to(project)
    response = client.post(flag_url(checkout), production_form(client, checkout))
    assert response.status_code == 302
    assert rule_rows(checkout) == rows
    assert not AuditEntry.objects.filter(object_type="flag_config", source="admin").exists()


def test_a_stale_flag_page_saves_nothing_and_says_why(project, checkout):
    _, client = open_production_to(project)
    data = production_form(client, checkout)
    data["name"] = "Renamed"
    index = rules_form_index(data, Rule.objects.filter(flag=checkout).first())
    data[f"rules-{index}-name"] = "edited"
    factories.configure(checkout, "production", enabled=False)  # someone else, meanwhile
    audits = AuditEntry.objects.count()
    response = client.post(flag_url(checkout), data)
    assert response.status_code == 200
    assert "changed" in response.content.decode() and "Reload" in response.content.decode()
    checkout.refresh_from_db()
    assert checkout.name != "Renamed"
    assert not Rule.objects.filter(flag=checkout, name="edited").exists()
    assert AuditEntry.objects.count() == audits


def test_a_flag_page_save_costs_few_queries(project):
    """Switching production on and renaming a rule, with three environments of two rules."""
    flag = factories.flag(project, "checkout")
    for environment in ("development", "staging", "production"):
        factories.configure(flag, environment, rules=RULES)  # six rules in all
    _, client = open_production_to(project)
    data = production_form(client, flag)
    production = factories.config(flag, "production")
    [index] = [
        key.split("-")[1]
        for key, value in data.items()
        if key.startswith("configs-") and key.endswith("-id") and value == str(production.pk)
    ]
    data[f"configs-{index}-enabled"] = "on"
    rule = Rule.objects.filter(flag=flag, environment__key="production").first()
    data[f"rules-{rules_form_index(data, rule)}-name"] = "US and only US"
    review = client.post(flag_url(flag), data)
    assert is_review(review)
    with CaptureQueriesContext(connection) as queries:  # the reviewed save
        response = confirm_review(client, review, "launch")
    assert response.status_code == 302, response.content[:2000]
    assert factories.config(flag, "production").enabled is True

    assert len(queries) <= 40, "\n".join(q["sql"][:110] for q in queries)


@pytest.mark.parametrize("bad", ["Not A Key", "\ud800", "x" * 65, 7, "a\x00b"])
def test_an_import_with_a_bad_rule_id_fails_cleanly_and_writes_nothing(
    project, checkout, tmp_path, bad
):
    ids = rule_ids(checkout)
    path = tmp_path / "production.json"
    run("export", "shop", "production", "--output", str(path))
    document = json.loads(path.read_text())
    document["flags"]["checkout"]["rules"][0]["id"] = bad
    document["flags"]["checkout"]["enabled"] = False
    path.write_text(json.dumps(document))  # "\ud800" and NUL escaped, as a file holds them
    message = fails("import", str(path), "shop", "production", "--existing", "overwrite")
    assert "rules" in message
    assert rule_ids(checkout) == ids
    assert factories.config(checkout, "production").enabled is True


def test_rules_made_before_keys_keep_their_row_id_as_id(project, checkout):
    rule = Rule.objects.filter(flag=checkout).first()
    Rule.objects.filter(pk=rule.pk).update(key="")
    importlib.import_module("flags.migrations.0007_rule_key").backfill(apps, None)
    rule.refresh_from_db()
    assert rule.key == str(rule.pk)  # the ruleId evaluations reported for it until now
    assert evaluated_rule_id(checkout, "production", {"targetingKey": "u", "country": "US"}) == (
        str(rule.pk)
    )
