"""`manage.py flags keys create | list | revoke`: the secret is printed once, never stored."""

import json

import pytest

from flags.models import ApiKey, AuditEntry
from flags.services import key_digest
from tests import factories
from tests.flags.command_line import fails, run

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    return factories.project("shop")


def test_create_prints_the_secret_once(project):
    out = run("keys", "create", "shop", "production", "--name", "backend")
    secret = out.stdout.strip()
    assert secret.startswith("ffs_")
    assert "shown only this once" in out.stderr
    key = ApiKey.objects.get()
    assert key.digest == key_digest(secret)
    assert (key.kind, key.environment.key, key.name) == ("server", "production", "backend")
    assert secret not in run("keys", "list", "shop").stdout
    entry = AuditEntry.objects.get(object_type="api_key")
    assert (entry.action, entry.source) == ("create", "cli")


def test_create_client_key_with_expiry_as_json(project):
    out = run(
        "keys",
        "create",
        "shop",
        "staging",
        "--kind",
        "client",
        "--name",
        "web",
        "--expires",
        "2999-01-01T00:00:00Z",
        "--json",
    )
    created = json.loads(out.stdout)
    assert created["secret"].startswith("ffc_")
    assert created["expires_at"].startswith("2999-01-01T00:00:00")
    assert (created["kind"], created["environment"]) == ("client", "staging")


def test_expiry_without_a_zone_is_utc(project):
    out = run(
        "keys", "create", "shop", "staging", "--name", "web", "--expires", "2030-01-01T00:00:00"
    )
    assert out.stdout.strip().startswith("ffs_")
    assert ApiKey.objects.get().expires_at.isoformat() == "2030-01-01T00:00:00+00:00"


def test_create_rejects_bad_input(project):
    assert fails(
        "keys", "create", "shop", "staging", "--name", "x", "--expires", "2000-01-01T00:00:00Z"
    ) == ("invalid input: expires_at: must be in the future")
    assert fails("keys", "create", "shop", "staging", "--name", "x", "--expires", "soon") == (
        "--expires: not an ISO date and time: 'soon'"
    )
    assert fails("keys", "create", "shop", "qa", "--name", "x").startswith(
        "unknown environment 'qa'"
    )
    assert not ApiKey.objects.exists()


def test_only_admins_manage_keys(project):
    editor = factories.member(project, "editor")
    message = fails("keys", "create", "shop", "staging", "--name", "x", "--as", editor.username)
    assert message.endswith("needs the admin role")
    assert fails("keys", "list", "shop", "--as", editor.username).endswith("needs the admin role")
    admin = factories.member(project, "admin")
    run("keys", "create", "shop", "staging", "--name", "x", "--as", admin.username)
    assert ApiKey.objects.get().created_by == admin


def test_list_shows_keys_by_environment_without_revoked_ones(project):
    run("keys", "create", "shop", "staging", "--name", "one")
    run("keys", "create", "shop", "production", "--name", "two")
    lines = run("keys", "list", "shop").stdout.splitlines()
    assert lines[0].split()[:5] == ["ID", "PREFIX", "KIND", "ENV", "NAME"]
    assert len(lines) == 3
    rows = json.loads(run("keys", "list", "shop", "staging", "--json").stdout)
    assert [row["name"] for row in rows] == ["one"]
    assert "secret" not in rows[0] and "digest" not in rows[0]


def test_revoke_by_prefix_or_id(project):
    secret = run("keys", "create", "shop", "staging", "--name", "one").stdout.strip()
    run("keys", "create", "shop", "staging", "--name", "two")
    one, two = ApiKey.objects.get(name="one"), ApiKey.objects.get(name="two")
    out = run("keys", "revoke", secret[:10])
    assert out.stdout.strip() == f"Revoked key 'one' ({one.prefix}…) of shop/staging."
    run("keys", "revoke", str(two.pk))
    assert ApiKey.objects.filter(revoked_at__isnull=False).count() == 2
    assert run("keys", "list", "shop", "--json").stdout.strip() == "[]"
    assert len(json.loads(run("keys", "list", "shop", "--revoked", "--json").stdout)) == 2
    assert AuditEntry.objects.filter(action="revoke", source="cli").count() == 2


def test_revoke_an_unknown_key_fails(project):
    assert fails("keys", "revoke", "ffs_nothing") == "unknown API key 'ffs_nothing'"
    assert fails("keys", "revoke", "12345") == "unknown API key '12345'"
