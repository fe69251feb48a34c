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


def test_while_a_new_version_compiles_other_requests_answer_from_the_old_one(
    flag, monkeypatch, django_capture_on_commit_callbacks
):
    environment = development(flag)
    old = snapshots.snapshot(environment.pk)
    with django_capture_on_commit_callbacks(execute=True):
        services.flag_config_update(
            config=factories.config(flag), data={"enabled": False}, **SYSTEM
        )
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
