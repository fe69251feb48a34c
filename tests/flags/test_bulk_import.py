"""Importing many new flags: what is stored, audited and versioned, in bounded queries."""

import copy
import json

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from evaluation.documents import build_document
from flags.history import versions_of
from flags.models import AuditEntry, Environment, FlagConfigVersion, Project
from tests.flags.command_line import fails, run
from tests.flags.test_cli_transfer import project  # noqa: F401 (the fixture)

pytestmark = pytest.mark.django_db


def bulk_file(tmp_path, count: int, *, prerequisites: bool = False) -> tuple:
    """The shop's export with `count` new flags, copies of new-checkout in every environment."""
    document = json.loads(run("export", "shop").stdout)
    for env_document in document["environments"].values():
        template = env_document["flags"]["new-checkout"]
        for index in range(count):
            entry = copy.deepcopy(template)
            entry["salt"] = key = f"bulk-{index:03}"
            entry["metadata"]["name"] = f"Bulk {index}"
            entry["metadata"]["tags"] = ["bulk", f"team-{index % 3}"]
            if not prerequisites:
                entry["prerequisites"] = []
            env_document["flags"][key] = entry
    path = tmp_path / f"bulk-{count}.json"
    path.write_text(json.dumps(document))
    return path, document


def new_entries(document: dict, environment: str) -> dict:
    flags = document["environments"][environment]["flags"]
    return {key: entry for key, entry in flags.items() if key.startswith("bulk-")}


def test_new_flags_are_stored_as_the_file_gives_them(project, tmp_path):  # noqa: F811
    path, document = bulk_file(tmp_path, 12, prerequisites=True)
    run("import", str(path), "shop")
    for environment in project.environments.all():
        stored = build_document(environment.pk)["flags"]
        expected = new_entries(document, environment.key)
        assert {key: stored[key] for key in expected} == expected
    staging = new_entries(document, "staging")
    assert staging["bulk-000"]["prerequisites"] == [{"flag": "checkout-api", "variants": ["on"]}]
    assert sorted(project.tags.values_list("name", flat=True)) == [
        "bulk",
        "checkout",
        "team-0",
        "team-1",
        "team-2",
    ]


def test_bulk_import_audits_every_flag_and_configuration(project, tmp_path):  # noqa: F811
    path, document = bulk_file(tmp_path, 20)
    run("import", str(path), "shop")
    created = AuditEntry.objects.filter(project=project, action="create", object_type="flag")
    created = created.filter(flag_key__startswith="bulk-")
    assert sorted(created.values_list("flag_key", flat=True)) == [
        f"bulk-{index:03}" for index in range(20)
    ]
    assert created.get(flag_key="bulk-007").after["tags"] == ["bulk", "team-1"]
    configured = AuditEntry.objects.filter(
        project=project, object_type="flag_config", flag_key__startswith="bulk-"
    )
    assert configured.count() == 20 * 3
    entry = configured.get(flag_key="bulk-003", environment__key="staging")
    assert entry.source == "cli" and entry.actor_name == "operator"
    assert entry.after == new_entries(document, "staging")["bulk-003"]
    assert AuditEntry.objects.filter(project=project, action="import").count() == 1


def test_bulk_import_records_each_configuration_s_first_version(project, tmp_path):  # noqa: F811
    path, document = bulk_file(tmp_path, 10)
    run("import", str(path), "shop")
    versions = FlagConfigVersion.objects.filter(config__flag__key__startswith="bulk-")
    assert versions.count() == 10 * 3
    assert set(versions.values_list("version", "action")) == {(1, "create")}
    version = versions.get(config__flag__key="bulk-004", config__environment__key="production")
    assert version.state == new_entries(document, "production")["bulk-004"]
    (only,) = versions_of(version.config)
    assert only["current"] and only["changes"] == ["created"]


def test_bulk_import_bumps_each_environment_s_version_once(project, tmp_path):  # noqa: F811
    path, _ = bulk_file(tmp_path, 15)
    before = dict(Environment.objects.filter(project=project).values_list("key", "version"))
    run("import", str(path), "shop")
    after = dict(Environment.objects.filter(project=project).values_list("key", "version"))
    assert after == {key: version + 1 for key, version in before.items()}


def test_import_queries_do_not_grow_with_new_flags(
    project,  # noqa: F811
    tmp_path,
    django_assert_max_num_queries,
):
    few, _ = bulk_file(tmp_path, 5)
    many, _ = bulk_file(tmp_path, 50)
    with CaptureQueriesContext(connection) as captured:
        run("import", str(few), "copy-a", "--create-missing")
    # Ten times the flags: a few more batches of the same statements (SQLite takes fewer rows
    # per statement than PostgreSQL), never a statement per flag.
    with django_assert_max_num_queries(len(captured) + 10):
        run("import", str(many), "copy-b", "--create-missing")
    assert Project.objects.get(key="copy-b").flags.count() == 53


def test_an_invalid_last_flag_of_a_long_import_writes_nothing(project, tmp_path):  # noqa: F811
    # 1,200 flags: more than a batch of rows is written before the last flag's rule fails.
    count = 1200
    path, document = bulk_file(tmp_path, count)
    last = f"bulk-{count - 1:03}"
    entry = document["environments"]["production"]["flags"][last]
    serve = {"variant": entry["variants"][0]["key"]}
    entry["rules"] = [{"id": "long", "name": "x" * 201, "conditions": [], "serve": serve}]
    path.write_text(json.dumps(document))
    flags_before = set(project.flags.values_list("key", flat=True))
    audit_before = AuditEntry.objects.count()
    message = fails("import", str(path), "shop")
    assert message == (
        f"invalid input: environments.production.flags.{last}.rules[0]: name: "
        "Ensure this value has at most 200 characters (it has 201)."
    )
    assert set(project.flags.values_list("key", flat=True)) == flags_before
    assert AuditEntry.objects.count() == audit_before
    assert not FlagConfigVersion.objects.filter(config__flag__key__startswith="bulk-").exists()
    assert not project.tags.filter(name="bulk").exists()
