"""A rollout's own salt through the management API, the store and the engine."""

import json

import pytest

from evaluation.documents import build_document
from evaluation.engine import compile_document
from flags.models import AuditEntry, Environment
from tests import factories
from tests.flags.test_api_hostile_input import assert_refused, send
from tests.flags.test_api_management import client_for

pytestmark = pytest.mark.django_db

URL = "/api/v1/projects/shop/flags/checkout/environments/development"
WEIGHTS = [{"variant": "on", "weight": 50}, {"variant": "off", "weight": 50}]


@pytest.fixture
def api():
    project = factories.project("shop")
    factories.flag(project, "checkout")
    client = client_for(factories.member(project, "admin"))
    client.raise_request_exception = False  # a 500 is an answer to assert on, not a crash
    return client


def served(**fields) -> dict:
    return {"rollout": {"bucketBy": "targetingKey", "variants": WEIGHTS, **fields}}


def answers() -> list:
    environment = Environment.objects.get(project__key="shop", key="development")
    snapshot = compile_document(build_document(environment.pk))
    return [snapshot.evaluate("checkout", {"targetingKey": f"u{i}"}).value for i in range(200)]


def test_a_rollout_with_a_salt_round_trips_and_buckets_by_it(api):
    assert (
        api.patch(URL, {"enabled": True, "defaultServe": served()}, format="json").status_code
        == 200
    )
    by_flag = answers()
    rule = {"id": "beta", "conditions": [], "serve": served(salt="experiment-7")}
    response = api.patch(URL, {"defaultServe": served(salt="experiment-7")}, format="json")
    assert response.status_code == 200, response.content
    body = api.get(URL).json()
    assert body["defaultServe"] == served(salt="experiment-7")
    by_salt = answers()
    assert by_salt != by_flag
    response = api.patch(URL, {"defaultServe": served(), "rules": [rule]}, format="json")
    assert response.status_code == 200, response.content
    assert api.get(URL).json()["rules"][0]["serve"] == served(salt="experiment-7")
    assert answers() == by_salt  # the rule's rollout, salted the same way, serves everyone


def test_new_weights_without_a_salt_keep_the_rollouts_salt_and_an_empty_one_drops_it(api):
    rule = {"id": "beta", "conditions": [], "serve": served(salt="g1")}
    body = {"enabled": True, "defaultServe": served(salt="g2"), "rules": [rule]}
    assert api.patch(URL, body, format="json").status_code == 200
    wider = [{"variant": "on", "weight": 70}, {"variant": "off", "weight": 30}]
    rule = {"id": "beta", "conditions": [], "serve": {"rollout": {"variants": wider}}}
    body = {"defaultServe": {"rollout": {"variants": wider}}, "rules": [rule]}
    assert api.patch(URL, body, format="json").status_code == 200
    config = api.get(URL).json()
    assert config["defaultServe"]["rollout"]["salt"] == "g2"
    assert config["rules"][0]["serve"]["rollout"] == {
        "bucketBy": "targetingKey",
        "variants": wider,
        "salt": "g1",
    }
    body = {"defaultServe": {"rollout": {"variants": wider, "salt": ""}}}
    assert api.patch(URL, body, format="json").status_code == 200
    assert "salt" not in api.get(URL).json()["defaultServe"]["rollout"]
    # A variant serving has no salt; a rollout after it starts from the flag's.
    assert api.patch(URL, {"defaultServe": {"variant": "on"}}, format="json").status_code == 200
    assert (
        api.patch(
            URL, {"defaultServe": {"rollout": {"variants": wider}}}, format="json"
        ).status_code
        == 200
    )
    assert "salt" not in api.get(URL).json()["defaultServe"]["rollout"]


HOSTILE = [
    ("a\\u0000b", "defaultServe.rollout.salt", "NUL character"),
    ("a\\ud800b", "defaultServe.rollout.salt", "lone surrogate"),
    ("s" * 10_000, "defaultServe.rollout.salt", "no more than 100 characters"),
    (7, "defaultServe.rollout.salt", "Not a valid string"),
    ({"a": 1}, "defaultServe.rollout.salt", "Not a valid string"),
]


@pytest.mark.parametrize(
    ("salt", "field", "words"), HOSTILE, ids=["nul", "surrogate", "10k", "number", "object"]
)
def test_a_hostile_salt_is_a_400_naming_the_field(api, salt, field, words):
    before = api.get(URL).json()
    text = f'"{salt}"' if isinstance(salt, str) else json.dumps(salt)
    variants = json.dumps(WEIGHTS)
    body = f'{{"defaultServe": {{"rollout": {{"variants": {variants}, "salt": {text}}}}}}}'
    assert_refused(send(api, "patch", URL, body), field, words)
    assert api.get(URL).json() == before
    assert not AuditEntry.objects.filter(object_type="flag_config").exists()


def test_a_hostile_salt_in_a_rule_is_a_400_naming_the_field(api):
    variants = json.dumps(WEIGHTS)
    body = (
        f'{{"rules": [{{"serve": {{"rollout": {{"variants": {variants}, "salt": "\\ud800"}}}}}}]}}'
    )
    assert_refused(send(api, "patch", URL, body), "rules[0].serve.rollout.salt", "lone surrogate")


def test_a_salt_change_is_in_the_readable_history_and_a_restore_brings_it_back(api):
    assert api.patch(URL, {"defaultServe": served(salt="g1")}, format="json").status_code == 200
    assert api.patch(URL, {"defaultServe": served(salt="")}, format="json").status_code == 200
    versions = api.get(f"{URL}/versions").json()["results"]
    assert versions[0]["changes"] == [
        "defaultServe: rollout on 50% / off 50% by targetingKey salted 'g1' → "
        "rollout on 50% / off 50% by targetingKey"
    ]
    restored = api.post(f"{URL}/versions/2/restore", {"version": 3}, format="json")
    assert restored.status_code == 200, restored.content
    assert api.get(URL).json()["defaultServe"] == served(salt="g1")


def test_the_steps_of_a_stepped_rollout_keep_the_rollouts_salt():
    from datetime import timedelta

    from django.utils import timezone

    from flags import schedules

    project = factories.project("shop")
    flag = factories.flag(project, "checkout")
    config = factories.configure(flag, "development", enabled=True, defaultServe=served(salt="g7"))
    now = timezone.now()
    steps = [{"at": now + timedelta(hours=1), "percentage": 60}]
    schedules.rollout_create(config=config, variant="on", steps=steps, actor=None, source="system")
    schedules.due_changes_apply(now=now + timedelta(hours=2))
    config.refresh_from_db()
    assert (config.rollout[0], config.salt) == ({"variant": "on", "weight": 60}, "g7")
