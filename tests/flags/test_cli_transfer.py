"""`manage.py flags export | import | promote`: documents, diffs, all or nothing, audit."""

import json

import pytest
import yaml

from evaluation.documents import build_document, flag_state
from flags.management.commands import flags as flags_command
from flags.models import AuditEntry, Environment, Flag, Project
from tests import factories
from tests.flags.command_line import fails, run

pytestmark = pytest.mark.django_db

ROLLOUT = {
    "rollout": {
        "bucketBy": "targetingKey",
        "variants": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}],
    }
}


@pytest.fixture
def project():
    """A small project: staging is ahead of production."""
    project = factories.project("shop")
    factories.flag(project, "checkout-api")
    checkout = factories.flag(project, "new-checkout", tags=["checkout"])
    factories.flag(
        project,
        "banner",
        type="string",
        variants=[{"key": "plain", "value": "Hi"}, {"key": "sale", "value": "Sale!"}],
    )
    from flags import services

    services.segment_create(
        project=project,
        key="beta",
        data={"conditions": [{"attribute": "email", "operator": "ends_with", "values": ["@x"]}]},
        actor=None,
        source="system",
    )
    factories.configure(
        checkout,
        "staging",
        enabled=True,
        defaultServe=ROLLOUT,
        targets=[{"variant": "on", "values": ["user-1"]}],
        prerequisites=[{"flag": "checkout-api", "variants": ["on"]}],
        rules=[
            {
                "name": "Beta",
                "conditions": [{"operator": "in_segment", "values": ["beta"]}],
                "serve": {"variant": "on"},
            }
        ],
    )
    return project


def state(project, key, environment) -> dict:
    return flag_state(project.flags.get(key=key), factories.environment(project, environment))


def config_of(entry: dict) -> dict:
    keys = ("enabled", "offVariant", "defaultServe", "targets", "prerequisites")
    rules = [{k: v for k, v in rule.items() if k != "id"} for rule in entry["rules"]]
    return {**{key: entry[key] for key in keys}, "rules": rules}


def export(project, environment, tmp_path, suffix=".json"):
    path = tmp_path / f"{environment}{suffix}"
    run("export", project.key, environment, "-o", str(path))
    return path


# --- export -------------------------------------------------------------------------------


def test_export_an_environment_to_stdout_is_its_flag_document(project):
    document = json.loads(run("export", "shop", "staging").stdout)
    staging = factories.environment(project, "staging")
    assert document == build_document(staging.pk)


def test_export_a_project_as_yaml_to_a_file(project, tmp_path):
    path = tmp_path / "shop.yaml"
    out = run("export", "shop", "-o", str(path))
    assert out.stderr.strip() == f"Exported project shop to {path}."
    document = yaml.safe_load(path.read_text())
    assert document["project"] == "shop"
    assert list(document["environments"]) == ["development", "staging", "production"]
    staging = document["environments"]["staging"]
    assert staging["flags"]["new-checkout"]["variants"][0] == {"key": "on", "value": True}


def test_export_format_can_be_chosen(project):
    text = run("export", "shop", "staging", "--format", "yaml").stdout
    assert yaml.safe_load(text)["environment"] == "staging"


def test_export_failures(project, tmp_path):
    assert fails("export", "nope") == "unknown project 'nope'"
    assert fails("export", "shop", "qa").startswith("unknown environment 'qa'")
    target = tmp_path / "missing" / "x.json"
    assert fails("export", "shop", "staging", "-o", str(target)) == (
        f"cannot write {target}: No such file or directory"
    )
    outsider = factories.user()
    assert fails("export", "shop", "--as", outsider.username).startswith("permission denied:")


# --- import -------------------------------------------------------------------------------


def test_dry_run_prints_the_diff_per_flag_and_writes_nothing(project, tmp_path):
    path = export(project, "staging", tmp_path)
    before = build_document(factories.environment(project, "production").pk)
    audits = AuditEntry.objects.count()
    out = run("import", str(path), "shop", "production", "--existing", "overwrite", "--dry-run")
    lines = out.stdout.splitlines()
    assert lines[0] == "Import into shop/production (existing: overwrite)"
    assert "= segment beta: unchanged" in lines
    assert "= flag banner: unchanged" in lines
    checkout = lines.index("~ flag new-checkout")
    assert lines[checkout + 1 : checkout + 3] == [
        "    ~ enabled: false -> true",
        '    - defaultServe.variant: "on"',
    ]
    assert '    + targets[on]: {"variant": "on", "values": ["user-1"]}' in lines
    assert (
        '    + prerequisites[checkout-api]: {"flag": "checkout-api", "variants": ["on"]}' in lines
    )
    assert any(line.startswith("    + rules[0]: ") for line in lines)
    assert lines[-2:] == [
        "Flags: 0 added, 1 changed, 2 unchanged, 0 skipped",
        "Dry run: nothing was written.",
    ]
    after = build_document(factories.environment(project, "production").pk)
    assert after == before
    assert AuditEntry.objects.count() == audits


def test_import_overwrite_applies_the_file_with_audit_entries(project, tmp_path):
    path = export(project, "staging", tmp_path)
    out = run("import", str(path), "shop", "production", "--existing", "overwrite")
    assert out.stdout.splitlines()[-1] == "Imported."
    staging, production = (state(project, "new-checkout", env) for env in ("staging", "production"))
    assert config_of(production) == config_of(staging)
    entries = AuditEntry.objects.filter(source="cli", environment__key="production")
    assert set(entries.values_list("action", flat=True)) == {"update", "import"}
    summary = entries.get(action="import")
    assert summary.after == {
        "environments": ["production"],
        "added": 0,
        "changed": 1,
        "unchanged": 2,
        "skipped": 0,
    }


def test_import_skips_existing_flags_by_default(project, tmp_path):
    path = export(project, "staging", tmp_path)
    out = run("import", str(path), "shop", "production")
    assert "! flag new-checkout: skipped (6 difference(s) not applied)" in out.stdout
    assert state(project, "new-checkout", "production")["enabled"] is False


def test_import_into_another_installation_creates_project_and_environments(project, tmp_path):
    path = tmp_path / "shop.yaml"
    run("export", "shop", "-o", str(path))
    document = yaml.safe_load(path.read_text())
    document["project"] = "copy"
    path.write_text(yaml.safe_dump(document))
    assert fails("import", str(path)) == (
        "invalid input: project: unknown project 'copy' (--create-missing creates it)"
    )
    out = run("import", str(path), "--create-missing")
    assert "+ project copy" in out.stdout
    assert "Flags: 3 added, 0 changed, 0 unchanged, 0 skipped" in out.stdout
    copy = Project.objects.get(key="copy")
    for environment in ("development", "staging", "production"):
        original = build_document(factories.environment(project, environment).pk)
        copied = build_document(factories.environment(copy, environment).pk)
        for key, entry in original["flags"].items():
            assert config_of(copied["flags"][key]) == config_of(entry), (environment, key)
            assert copied["flags"][key]["metadata"] == entry["metadata"]
        assert copied["segments"] == original["segments"]
    assert AuditEntry.objects.filter(project=copy, action="import", source="cli").exists()


def test_import_a_single_environment_into_a_new_environment(project, tmp_path):
    path = export(project, "staging", tmp_path)
    assert fails("import", str(path), "shop", "qa").startswith(
        "invalid input: environment: unknown environment 'qa' in project 'shop'"
    )
    out = run("import", str(path), "shop", "qa", "--create-missing", "--existing", "overwrite")
    assert "+ environment qa" in out.stdout
    qa = Environment.objects.get(project=project, key="qa")
    assert config_of(state(project, "new-checkout", "qa")) == config_of(
        state(project, "new-checkout", "staging")
    )
    assert qa.position == 3


def test_an_import_is_all_or_nothing(project, tmp_path):
    document = json.loads(run("export", "shop", "staging").stdout)
    flags = document["flags"]
    # The new flag is written first; the type change fails later, in the services.
    new = {**flags["checkout-api"], "enabled": True, "salt": "aaa-new"}
    retyped = {**flags["banner"], "salt": "checkout-api"}
    document["flags"] = {"aaa-new": new, **flags, "checkout-api": retyped}
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(document))
    for extra in (["--dry-run"], []):
        message = fails(
            "import", str(path), "shop", "production", "--existing", "overwrite", *extra
        )
        assert message == (
            "invalid input: flags.checkout-api.type: a flag's type cannot change once created"
        )
    assert not Flag.objects.filter(key="aaa-new").exists()
    assert not AuditEntry.objects.filter(source="cli").exists()


def test_import_checks_each_flag_with_the_engine_first(project, tmp_path):
    document = json.loads(run("export", "shop", "staging").stdout)
    document["flags"]["new-checkout"]["targets"] = [{"variant": "maybe", "values": ["u"]}]
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(document))
    message = fails("import", str(path), "shop", "production", "--dry-run")
    assert message.startswith("invalid input: flags.new-checkout: targets[0].variant:")
    assert "maybe" in message


def test_import_rejects_a_value_of_the_wrong_type(project, tmp_path):
    document = json.loads(run("export", "shop", "staging").stdout)
    document["flags"]["banner"]["variants"][1]["value"] = 3
    path = tmp_path / "typed.json"
    path.write_text(json.dumps(document))
    message = fails("import", str(path), "shop", "production", "--existing", "overwrite")
    assert message == "invalid input: flags.banner: variants[1].value: 3 is not a string value"


def test_import_removes_variants_the_file_drops_after_reconfiguring(project, tmp_path):
    size = factories.flag(
        project,
        "size",
        type="number",
        variants=[{"key": "s", "value": 1}, {"key": "m", "value": 2}, {"key": "l", "value": 3}],
    )
    factories.configure(size, "production", defaultServe={"variant": "m"})
    document = json.loads(run("export", "shop", "production").stdout)
    entry = document["flags"]["size"]
    entry["variants"] = [
        {"key": "s", "value": 1},
        {"key": "l", "value": 3},
        {"key": "xl", "value": 4},
    ]
    entry["defaultServe"] = {"variant": "xl"}
    path = tmp_path / "variants.json"
    path.write_text(json.dumps(document))
    out = run("import", str(path), "shop", "production", "--existing", "overwrite")
    assert '    - variants[m]: {"key": "m", "value": 2}' in out.stdout
    assert '    + variants[xl]: {"key": "xl", "value": 4}' in out.stdout
    assert [v.key for v in size.variants.all()] == ["s", "l", "xl"]
    assert state(project, "size", "production")["defaultServe"] == {"variant": "xl"}


def test_import_keeps_variants_other_environments_still_use(project, tmp_path):
    document = json.loads(run("export", "shop", "production").stdout)
    document["flags"]["banner"]["variants"].pop()  # "sale": every offVariant
    document["flags"]["banner"]["offVariant"] = "plain"
    path = tmp_path / "variants.json"
    path.write_text(json.dumps(document))
    message = fails("import", str(path), "shop", "production", "--existing", "overwrite")
    assert message == (
        "invalid input: flags.banner.variants: variant 'sale' is in use and cannot be removed"
    )
    assert project.flags.get(key="banner").variants.count() == 2


def test_import_reports_progress_on_long_imports(project, tmp_path):
    document = json.loads(run("export", "shop", "staging").stdout)
    template = document["flags"]["checkout-api"]
    for index in range(25):
        document["flags"][f"bulk-{index:02}"] = {**template, "salt": f"bulk-{index:02}"}
    path = tmp_path / "bulk.json"
    path.write_text(json.dumps(document))
    out = run("import", str(path), "shop", "staging")
    progress = out.stderr.splitlines()
    assert progress[0] == "[1/25] bulk-00"
    assert progress[-1] == "[25/25] bulk-24"
    assert project.flags.count() == 28


def test_long_imports_report_every_so_many_flags_and_the_last(project, tmp_path, monkeypatch):
    monkeypatch.setattr(flags_command, "PROGRESS_EVERY", 10)
    monkeypatch.setattr(flags_command, "PROGRESS_SECONDS", 3600)
    document = json.loads(run("export", "shop", "staging").stdout)
    template = document["flags"]["checkout-api"]
    for index in range(25):
        document["flags"][f"bulk-{index:02}"] = {**template, "salt": f"bulk-{index:02}"}
    path = tmp_path / "bulk.json"
    path.write_text(json.dumps(document))
    out = run("import", str(path), "shop", "staging")
    assert out.stderr.splitlines() == [
        "[1/25] bulk-00",
        "[10/25] bulk-09",
        "[20/25] bulk-19",
        "[25/25] bulk-24",
    ]


def test_import_json_output_lists_the_plan(project, tmp_path):
    path = export(project, "staging", tmp_path)
    out = run("import", str(path), "shop", "production", "--dry-run", "--json")
    plan = json.loads(out.stdout)
    assert plan["dry_run"] is True
    assert plan["counts"] == {"added": 0, "changed": 0, "unchanged": 2, "skipped": 1}
    assert {"kind": "flag", "key": "new-checkout", "status": "skipped", "changes": []} in plan[
        "items"
    ]


def test_import_from_yaml_and_stdin(project, tmp_path):
    path = export(project, "staging", tmp_path, suffix=".yml")
    assert yaml.safe_load(path.read_text())["environment"] == "staging"
    out = run("import", str(path), "shop", "production", "--existing", "overwrite", "--dry-run")
    assert "~ flag new-checkout" in out.stdout
    text = run("export", "shop", "staging").stdout
    out = run("import", "-", "shop", "production", "--dry-run", stdin=text)
    assert "! flag new-checkout: skipped" in out.stdout


def test_import_bad_files_fail_with_exit_code_2(project, tmp_path):
    missing = tmp_path / "missing.json"
    assert fails("import", str(missing)) == f"cannot read {missing}: No such file or directory"
    broken = tmp_path / "broken.json"
    broken.write_text("{nope")
    assert fails("import", str(broken)).startswith(f"invalid JSON in {broken}:")
    bad_yaml = tmp_path / "broken.yaml"
    bad_yaml.write_text("a: [b")
    assert fails("import", str(bad_yaml)).startswith(f"invalid YAML in {bad_yaml}:")
    not_document = tmp_path / "list.json"
    not_document.write_text("[]")
    assert fails("import", str(not_document)) == "invalid input: document: must be a JSON object"
    no_flags = tmp_path / "no-flags.json"
    no_flags.write_text('{"project": "shop", "environment": "staging"}')
    assert fails("import", str(no_flags)) == (
        "invalid input: flags: a flag document needs a flags object"
    )
    future = tmp_path / "future.json"
    future.write_text('{"schemaVersion": 9, "flags": {}}')
    assert fails("import", str(future)) == "invalid input: schemaVersion: only version 1 is known"


def test_import_respects_roles(project, tmp_path):
    path = export(project, "staging", tmp_path)
    editor = factories.member(project, "editor")
    message = fails(
        "import",
        str(path),
        "shop",
        "production",
        "--existing",
        "overwrite",
        "--as",
        editor.username,
    )
    assert "in protected environment 'production' needs the publisher role" in message
    run(
        "import",
        str(path),
        "shop",
        "development",
        "--existing",
        "overwrite",
        "--as",
        editor.username,
    )
    entry = AuditEntry.objects.get(action="import")
    assert (entry.actor, entry.source) == (editor, "cli")


# --- promote ------------------------------------------------------------------------------


def test_promote_prints_the_diff_and_applies_with_yes(project):
    out = run("promote", "shop", "staging", "production", "new-checkout", "banner", "--yes")
    lines = out.stdout.splitlines()
    assert lines[0] == "Promote shop: staging -> production"
    assert "~ flag new-checkout" in lines
    assert "= flag banner: unchanged" in lines
    assert lines[-1] == "Promoted 1 flag(s) to production."
    staging, production = (state(project, "new-checkout", env) for env in ("staging", "production"))
    assert config_of(production) == config_of(staging)
    entry = AuditEntry.objects.get(action="promote")
    assert entry.after == {"from": "staging", "flags": ["new-checkout"]}
    assert entry.source == "cli"


def test_promote_asks_before_applying(project):
    message = fails("promote", "shop", "staging", "production", "new-checkout", stdin="n\n", code=1)
    assert message == "Cancelled: nothing was changed."
    assert state(project, "new-checkout", "production")["enabled"] is False
    out = run("promote", "shop", "staging", "production", "new-checkout", stdin="y\n")
    assert "Apply to production? [y/N] Promoted 1 flag(s) to production." in out.stdout
    assert state(project, "new-checkout", "production")["enabled"] is True


def test_promote_without_input_in_scripts(project):
    message = fails("promote", "shop", "staging", "production", "--all", stdin="", code=1)
    assert message == "Cancelled: nothing was changed."
    out = run("promote", "shop", "staging", "production", "--all", "--no-input", "--json")
    plan = json.loads(out.stdout)
    assert plan["applied"] is True
    assert plan["counts"]["changed"] == 1


def test_promote_keep_enabled_copies_only_the_targeting(project):
    run("promote", "shop", "staging", "production", "new-checkout", "--keep-enabled", "--yes")
    production = state(project, "new-checkout", "production")
    assert production["enabled"] is False
    assert production["defaultServe"] == ROLLOUT


def test_promote_with_nothing_to_change(project):
    out = run("promote", "shop", "development", "production", "banner")
    assert out.stdout.splitlines()[-1] == "Nothing to promote."


def test_promote_failures(project):
    assert fails("promote", "shop", "staging", "production") == (
        "name the flags to promote, or pass --all"
    )
    assert fails("promote", "shop", "staging", "production", "nope", "--yes") == (
        "invalid input: flags: unknown flag 'nope' in project 'shop'"
    )
    assert fails("promote", "shop", "staging", "staging", "banner", "--yes") == (
        "invalid input: environment: promote to another environment than the source"
    )
    assert fails("promote", "shop", "staging", "qa", "banner").startswith(
        "unknown environment 'qa'"
    )
    editor = factories.member(project, "editor")
    message = fails(
        "promote", "shop", "staging", "production", "--all", "--yes", "--as", editor.username
    )
    assert message.endswith("needs the publisher role")
    assert state(project, "new-checkout", "production")["enabled"] is False


def test_import_adds_the_files_segments_each_audited(project, tmp_path):
    document = json.loads(run("export", "shop", "staging").stdout)
    for index in range(3):
        document["segments"][f"team-{index}"] = {
            "name": f"Team {index}",
            "conditions": [{"attribute": "team", "operator": "in", "values": [str(index)]}],
        }
    path = tmp_path / "segments.json"
    path.write_text(json.dumps(document))
    out = run("import", str(path), "shop", "staging")
    assert "+ segment team-0" in out.stdout and "= segment beta: unchanged" in out.stdout
    added = project.segments.filter(key__startswith="team-").order_by("key")
    assert [(s.key, s.name) for s in added] == [(f"team-{i}", f"Team {i}") for i in range(3)]
    entries = AuditEntry.objects.filter(object_type="segment", action="create", source="cli")
    assert sorted(entries.values_list("object_key", flat=True)) == ["team-0", "team-1", "team-2"]
    assert entries.get(object_key="team-1").after["conditions"][0]["values"] == ["1"]


def test_import_names_the_new_segment_the_store_refuses_and_writes_none(project, tmp_path):
    document = json.loads(run("export", "shop", "staging").stdout)
    document["segments"]["fine"] = {"conditions": []}
    document["segments"]["long"] = {"name": "x" * 201, "conditions": []}
    path = tmp_path / "segments.json"
    path.write_text(json.dumps(document))
    message = fails("import", str(path), "shop", "staging")
    assert message.startswith("invalid input: segments.long.name:"), message
    assert not project.segments.filter(key__in=["fine", "long"]).exists()
