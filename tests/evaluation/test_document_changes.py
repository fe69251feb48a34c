"""The next document of an environment from the changes each write records: the same bytes as
a document built from nothing, read in rows that do not grow with the project."""

import json
import threading

import pytest
from django.db import connection, connections, transaction
from django.test.utils import CaptureQueriesContext

from evaluation.documents import build_document, clear_fragments
from flags import services
from flags.models import DocumentChange, Environment, Flag, FlagConfig, Segment
from flags.services import steps
from tests import factories
from tests.factories import SYSTEM

pytestmark = pytest.mark.django_db


def shop(key: str):
    """A project of two flags (one with a rule in development) and two segments."""
    project = factories.project(key)
    checkout = factories.flag(project, "new-checkout", tags=["web"])
    factories.flag(project, "checkout-api")
    factories.configure(
        checkout,
        enabled=True,
        rules=[
            {
                "conditions": [{"attribute": "plan", "operator": "equals", "values": ["pro"]}],
                "serve": {"variant": "on"},
            }
        ],
    )
    services.segment_create(project=project, key="beta", data={"conditions": []}, **SYSTEM)
    services.segment_create(project=project, key="staff", data={"included": ["u1"]}, **SYSTEM)
    return project


@pytest.fixture
def project():
    return shop("shop")


def development(project) -> Environment:
    return project.environments.get(key="development")


def from_scratch(environment_id: int) -> str:
    """The document a process that never built one builds, as JSON."""
    clear_fragments()
    return json.dumps(build_document(environment_id))


def rebuilt(environment: Environment, write) -> dict:
    """The document built after `write` from the one before (its entries kept), checked to
    be byte for byte the one built from nothing."""
    build_document(environment.pk)
    write()
    document = build_document(environment.pk)
    assert json.dumps(document) == from_scratch(environment.pk)
    return document


def flag(project, key: str) -> Flag:
    return Flag.objects.get(project=project, key=key)


def segment(project, key: str) -> Segment:
    return Segment.objects.get(project=project, key=key)


def test_each_kind_of_write_reaches_the_next_document_through_its_recorded_changes(project):
    environment = development(project)
    checkout = flag(project, "new-checkout")
    config = factories.config(checkout)
    writes = [
        lambda: services.flag_toggle(config=config, enabled=False, **SYSTEM),
        lambda: services.flag_update(flag=checkout, data={"name": "Checkout"}, **SYSTEM),
        lambda: services.flag_update(flag=checkout, data={"tags": ["web", "ios"]}, **SYSTEM),
        lambda: services.flag_update(
            flag=checkout,
            data={"variants": [{"key": "on", "value": True}, {"key": "off", "value": False}]},
            **SYSTEM,
        ),
        lambda: services.flag_update(flag=checkout, data={"archived": True}, **SYSTEM),
        lambda: services.flag_update(flag=checkout, data={"client_side": True}, **SYSTEM),
        lambda: services.flag_config_update(
            config=config,
            data={"prerequisites": [{"flag": "checkout-api", "variants": ["on"]}]},
            **SYSTEM,
        ),
        lambda: services.flag_config_update(
            config=config,
            data={
                "rules": [
                    {
                        "conditions": [{"operator": "in_segment", "values": ["beta"]}],
                        "serve": {"variant": "on"},
                    }
                ]
            },
            **SYSTEM,
        ),
        lambda: services.flag_targets_change(config=config, variant="on", add=["user-1"], **SYSTEM),
        lambda: services.flag_config_update(
            config=config, data={"defaultServe": {"variant": "on"}}, **SYSTEM
        ),
        lambda: services.version_restore(config=factories.config(checkout), version=2, **SYSTEM),
        lambda: services.segment_update(
            segment=segment(project, "beta"), data={"included": ["user-9"]}, **SYSTEM
        ),
        lambda: services.segments_create_many(
            project=project, segments={"alpha": {}, "zeta": {"excluded": ["u2"]}}, **SYSTEM
        ),
        lambda: services.environment_update(
            environment=environment, data={"name": "Dev"}, **SYSTEM
        ),
    ]
    for write in writes:
        rebuilt(environment, write)
    document = rebuilt(
        environment, lambda: services.segment_delete(segment=segment(project, "staff"), **SYSTEM)
    )
    assert list(document["segments"]) == ["alpha", "beta", "zeta"]
    assert document["flags"]["new-checkout"]["archived"] is True
    restored = document["flags"]["new-checkout"]  # version 2: its first rule, no targets
    assert restored["rules"][0]["conditions"][0]["attribute"] == "plan"
    assert restored["targets"] == []


def test_new_flags_and_segments_take_their_place_in_key_order(project):
    environment = development(project)
    for key in ["a-first", "checkout-b", "m-middle", "zz-last"]:
        document = rebuilt(environment, lambda key=key: factories.flag(project, key))
    assert list(document["flags"]) == [
        "a-first",
        "checkout-api",
        "checkout-b",
        "m-middle",
        "new-checkout",
        "zz-last",
    ]
    for key in ["aa", "c", "zz"]:
        document = rebuilt(
            environment,
            lambda key=key: services.segment_create(project=project, key=key, data={}, **SYSTEM),
        )
    assert list(document["segments"]) == ["aa", "beta", "c", "staff", "zz"]


def test_an_import_reaches_the_next_document(project):
    environment = development(project)
    flags = [{"key": f"bulk-{index:02}", "tags": ["bulk"]} for index in range(30)]
    configs = {
        data["key"]: {
            environment: {"enabled": True, "targets": [{"variant": "on", "values": ["x"]}]}
        }
        for data in flags
    }
    document = rebuilt(
        environment,
        lambda: services.flags_create_many(project=project, flags=flags, configs=configs, **SYSTEM),
    )
    assert document["flags"]["bulk-29"]["enabled"] is True
    few = [{"key": "checkout-c"}, {"key": "import-2"}]
    document = rebuilt(
        environment,
        lambda: services.flags_create_many(project=project, flags=few, configs={}, **SYSTEM),
    )
    assert "checkout-c" in document["flags"] and "import-2" in document["flags"]


def test_a_write_of_too_many_to_list_reaches_the_next_document(project, monkeypatch):
    monkeypatch.setattr(steps, "DOCUMENT_CHANGES_LISTED", 2)
    environment = development(project)
    flags = [{"key": f"bulk-{index}"} for index in range(3)]
    rebuilt(
        environment,
        lambda: services.flags_create_many(project=project, flags=flags, configs={}, **SYSTEM),
    )
    assert (
        DocumentChange.objects.get(environment=environment, version=environment.version + 1).flags
        is None
    )


def test_a_deleted_flag_leaves_the_next_document(project):
    environment = development(project)

    def delete() -> None:
        doomed = flag(project, "checkout-api")
        pk = doomed.pk
        doomed.delete()
        steps.environments_changed([environment.pk], flags=[pk], segments=())

    document = rebuilt(environment, delete)
    assert list(document["flags"]) == ["new-checkout"]


def test_a_document_older_than_the_changes_kept_is_rebuilt_from_every_revision(
    project, monkeypatch
):
    monkeypatch.setattr(steps, "DOCUMENT_CHANGES_KEPT", 2)
    monkeypatch.setattr(steps, "DOCUMENT_CHANGES_PRUNED_EVERY", 1)
    environment = development(project)
    config = factories.config(flag(project, "new-checkout"))
    build_document(environment.pk)
    held = Environment.objects.get(pk=environment.pk).version
    for enabled in (False, True, False):
        services.flag_toggle(config=config, enabled=enabled, **SYSTEM)
    services.segment_update(segment=segment(project, "beta"), data={"included": ["u"]}, **SYSTEM)
    assert not DocumentChange.objects.filter(environment=environment, version=held + 1).exists()
    document = build_document(environment.pk)
    assert document["flags"]["new-checkout"]["enabled"] is False
    assert document["segments"]["beta"]["included"] == ["u"]
    assert json.dumps(document) == from_scratch(environment.pk)


def test_a_version_made_without_a_record_is_read_from_every_revision(project):
    """A version bumped around the services (a script, a restored backup) lists nothing:
    the build does not trust the records across it."""
    environment = development(project)
    build_document(environment.pk)
    config = factories.config(flag(project, "new-checkout"))
    config.enabled = False
    config.save()
    Environment.objects.filter(pk=environment.pk).update(version=environment.version + 5)
    document = build_document(environment.pk)
    assert document["flags"]["new-checkout"]["enabled"] is False
    assert json.dumps(document) == from_scratch(environment.pk)


def rows_read(build) -> int:
    """The rows the queries `build` makes return (each SELECT run again, its rows counted)."""
    with CaptureQueriesContext(connection) as queries:
        build()
    total = 0
    with connection.cursor() as cursor:
        for query in queries.captured_queries:
            if query["sql"].lstrip().upper().startswith("SELECT"):
                cursor.execute(query["sql"])
                total += len(cursor.fetchall())
    return total


def grown(project, count: int) -> None:
    flags = [{"key": f"filler-{index:05}"} for index in range(count)]
    environments = list(project.environments.all())
    configs = {data["key"]: {env: {} for env in environments} for data in flags}
    services.flags_create_many(project=project, flags=flags, configs=configs, **SYSTEM)


def rebuild_rows(project) -> dict[str, int]:
    """The rows each kind of rebuild reads, after a document of the environment was built."""
    environment = development(project)
    build_document(environment.pk)
    config = factories.config(flag(project, "new-checkout"))
    writes = {
        "toggle": lambda: services.flag_toggle(config=config, enabled=False, **SYSTEM),
        "flag": lambda: services.flag_update(
            flag=flag(project, "checkout-api"), data={"name": "API"}, **SYSTEM
        ),
        "new flag": lambda: factories.flag(project, "m-new"),
        "segment": lambda: services.segment_update(
            segment=segment(project, "beta"), data={"included": ["u"]}, **SYSTEM
        ),
        "new segment": lambda: services.segment_create(
            project=project, key="m-new", data={}, **SYSTEM
        ),
    }
    rows = {}
    for name, write in writes.items():
        write()
        rows[name] = rows_read(lambda: build_document(environment.pk))
    assert json.dumps(build_document(environment.pk)) == from_scratch(environment.pk)
    return rows


def test_a_rebuild_reads_rows_in_proportion_to_the_change_not_to_the_project(project):
    small = rebuild_rows(project)
    other = shop("large")
    grown(other, 2000)
    assert FlagConfig.objects.filter(flag__project=other).count() == 3 * 2002
    large = rebuild_rows(other)
    assert large == small
    assert max(large.values()) < 30


@pytest.mark.django_db(transaction=True)
def test_writes_racing_on_one_environment_each_reach_the_next_document():
    """A write holds the environment's version until it commits: a second write waits for
    it and takes the next version, so the document built between them, and the one after
    both, are each the one built from nothing."""
    if connection.vendor != "postgresql":
        pytest.skip("the threads need a database server (the tests' SQLite is in memory)")
    project = shop("race")
    environment = development(project)
    first, second = (
        factories.config(flag(project, key)) for key in ("new-checkout", "checkout-api")
    )
    build_document(environment.pk)
    bumped, release = threading.Event(), threading.Event()
    versions = {}

    def write(config, name: str, hold: bool) -> None:
        try:
            with transaction.atomic():
                services.flag_toggle(config=config, enabled=not config.enabled, **SYSTEM)
                versions[name] = Environment.objects.get(pk=environment.pk).version
                if hold:
                    bumped.set()
                    release.wait(10)
        finally:
            connections.close_all()

    holding = threading.Thread(target=write, args=(first, "first", True))
    holding.start()
    assert bumped.wait(10)
    waiting = threading.Thread(target=write, args=(second, "second", False))
    waiting.start()
    waiting.join(0.5)
    assert waiting.is_alive()  # waits for the first write's lock on the environment
    between = build_document(environment.pk)
    assert between["version"] == environment.version
    release.set()
    holding.join(10)
    waiting.join(10)
    assert versions == {"first": environment.version + 1, "second": environment.version + 2}
    document = build_document(environment.pk)
    assert document["version"] == environment.version + 2
    assert between["flags"]["new-checkout"]["enabled"] is True  # the first write uncommitted
    assert document["flags"]["new-checkout"]["enabled"] is False
    assert document["flags"]["checkout-api"]["enabled"] is True
    assert json.dumps(document) == from_scratch(environment.pk)


def test_an_environment_update_keeps_the_version_of_the_writes_since_it_was_read(project):
    environment = development(project)
    read_at = environment.version
    config = factories.config(flag(project, "new-checkout"))
    services.flag_toggle(config=config, enabled=False, **SYSTEM)
    services.environment_update(environment=environment, data={"name": "Dev"}, **SYSTEM)
    document = rebuilt(
        environment, lambda: services.flag_toggle(config=config, enabled=True, **SYSTEM)
    )
    assert document["version"] == read_at + 2
    assert Environment.objects.get(pk=environment.pk).name == "Dev"
