"""A rule condition's `numericStrings` through the management API and into evaluation."""

import pytest

from evaluation.documents import build_document
from evaluation.engine import compile_document
from flags.models import Environment
from tests import factories
from tests.flags.test_api_management import client_for

pytestmark = pytest.mark.django_db

URL = "/api/v1/projects/shop/flags/big-basket/environments/development"


@pytest.fixture
def api():
    project = factories.project("shop")
    factories.flag(project, "big-basket")
    return client_for(factories.member(project, "admin"))


def rule_with(condition: dict) -> dict:
    rules = [{"conditions": [condition], "serve": {"variant": "on"}}]
    return {"rules": rules, "defaultServe": {"variant": "off"}, "enabled": True}


def test_a_condition_with_numeric_strings_round_trips_and_reads_strings_as_numbers(api):
    condition = {"attribute": "items", "operator": "gte", "values": [10], "numericStrings": True}
    response = api.patch(URL, rule_with(condition), format="json")
    assert response.status_code == 200, response.content
    stored = api.get(URL).json()["rules"][0]["conditions"][0]
    assert stored == {**condition, "negate": False}
    environment = Environment.objects.get(project__key="shop", key="development")
    snapshot = compile_document(build_document(environment.pk))
    assert snapshot.evaluate("big-basket", {"items": "12"}).value is True
    assert snapshot.evaluate("big-basket", {"items": "9"}).value is False


@pytest.mark.parametrize(
    "condition",
    [
        {"attribute": "items", "operator": "contains", "values": ["1"], "numericStrings": True},
        {"attribute": "items", "operator": "equals", "values": ["1"], "numericStrings": True},
        {"attribute": "items", "operator": "gte", "values": [1], "numericStrings": "maybe"},
        {"attribute": "items", "operator": "gte", "values": [1], "numericStrings": [True]},
    ],
)
def test_numeric_strings_where_it_means_nothing_is_a_400_naming_the_condition(api, condition):
    before = api.get(URL).json()
    response = api.patch(URL, rule_with(condition), format="json")
    assert response.status_code == 400, response.content
    assert any(field.startswith("rules[0]") for field in response.json()["fields"]), response.json()
    assert api.get(URL).json() == before
