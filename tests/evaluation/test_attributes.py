"""The attribute names evaluations are asked with are kept per environment, bounded, for
the condition builder's suggestions; names no condition could use are never kept."""

import json

import pytest
from django.test import Client

from evaluation import attributes
from flags.models import SeenAttribute
from tests import factories
from tests.evaluation.document_loader import api_key
from tests.evaluation.doors import FastPathClient

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _fresh():
    attributes.clear_local()
    yield
    attributes.clear_local()


@pytest.fixture
def environment():
    project = factories.project()
    factories.configure(factories.flag(project, "checkout"), "production", enabled=True)
    return factories.environment(project, "production")


def evaluate(client, key: str, context: dict | str, path="/ofrep/v1/evaluate/flags"):
    body = context if isinstance(context, str) else json.dumps({"context": context})
    return client.post(path, body, content_type="application/json", HTTP_X_API_KEY=key)


def seen(environment) -> set[str]:
    attributes.flush()
    return set(SeenAttribute.objects.filter(environment=environment).values_list("name", flat=True))


@pytest.mark.parametrize("door", [Client, FastPathClient])
@pytest.mark.parametrize(
    "path", ["/ofrep/v1/evaluate/flags", "/ofrep/v1/evaluate/flags/checkout", "/api/v1/evaluate"]
)
def test_the_attributes_asked_with_are_kept_per_environment(environment, door, path):
    key = api_key(environment, "server")
    context = {"targetingKey": "u-1", "country": "US", "plan": "pro"}
    assert evaluate(door(), key, context, path).status_code == 200
    assert evaluate(door(), key, {"targetingKey": "u-2", "beta": True}, path).status_code == 200
    assert seen(environment) == {"country", "plan", "beta"}, "targetingKey is always suggested"
    staging = factories.environment(environment.project, "staging")
    assert seen(staging) == set()


def test_a_name_is_written_once_however_often_it_is_asked(environment, django_assert_num_queries):
    key = api_key(environment, "server")
    evaluate(Client(), key, {"country": "US"})
    assert seen(environment) == {"country"}
    for _ in range(50):
        evaluate(Client(), key, {"country": "DE"})
    with django_assert_num_queries(0):
        assert attributes.flush() == 0  # nothing new: no statement at all
    attributes.clear_local()  # another process, which has not seen it yet
    evaluate(Client(), key, {"country": "FR"})
    assert seen(environment) == {"country"}
    assert SeenAttribute.objects.filter(environment=environment).count() == 1


@pytest.mark.parametrize(
    "name",
    [
        "a\\u0000b",  # a NUL
        "a\\ud800b",  # a lone surrogate
        "a\\nb",
        "x" * 101,
        "",
        "targetingKeyHash",  # the secure mode hash is a credential, not an attribute
    ],
)
def test_names_no_condition_could_use_are_not_kept(environment, name):
    key = api_key(environment, "server")
    response = evaluate(Client(), key, '{"context": {"' + name + '": 1, "plan": "pro"}}')
    assert response.status_code in (200, 400), response.content
    assert seen(environment) <= {"plan"}


def test_a_client_inventing_names_fills_no_more_than_the_bound(environment):
    key = api_key(environment, "client")
    for batch in range(30):
        context = {f"made-up-{batch}-{n}": n for n in range(50)}  # 1,500 names in all
        assert evaluate(Client(), key, context).status_code == 200
        attributes.flush()
    stored = SeenAttribute.objects.filter(environment=environment).count()
    assert stored == attributes.MAX_PER_ENVIRONMENT
    for process in range(5):  # other processes add theirs, up to the database's bound
        attributes.clear_local()
        for batch in range(5):
            context = {f"p{process}-{batch}-{n}": n for n in range(50)}
            assert evaluate(Client(), key, context).status_code == 200
        attributes.flush()
    stored = SeenAttribute.objects.filter(environment=environment).count()
    assert stored == attributes.MAX_STORED
