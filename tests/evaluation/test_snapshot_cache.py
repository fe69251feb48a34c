"""The server side of evaluation: documents from the store, compiled snapshots kept current."""

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from evaluation import cache as snapshots
from evaluation.documents import build_document
from flags import services
from flags.models import Environment
from tests import factories
from tests.factories import SYSTEM
from tests.servers import PrivateRedis

pytestmark = pytest.mark.django_db
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def flag():
    project = factories.project("shop")
    flag = factories.flag(project, "new-checkout")
    factories.configure(
        flag,
        enabled=True,
        rules=[
            {
                "conditions": [{"attribute": "plan", "operator": "equals", "values": ["pro"]}],
                "serve": {"variant": "on"},
            }
        ],
        defaultServe={"variant": "off"},
    )
    return flag


def development(flag) -> Environment:
    return Environment.objects.get(project=flag.project, key="development")


def test_document_carries_the_environment_version_and_validates_against_the_schema(flag):
    import jsonschema

    environment = development(flag)
    document = build_document(environment.pk)
    schema = json.loads((ROOT / "docs" / "flag-document.schema.json").read_text())
    jsonschema.validate(document, schema)
    assert document["version"] == environment.version
    assert document["flags"]["new-checkout"]["rules"][0]["serve"] == {"variant": "on"}


def test_snapshot_evaluates_what_the_store_says(flag):
    snapshot = snapshots.snapshot(development(flag).pk)
    assert snapshot.evaluate("new-checkout", {"targetingKey": "u", "plan": "pro"}).variant == "on"
    assert snapshot.evaluate("new-checkout", {"targetingKey": "u", "plan": "free"}).variant == "off"


def test_committed_change_is_seen_by_the_next_evaluation(flag, django_capture_on_commit_callbacks):
    environment = development(flag)
    assert snapshots.snapshot(environment.pk).evaluate("new-checkout", {}).variant == "off"
    with django_capture_on_commit_callbacks(execute=True):
        services.flag_config_update(
            config=factories.config(flag), data={"defaultServe": {"variant": "on"}}, **SYSTEM
        )
    result = snapshots.snapshot(environment.pk).evaluate("new-checkout", {"targetingKey": "u"})
    assert result.variant == "on"


def test_a_change_to_one_flag_compiles_only_that_flag(flag, django_capture_on_commit_callbacks):
    environment = development(flag)
    others = [factories.flag(flag.project, f"other-{index}") for index in range(5)]
    before = snapshots.snapshot(environment.pk)
    assert before.compiled_flags == len(others) + 1
    with django_capture_on_commit_callbacks(execute=True):
        services.flag_config_update(
            config=factories.config(flag), data={"enabled": False}, **SYSTEM
        )

    after = snapshots.snapshot(environment.pk)

    assert after.version > before.version
    assert after.compiled_flags == 1
    assert after.evaluate("new-checkout", {"plan": "pro"}).reason == "DISABLED"
    assert after.evaluate("other-0", {}).variant == before.evaluate("other-0", {}).variant


def test_while_a_new_version_compiles_other_requests_answer_from_the_old_one(flag, monkeypatch):
    # The other request reads the version from the cache, not from the test's transaction.
    monkeypatch.setattr(snapshots, "LOCAL_VERSION_TTL", 60)
    environment = development(flag)
    old = snapshots.snapshot(environment.pk)
    _written_elsewhere(flag, monkeypatch, {"enabled": False})
    compiling, answered = threading.Event(), threading.Event()
    compile_document = snapshots.compile_document

    def slow_compile(*args, **kwargs):
        compiling.set()
        answered.wait(timeout=10)  # the other request answers while this one compiles
        return compile_document(*args, **kwargs)

    monkeypatch.setattr(snapshots, "compile_document", slow_compile)
    served = []

    def other_request():
        compiling.wait(timeout=10)
        served.append(snapshots.snapshot(environment.pk).version)
        answered.set()

    other = threading.Thread(target=other_request)
    other.start()
    new = snapshots.snapshot(environment.pk)  # this request compiles the new version
    other.join()

    assert served == [old.version]
    assert answered.is_set() and new.version > old.version
    assert snapshots.snapshot(environment.pk).version == new.version


def test_no_database_query_while_the_version_is_unchanged(
    flag, monkeypatch, django_assert_num_queries
):
    environment = development(flag)
    snapshots.snapshot(environment.pk)
    monkeypatch.setattr(snapshots, "VERSION_CHECK_SECONDS", 0)  # ask the cache every time
    with django_assert_num_queries(0):
        for _ in range(50):
            snapshots.snapshot(environment.pk).evaluate("new-checkout", {"targetingKey": "u"})


def test_shared_version_only_ever_increases(flag):
    environment = development(flag)
    snapshots.environments_changed({environment.pk: environment.version + 5})
    snapshots.environments_changed({environment.pk: environment.version + 2})
    assert snapshots.current_version(environment.pk) == environment.version + 5


def test_a_slower_reader_never_replaces_a_newer_snapshot(flag, django_capture_on_commit_callbacks):
    environment = development(flag)
    old = snapshots.snapshot(environment.pk)
    with django_capture_on_commit_callbacks(execute=True):
        factories.configure(flag, defaultServe={"variant": "on"})
    new = snapshots.snapshot(environment.pk)
    assert new.version > old.version
    # A reader that had looked up an older version arrives late: the newer snapshot stays.
    assert snapshots._refresh(environment.pk, old.version, time.monotonic()) is new


def test_change_in_one_environment_leaves_the_others_version_alone(flag):
    staging = Environment.objects.get(project=flag.project, key="staging")
    before = staging.version
    factories.configure(flag, "development", enabled=False)
    staging.refresh_from_db()
    assert staging.version == before


def test_segment_change_bumps_every_environment_of_the_project(flag):
    before = dict(Environment.objects.values_list("key", "version"))
    services.segment_create(project=flag.project, key="beta", data={}, **SYSTEM)
    after = dict(Environment.objects.values_list("key", "version"))
    assert all(after[key] == before[key] + 1 for key in before)


# --- A real Redis that goes away ---------------------------------------------------------


SCRIPT = """
import json, os, signal, time
import django
django.setup()
from django.core.management import call_command
from django.db import transaction
from evaluation import cache as snapshots
from flags import services
from flags.models import Environment, FlagConfig

call_command("migrate", verbosity=0)
call_command("load_demo", verbosity=0)
env = Environment.objects.get(project__key="demo", key="production")
context = {"targetingKey": "user-7", "country": "US", "plan": "pro"}
out = {"before": snapshots.snapshot(env.pk).evaluate("new-checkout", context).reason}
os.kill(int(os.environ["REDIS_PID"]), signal.SIGKILL)
time.sleep(0.2)
out["redis_down"] = snapshots.snapshot(env.pk).evaluate("new-checkout", context).reason
config = FlagConfig.objects.get(flag__key="new-checkout", environment=env)
with transaction.atomic():
    services.flag_toggle(config=config, enabled=True, actor=None, source="system")
time.sleep(snapshots.VERSION_CHECK_SECONDS + 0.05)
started = time.monotonic()
result = snapshots.snapshot(env.pk).evaluate("new-checkout", context)
out["after_change"] = result.reason
out["lookup_ms"] = (time.monotonic() - started) * 1000
print(json.dumps(out))
"""


@pytest.mark.server
def test_evaluation_survives_redis_going_away(tmp_path):
    redis = PrivateRedis()
    redis.start()
    try:
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "flagsite.settings",
            "DB_URL": f"sqlite:///{tmp_path / 'flags.sqlite3'}",
            "REDIS_URL": redis.url,
            "REDIS_PID": str(redis.process.pid),
            "NODE_ENV": "development",
        }
        done = subprocess.run(
            [sys.executable, "-c", SCRIPT],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        redis.kill()
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["before"] == "DISABLED"
    assert out["redis_down"] == "DISABLED"  # last good snapshot, no error
    assert out["after_change"] == "TARGETING_MATCH"  # the version came from the database
    # One line for the state change, however many look-ups met the dead Redis.
    assert done.stderr.count("store down: the cache is unavailable") == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_each_write_reaches_the_document_built_from_the_one_before(flag):
    """The document reuses the entries of flags and segments that did not change: after each
    kind of write it is the document a process that never built one would build."""
    environment = development(flag)
    project = flag.project
    other = factories.flag(project, "other")
    segment = services.segment_create(
        project=project, key="beta", data={"conditions": []}, **SYSTEM
    )

    def written(write) -> dict:
        build_document(environment.pk)  # the document before, whose entries are kept
        write()
        document = build_document(environment.pk)
        snapshots.clear_local()  # forgets the kept entries too
        assert json.dumps(document) == json.dumps(build_document(environment.pk))
        return document

    config = factories.config(flag)
    fields = [
        {"name": "New checkout"},
        {"description": "the 2027 flow"},
        {"tags": ["checkout", "web"]},
        {"variants": [{"key": "on", "value": True}, {"key": "off", "value": False}]},
        {"client_side": True},
        {"salt": "s1"},
        {"archived": True},
    ]
    for data in fields:
        document = written(lambda data=data: services.flag_update(flag=flag, data=data, **SYSTEM))
    assert document["flags"]["new-checkout"]["metadata"]["tags"] == ["checkout", "web"]
    assert document["flags"]["new-checkout"]["archived"] is True
    configs = [
        {"enabled": False},
        {"targets": [{"variant": "on", "values": ["user-1"]}]},
        {"prerequisites": [{"flag": "other", "variants": ["on"]}]},
        {
            "rules": [
                {
                    "conditions": [{"operator": "in_segment", "values": ["beta"]}],
                    "serve": {"variant": "on"},
                }
            ]
        },
        {"defaultServe": {"variant": "on"}, "offVariant": "on"},
    ]
    for data in configs:
        document = written(
            lambda data=data: services.flag_config_update(config=config, data=data, **SYSTEM)
        )
    assert document["flags"]["new-checkout"]["prerequisites"] == [
        {"flag": "other", "variants": ["on"]}
    ]
    document = written(
        lambda: services.segment_update(segment=segment, data={"included": ["user-9"]}, **SYSTEM)
    )
    assert document["segments"]["beta"]["included"] == ["user-9"]
    document = written(lambda: factories.flag(project, "third"))
    assert list(document["flags"]) == ["new-checkout", "other", "third"]
    document = written(
        lambda: services.flag_config_update(
            config=factories.config(other), data={"enabled": True}, **SYSTEM
        )
    )
    assert document["flags"]["other"]["enabled"] is True


@pytest.fixture
def refresher():
    """The refresher thread a server process runs (started with its change listener)."""
    started = snapshots.Refresher.ensure_started()
    yield started
    started.stop()


def _written_elsewhere(flag, monkeypatch, data: dict, *, heard: bool = True) -> None:
    """A change committed by another process: the shared version is raised and this process
    hears of it (its snapshot is stale; not with `heard` False), but compiles nothing."""
    from django.test import TestCase

    with monkeypatch.context() as patched, TestCase.captureOnCommitCallbacks(execute=True):
        patched.setattr(snapshots, "refresh", lambda environment_id: None)
        if not heard:
            patched.setattr(snapshots, "mark_stale", lambda environment_id: None)
        services.flag_config_update(config=factories.config(flag), data=data, **SYSTEM)


def _served_version(environment_id: int, version: int, timeout: float = 10) -> int:
    deadline = time.monotonic() + timeout
    while snapshots.snapshot(environment_id).version < version and time.monotonic() < deadline:
        time.sleep(0.01)
    return snapshots.snapshot(environment_id).version


@pytest.mark.django_db(transaction=True)
def test_an_announced_version_is_compiled_and_served_without_a_request_compiling_it(
    flag, refresher, monkeypatch
):
    import asyncio

    from evaluation.broadcast import Broadcaster

    environment = development(flag)
    old = snapshots.snapshot(environment.pk)
    # Requests never look at the version: only the announcement can bring the new one.
    monkeypatch.setattr(snapshots, "VERSION_CHECK_SECONDS", 3600)
    _written_elsewhere(flag, monkeypatch, {"enabled": False}, heard=False)
    version = Environment.objects.get(pk=environment.pk).version
    assert snapshots.snapshot(environment.pk) is old
    compiled_in = []
    compile_document = snapshots.compile_document

    def compile_recorded(*args, **kwargs):
        compiled_in.append(threading.current_thread().name)
        return compile_document(*args, **kwargs)

    monkeypatch.setattr(snapshots, "compile_document", compile_recorded)
    loop = asyncio.new_event_loop()
    try:
        Broadcaster(loop).announce(environment.pk, version)
    finally:
        loop.close()
    deadline = time.monotonic() + 10
    while not compiled_in and time.monotonic() < deadline:  # no request meanwhile
        time.sleep(0.01)
    assert compiled_in == ["snapshot-refresher"]
    assert _served_version(environment.pk, version) == version > old.version
    assert compiled_in == ["snapshot-refresher"]
    assert snapshots.snapshot(environment.pk).evaluate("new-checkout", {}).reason == "DISABLED"


def _slow_compiles(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Compiles from now on wait for `release` (10 s at most); `compiling` is set when one
    has started."""
    compiling, release = threading.Event(), threading.Event()
    compile_document = snapshots.compile_document

    def slow_compile(*args, **kwargs):
        compiling.set()
        release.wait(timeout=10)
        return compile_document(*args, **kwargs)

    monkeypatch.setattr(snapshots, "compile_document", slow_compile)
    return compiling, release


@pytest.mark.django_db(transaction=True)
def test_requests_during_a_slow_compile_are_answered_at_once_from_the_old_snapshot(
    flag, refresher, monkeypatch
):
    environment = development(flag)
    old = snapshots.snapshot(environment.pk)
    pro = {"targetingKey": "u", "plan": "pro"}
    assert old.evaluate("new-checkout", pro).variant == "on"
    compiling, release = _slow_compiles(monkeypatch)
    _written_elsewhere(flag, monkeypatch, {"enabled": False})

    started = time.monotonic()
    answers = [snapshots.snapshot(environment.pk).evaluate("new-checkout", pro)]
    assert compiling.wait(timeout=10)  # the refresher, not this request, compiles
    answers += [snapshots.snapshot(environment.pk).evaluate("new-checkout", pro)]
    waited = time.monotonic() - started
    release.set()

    assert [answer.variant for answer in answers] == ["on", "on"]
    assert waited < 5  # not the 10 s the compile would have held a request
    version = Environment.objects.get(pk=environment.pk).version
    assert _served_version(environment.pk, version) == version
    assert snapshots.snapshot(environment.pk).evaluate("new-checkout", pro).reason == "DISABLED"


def test_without_a_refresher_the_request_that_finds_a_new_version_compiles_it(flag, monkeypatch):
    environment = development(flag)
    old = snapshots.snapshot(environment.pk)
    _written_elsewhere(flag, monkeypatch, {"enabled": False})

    assert snapshots.snapshot(environment.pk).version > old.version


def test_a_stream_opened_while_its_process_still_compiles_a_heard_version_is_told_of_it():
    """The process heard of version 21 (its refresher compiles it) and still serves 19 when a
    client opens a stream: the stream opens at 19, and that announcement will not be made
    again, so the stream must pass it on by itself, or the client waits for the next change."""
    import asyncio

    from evaluation import streams
    from evaluation.broadcast import Broadcaster

    async def first_words(broadcaster: Broadcaster) -> list[str]:
        queue = broadcaster.subscribe(7, 19)
        events = streams._events(broadcaster, queue, 7, 19, 19)
        try:
            return [await anext(events), await asyncio.wait_for(anext(events), 2)]
        finally:
            await events.aclose()

    loop = asyncio.new_event_loop()
    try:
        broadcaster = Broadcaster(loop)
        broadcaster.announce(7, 21)
        connected, told = loop.run_until_complete(first_words(broadcaster))
    finally:
        loop.close()
    assert "connected at version 19" in connected
    assert told.startswith("id: 21\n") and '"version": 21' in told


@pytest.mark.django_db(transaction=True)
def test_a_stream_opens_at_the_version_its_process_serves_while_a_newer_one_compiles(
    flag, refresher, monkeypatch
):
    """A client that fetched the document a moment ago got the old snapshot's version: the
    stream must not open at the newer one, or the client is never told to fetch again."""
    environment = development(flag)
    old = snapshots.snapshot(environment.pk)
    compiling, release = _slow_compiles(monkeypatch)
    _written_elsewhere(flag, monkeypatch, {"enabled": False})
    version = Environment.objects.get(pk=environment.pk).version
    assert snapshots.snapshot(environment.pk) is old  # answered while the refresher compiles
    assert compiling.wait(timeout=10)
    assert snapshots.served_version(environment.pk) == old.version < version
    release.set()
    assert _served_version(environment.pk, version) == version
    assert snapshots.served_version(environment.pk) == version
