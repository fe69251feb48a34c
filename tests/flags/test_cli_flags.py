"""`manage.py flags create | archive | toggle | rollout | serve | target`: writes via services."""

import json

import pytest

from evaluation.documents import flag_state
from flags.models import AuditEntry, Flag
from tests import factories
from tests.flags.command_line import fails, run

pytestmark = pytest.mark.django_db


@pytest.fixture
def project():
    return factories.project("shop")


@pytest.fixture
def banner(project):
    return factories.flag(
        project,
        "banner",
        type="string",
        variants=[{"key": "a", "value": "A"}, {"key": "b", "value": "B"}],
    )


def state(flag, environment="staging") -> dict:
    return flag_state(flag, factories.environment(flag.project, environment))


# --- create -------------------------------------------------------------------------------


def test_create_makes_a_boolean_flag_off_everywhere(project):
    out = run("create", "shop/dark-mode", "--name", "Dark mode", "--tag", "ui", "--tag", "web")
    assert out.stdout.strip() == (
        "Created boolean flag shop/dark-mode (variants: on, off), off everywhere."
    )
    flag = project.flags.get(key="dark-mode")
    assert (flag.name, flag.type) == ("Dark mode", "boolean")
    assert sorted(flag.tags.values_list("name", flat=True)) == ["ui", "web"]
    assert not flag.configs.filter(enabled=True).exists()
    entry = AuditEntry.objects.get(flag_key="dark-mode", action="create")
    assert (entry.source, entry.actor_name) == ("cli", "operator")


def test_create_takes_variants_as_a_list_or_a_mapping(project):
    run(
        "create",
        "shop/limit",
        "--type",
        "number",
        "--variants",
        '[{"key": "low", "value": 10}, {"key": "high", "value": 50}]',
    )
    out = run("create", "shop/color", "--type", "string", "--variants", '{"red": "#f00"}', "--json")
    assert json.loads(out.stdout)["variants"] == [{"key": "red", "value": "#f00"}]
    limit = project.flags.get(key="limit")
    assert [(v.key, v.value) for v in limit.variants.all()] == [("low", 10), ("high", 50)]


def test_create_as_a_user_records_them_in_the_audit(project):
    editor = factories.member(project, "editor")
    run("create", "shop/dark-mode", "--as", editor.username)
    entry = AuditEntry.objects.get(flag_key="dark-mode", action="create")
    assert (entry.actor, entry.source) == (editor, "cli")


def test_create_rejects_bad_input_with_the_field_named(project):
    assert fails("create", "shop/x", "--type", "number", "--variants", '{"a": "ten"}') == (
        "invalid input: variants: variant 'a': must be a number for a number flag"
    )
    assert fails("create", "shop/x", "--type", "string", "--variants", "{bad").startswith(
        "invalid JSON in --variants: Expecting property name"
    )
    assert fails("create", "shop/x", "--type", "string", "--variants", "[1]") == (
        '--variants: give [{"key": ..., "value": ...}, ...] or {"key": value, ...}'
    )
    assert fails("create", "shop/x", "--type", "string") == (
        "invalid input: variants: a string flag needs its variants listed"
    )
    assert "key:" in fails("create", "shop/Not Valid")
    assert not Flag.objects.exists()


def test_create_twice_says_the_key_exists(project):
    run("create", "shop/dark-mode")
    assert fails("create", "shop/dark-mode").startswith("invalid input: key:")


def test_create_in_an_unknown_project_fails():
    assert fails("create", "nope/dark-mode") == "unknown project 'nope'"


def test_create_as_a_viewer_is_denied(project):
    viewer = factories.member(project, "viewer")
    message = fails("create", "shop/dark-mode", "--as", viewer.username)
    assert message == (
        f"permission denied: {viewer.username} is viewer in project 'shop'; "
        "this change needs the editor role"
    )


# --- archive ------------------------------------------------------------------------------


def test_archive_and_undo(banner):
    assert run("archive", "shop/banner").stdout.strip() == "Archived shop/banner."
    banner.refresh_from_db()
    assert banner.archived
    assert AuditEntry.objects.filter(flag_key="banner", action="archive", source="cli").exists()
    assert run("archive", "shop/banner", "--undo").stdout.strip() == "Restored shop/banner."
    banner.refresh_from_db()
    assert not banner.archived


def test_archive_an_unknown_flag_fails(project):
    assert fails("archive", "shop/nope") == "unknown flag 'nope' in project 'shop'"


# --- toggle -------------------------------------------------------------------------------


def test_toggle_turns_a_flag_on_and_off_in_one_environment(banner):
    assert run("toggle", "shop/banner", "staging", "on").stdout.strip() == (
        "banner is on in staging."
    )
    assert state(banner)["enabled"] is True
    assert state(banner, "production")["enabled"] is False
    entry = AuditEntry.objects.get(flag_key="banner", action="enable")
    assert (entry.source, entry.environment.key) == ("cli", "staging")
    run("toggle", "shop/banner", "staging", "off")
    assert state(banner)["enabled"] is False


def test_toggle_in_a_protected_environment_needs_a_publisher(banner):
    editor = factories.member(banner.project, "editor")
    message = fails("toggle", "shop/banner", "production", "on", "--as", editor.username)
    assert "in protected environment 'production' needs the publisher role" in message
    run("toggle", "shop/banner", "staging", "on", "--as", editor.username)


def test_toggle_rejects_unknown_names(banner):
    assert fails("toggle", "shop/banner", "qa", "on").startswith("unknown environment 'qa'")
    assert fails("toggle", "shop/nope", "staging", "on") == "unknown flag 'nope' in project 'shop'"
    assert fails("toggle", "nope/banner", "staging", "on") == "unknown project 'nope'"


# --- rollout and serve --------------------------------------------------------------------


def test_rollout_of_a_boolean_flag_takes_the_share_served_on(project):
    flag = factories.flag(project, "new-checkout")
    out = run("rollout", "shop/new-checkout", "staging", "25")
    assert out.stdout.strip() == "new-checkout in staging now serves on 25%, off 75%."
    assert state(flag)["defaultServe"] == {
        "rollout": {
            "bucketBy": "targetingKey",
            "variants": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}],
        }
    }


def test_rollout_takes_weights_per_variant_and_a_bucketing_attribute(banner):
    run("rollout", "shop/banner", "staging", "a=40", "b=60", "--bucket-by", "companyId")
    rollout = state(banner)["defaultServe"]["rollout"]
    assert rollout["bucketBy"] == "companyId"
    assert rollout["variants"] == [{"variant": "a", "weight": 40}, {"variant": "b", "weight": 60}]


def test_rollout_rejects_bad_weights(banner):
    assert fails("rollout", "shop/banner", "staging", "a=forty", "b=60") == (
        "the weight of 'a' must be a whole percentage, not 'forty'"
    )
    assert fails("rollout", "shop/banner", "staging", "a=140") == (
        "the weight of 'a' must be between 0 and 100, not 140"
    )
    assert fails("rollout", "shop/banner", "staging", "50") == (
        "give each weight as VARIANT=PERCENT, not '50'"
    )
    assert fails("rollout", "shop/banner", "staging", "a=40", "b=50") == (
        "the percentages must sum to 100, not 90"
    )
    assert fails("rollout", "shop/banner", "staging", "a=50", "zzz=50").startswith(
        "invalid input: defaultServe:"
    )
    assert state(banner)["defaultServe"] == {"variant": "a"}


def test_serve_sets_the_default_variant(banner):
    run("rollout", "shop/banner", "staging", "a=50", "b=50")
    out = run("serve", "shop/banner", "staging", "b")
    assert out.stdout.strip() == "banner in staging now serves b."
    assert state(banner)["defaultServe"] == {"variant": "b"}
    assert fails("serve", "shop/banner", "staging", "zzz").startswith(
        "invalid input: defaultServe:"
    )


# --- target -------------------------------------------------------------------------------


def test_target_adds_keys_and_moves_them_between_variants(banner):
    out = run("target", "shop/banner", "staging", "b", "user-1", "user-2")
    assert out.stdout.strip() == "2 key(s) now get b of banner in staging."
    run("target", "shop/banner", "staging", "a", "user-2", "user-3")
    assert state(banner)["targets"] == [
        {"variant": "b", "values": ["user-1"]},
        {"variant": "a", "values": ["user-2", "user-3"]},
    ]
    assert AuditEntry.objects.filter(flag_key="banner", source="cli").count() == 2


def test_target_remove_drops_keys_and_empty_targets(banner):
    run("target", "shop/banner", "staging", "b", "user-1", "user-2")
    run("target", "shop/banner", "staging", "b", "user-1", "user-2", "--remove")
    assert state(banner)["targets"] == []


def test_target_of_an_unknown_variant_fails(banner):
    assert fails("target", "shop/banner", "staging", "zzz", "user-1") == (
        "invalid input: variant: unknown variant 'zzz' of banner"
    )
