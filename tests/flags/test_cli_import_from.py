"""`manage.py flags import --from SYSTEM FILE`: other systems' exports, users kept in place."""

from __future__ import annotations

import json

import mmh3
import pytest

from evaluation.documents import build_document
from evaluation.engine import compile_document
from flags.models import AuditEntry, Flag
from tests import factories
from tests.flags.command_line import fails, run

pytestmark = pytest.mark.django_db

UNLEASH = {
    "version": 1,
    "features": [
        {
            "name": "checkout",
            "enabled": True,
            "strategies": [
                {
                    "name": "flexibleRollout",
                    "parameters": {"rollout": "30", "stickiness": "userId", "groupId": "checkout"},
                    "constraints": [
                        {
                            "contextName": "email",
                            "operator": "STR_ENDS_WITH",
                            "values": ["@EXAMPLE.com"],
                            "caseInsensitive": True,
                        }
                    ],
                }
            ],
        },
        {
            "name": "banner",
            "enabled": True,
            "strategies": [{"name": "default"}],
            "variants": [
                {"name": "blue", "weight": 500, "stickiness": "default"},
                {"name": "red", "weight": 500, "stickiness": "default"},
            ],
        },
        {"name": "custom", "enabled": True, "strategies": [{"name": "myOwnStrategy"}]},
    ],
}


@pytest.fixture
def project():
    project = factories.project("shop")
    factories.environment(project, "production")
    return project


@pytest.fixture
def export(tmp_path):
    def write(data: object, name: str = "unleash.json") -> str:
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else json.dumps(data), encoding="utf-8")
        return str(path)

    return write


def snapshot(project):
    return compile_document(build_document(project.environments.get(key="production").pk))


def test_unleash_users_keep_their_rollout_and_variant(project, export):
    out = run("import", export(UNLEASH), "shop", "production", "--from", "unleash").stdout
    assert "! flag custom: not imported: strategy 'myOwnStrategy'" in out
    assert not Flag.objects.filter(key="custom").exists()  # skipped whole
    answers = snapshot(project)
    for index in range(300):
        user = f"user-{index}"
        # Unleash's gradual rollout and its variant hash, computed from the published formula.
        inside = mmh3.hash(f"checkout:{user}".encode(), 0, signed=False) % 100 + 1 <= 30
        result = answers.evaluate("checkout", {"targetingKey": user, "email": "a@example.COM"})
        assert result.value is inside, user
        target = mmh3.hash(f"banner:{user}".encode(), 86028157, signed=False) % 1000 + 1
        assert answers.evaluate("banner", {"targetingKey": user}).variant == (
            "blue" if target <= 500 else "red"
        )
    assert answers.evaluate("checkout", {"targetingKey": "u", "email": "a@b.org"}).value is False
    assert Flag.objects.get(key="banner").bucketing == "unleash"
    assert AuditEntry.objects.filter(action="import").count() == 1


def test_a_dry_run_shows_the_plan_and_writes_nothing(project, export):
    out = run("import", export(UNLEASH), "shop", "production", "--from", "unleash", "--dry-run")
    assert "+ flag checkout" in out.stdout and "Dry run: nothing was written." in out.stdout
    assert not Flag.objects.filter(project=project).exists()


def test_json_output_lists_the_skipped_flags(project, export):
    args = ("import", export(UNLEASH), "shop", "production", "--from", "unleash", "--json")
    report = json.loads(run(*args).stdout)
    assert report["conversion"]["skipped"][0]["flag"] == "custom"
    assert report["counts"]["added"] == 2


def test_the_environment_must_be_given(project, export):
    message = fails("import", export(UNLEASH), "shop", "--from", "unleash")
    assert "environment" in message


@pytest.mark.parametrize(
    "text, words",
    [
        ('{"features": [{"name": "\\ud800", "enabled": true}]}', "surrogate"),
        ('{"features": [{"name": "a\\u0000", "enabled": true}]}', "NUL"),
        ("[" * 10_000 + "]" * 10_000, "deep"),
        ('{"features": "all of them"}', "features: must be a list"),
        ('{"flags": {}}', "an Unleash export lists its features"),
        ("[1, 2]", "document: must be a JSON object"),
        ('{"features": [{"name": "a", "enabled": "yes", "strategies": []}]}', "not imported"),
    ],
)
def test_hostile_exports_are_refused_with_a_message(project, export, text, words):
    args = ("import", export(text), "shop", "production", "--from", "unleash")
    try:
        message = run(*args).stdout  # a flag that cannot be expressed is reported, not fatal
    except Exception as error:  # noqa: BLE001 - the CLI's own error, with its exit code
        message = str(error)
        assert getattr(error, "returncode", None) == 2, message
    assert words.lower() in message.lower()
    assert not Flag.objects.filter(project=project).exists()


def test_a_huge_export_is_refused_before_it_is_read(project, export, monkeypatch):
    from flags.management.commands import flags as command

    monkeypatch.setattr(command, "MAX_EXPORT_BYTES", 1_000)
    path = export(json.dumps({"features": [{"name": "x" * 2_000, "enabled": True}]}))
    assert "is larger than" in fails("import", path, "shop", "production", "--from", "unleash")


HOSTILE = {
    "a lone surrogate": '{"flags": {"\\ud800": {}}, "features": [{"name": "\\ud800"}]}',
    "a NUL character": '{"flags": {"a\\u0000": {}}, "features": [{"name": "a\\u0000"}]}',
    "JSON nested 10,000 deep": "[" * 10_000 + "]" * 10_000,
    "not an object": '["flags"]',
    "wrong types everywhere": '{"flags": 5, "features": 5, "feature_states": 5, "items": 5}',
    "not JSON": "{flags:",
}


@pytest.mark.parametrize("source", ["unleash", "flagd", "launchdarkly", "flagsmith"])
@pytest.mark.parametrize("text", HOSTILE.values(), ids=HOSTILE)
def test_every_importer_refuses_hostile_input_with_a_message(project, export, source, text):
    args = ("import", export(text), "shop", "production", "--from", source)
    try:
        out = run(*args).stdout
    except Exception as error:  # noqa: BLE001 - the CLI's own error, with its exit code
        assert getattr(error, "returncode", None) == 2, str(error)
        assert str(error)
    else:  # nothing importable: every flag reported, none written
        assert "not imported" in out or "0 added" in out
    assert not Flag.objects.filter(project=project).exists()
