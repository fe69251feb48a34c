"""POST /api/v1/projects/P/environments/E/import: other systems' exports over the API."""

import json

import mmh3
import pytest

from evaluation.documents import build_document
from evaluation.engine import compile_document
from flags.models import Flag
from tests import factories
from tests.flags.test_api_management import client_for
from tests.flags.test_cli_import_from import UNLEASH

pytestmark = pytest.mark.django_db

URL = "/api/v1/projects/shop/environments/production/import"


@pytest.fixture
def project():
    project = factories.project("shop")
    factories.environment(project, "production")
    return project


@pytest.fixture
def api(project):
    return client_for(factories.member(project, "admin"))


def post(api, body, raw: str | None = None):
    if raw is not None:
        return api.generic("POST", URL, raw.encode(), content_type="application/json")
    return api.post(URL, body, format="json")


def test_an_unleash_export_imports_with_its_buckets(api, project):
    response = post(api, {"source": "unleash", "document": UNLEASH})
    assert response.status_code == 200, response.content
    report = response.json()
    assert report["counts"]["added"] == 2
    assert report["conversion"]["skipped"][0]["flag"] == "custom"
    assert Flag.objects.get(key="banner").bucketing == "unleash"
    snapshot = compile_document(build_document(project.environments.get(key="production").pk))
    for index in range(100):
        user = f"user-{index}"
        target = mmh3.hash(f"banner:{user}".encode(), 86028157, signed=False) % 1000 + 1
        expected = "blue" if target <= 500 else "red"
        assert snapshot.evaluate("banner", {"targetingKey": user}).variant == expected


def test_a_dry_run_writes_nothing(api, project):
    response = post(api, {"source": "unleash", "document": UNLEASH, "dryRun": True})
    assert response.status_code == 200 and response.json()["dry_run"] is True
    assert not Flag.objects.filter(project=project).exists()


@pytest.mark.parametrize(
    "body, raw, field",
    [
        ({"source": "nope", "document": {}}, None, "source"),
        ({"source": "unleash"}, None, "document"),
        ({"source": "unleash", "document": {}, "extra": 1}, None, "extra"),
        ({"source": "unleash", "document": [1]}, None, "document"),
        ({"source": "flagd", "document": {"flags": 5}}, None, "flags"),
        (None, '{"source": "unleash", "document": {"features": [{"name": "\\ud800"}]}}', None),
        (None, '{"source": "unleash", "document": {"features": [{"name": "a\\u0000"}]}}', None),
        (None, '{"source": "unleash", "document": ' + "[" * 10_000 + "]" * 10_000 + "}", None),
        (
            {"source": "unleash", "document": {"features": [], "segments": [{"id": [1]}]}},
            None,
            "segments[0].id",
        ),
        (
            {
                "source": "unleash",
                "document": {"events": [{"type": "feature-removed", "featureName": {}}]},
            },
            None,
            "events[0].featureName",
        ),
        (
            {
                "source": "unleash",
                "document": {"events": [{"type": "hydration", "features": [{"name": ["a"]}]}]},
            },
            None,
            "features[0].name",
        ),
    ],
)
def test_hostile_bodies_are_json_400s(api, project, body, raw, field):
    response = post(api, body, raw)
    assert response.status_code == 400, response.content
    payload = response.json()
    if field is not None:
        assert field in json.dumps(payload)
    assert not Flag.objects.filter(project=project).exists()


def test_a_viewer_cannot_import(project):
    viewer = client_for(factories.member(project, "viewer"))
    response = post(viewer, {"source": "unleash", "document": UNLEASH})
    assert response.status_code == 403
    assert not Flag.objects.filter(project=project).exists()
