"""One writer for a flag's targeting: the same change, whatever the door, is the same write.

The admin's flag page, the API and the command line change a configuration through
`services.flag_config_update`; rules keep their identity (`id`) through every door; a
rollout is stored in one format, the flag document's list.
"""

import importlib
import json

import pytest
from django.apps import apps
from django.test import Client
from rest_framework.test import APIClient

from evaluation.documents import flag_state
from flags.models import AuditEntry, Rule
from tests import factories
from tests.evaluation.document_loader import api_key
from tests.flags.command_line import run

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
    migration = importlib.import_module("flags.migrations.0004_rollout_as_list")
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
        "conditions": [{"attribute": "country", "operator": "in", "values": ["US"]}],
        "serve": {"variant": "on"},
    },
    {
        "name": "beta",
        "conditions": [{"attribute": "plan", "operator": "equals", "values": ["beta"]}],
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
    return response.json()["ruleId"]


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
