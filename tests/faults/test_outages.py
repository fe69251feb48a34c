"""Faults under load on the production serving stack, against stores of the test's own.

One instance of `manage.py serve` (NODE_ENV=production, gunicorn with 2 uvicorn workers)
runs on a PostgreSQL (initdb in a temporary directory) and a redis-server started here on
free ports, so they can be stopped and killed. Four evaluation threads and one writer put
a bounded load on it while each fault happens; every answer is recorded and counted.
"""

from __future__ import annotations

import os
import re
import signal
import time

import httpx
import pytest

from evaluation import credentials
from tests.evaluation.test_instances import EventReader
from tests.faults.load import (
    Evaluations,
    Outcome,
    Writes,
    environment_version,
    stored_flags,
    wait_until,
)
from tests.servers import PASSWORD, Cluster, PrivatePostgres, PrivateRedis

pytestmark = pytest.mark.server

OUTAGE_SECONDS = 15
WORKERS = 2


@pytest.fixture(scope="module")
def postgres():
    with PrivatePostgres() as server:
        yield server


@pytest.fixture(scope="module")
def redis():
    with PrivateRedis() as server:
        yield server


@pytest.fixture(scope="module")
def cluster(postgres, redis):
    with Cluster(
        instances=1,
        redis_url=redis.url,
        database_server=postgres.url,
        workers=WORKERS,
        production=True,
        extra_env={"LOG_LEVEL": "WARNING"},  # the request lines would drown the store lines
    ) as running:
        running.wait_for_workers(0, WORKERS)
        yield running


@pytest.fixture(scope="module")
def token(cluster):
    return cluster.token(0)


def load(cluster: Cluster) -> Evaluations:
    return Evaluations([cluster.url(0)], cluster.seed["client_key"], cluster.seed["server_key"])


def failures(outcomes: list[Outcome]) -> list[Outcome]:
    return [outcome for outcome in outcomes if not outcome.ok]


def describe(outcomes: list[Outcome]) -> str:
    return "; ".join(f"{o.status} {o.detail[:120]}" for o in outcomes[:5])


def lines(cluster: Cluster, text: str, since: int = 0) -> int:
    return cluster.log(cluster.ports[0])[since:].count(text)


def log_size(cluster: Cluster) -> int:
    return len(cluster.log(cluster.ports[0]))


def settled_version(evaluations: Evaluations, since: float) -> int:
    """The one version every evaluation served since `since` (they must agree)."""
    versions = {o.version for o in evaluations.outcomes if o.started >= since}
    assert len(versions) == 1, f"instances disagree while nothing changes: {versions}"
    return versions.pop()


def test_evaluation_answers_through_a_postgres_outage_and_writes_get_503_json(
    cluster, postgres, token
):
    log_start = log_size(cluster)
    writes = Writes(cluster.url(0), token, prefix="pg")
    with load(cluster) as evaluations:
        writes.start()
        time.sleep(3)
        writes.paused.set()  # a quiet second, so that every worker agrees on the version
        time.sleep(1.5)
        quiet = time.monotonic() - 0.5
        before = settled_version(evaluations, since=quiet)
        writes.paused.clear()
        down = time.monotonic()
        postgres.stop()
        stopped = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        up = time.monotonic()
        postgres.start()
        back = wait_until(lambda: writes.sent[-1].ok, timeout=10)
        time.sleep(2)
        writes.stop()
    outcomes = evaluations.outcomes
    during = [o for o in outcomes if stopped <= o.started < up]

    # Evaluation never failed: before, during (from the last good snapshot) and after.
    assert len(during) > 100, "the load was not running"
    assert failures(outcomes) == [], describe(failures(outcomes))

    # Writes during the outage were refused at once with 503 JSON naming the store.
    refused = [o for o in writes.sent if stopped <= o.started < up]
    assert len(refused) >= OUTAGE_SECONDS * 2
    assert all(o.status == 503 for o in refused), describe(failures(refused))
    assert {(o.body or {}).get("error") for o in refused} == {"store_unavailable"}
    assert {(o.body or {}).get("store") for o in refused} == {"database"}
    assert max(o.finished - o.started for o in refused) < 2.5
    for outcome in writes.sent:  # no other kind of failure, even at the edges of the outage
        assert outcome.ok or (outcome.status == 503 and outcome.body["store"] == "database")
    assert back < 10

    # Every acknowledged write is there, and no version went backwards.
    acknowledged = writes.acknowledged
    assert len(acknowledged) >= 10
    assert acknowledged <= stored_flags(cluster.url(0), token)
    served_during = {o.version for o in during}
    assert served_during == {before}, "during the outage the last good snapshot is served"
    after_down = [o.version for o in outcomes if o.started >= down]
    assert min(after_down) >= before
    assert max(o.version for o in outcomes) <= environment_version(cluster.url(0), token)

    # The log tells the story in a line per state change and worker, without tracebacks.
    log = cluster.log(cluster.ports[0])[log_start:]
    assert 1 <= log.count("store down: the database") <= WORKERS, log[-3000:]
    assert log.count("store down: the database") == log.count("store back: the database")
    assert "Traceback" not in log, log[log.index("Traceback") - 500 :][:3000]
    assert len(log) < 20_000, f"{len(log)} bytes of log for one outage"


def admin_login(url: str) -> httpx.Response:
    """Sign in to the admin as a browser does: the login form, then its POST."""
    page = httpx.get(f"{url}/admin/login/")
    assert page.status_code == 200, page.text[:500]  # the form itself needs no database
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    # The cookie is `Secure` in production; over this test's plain HTTP it is sent by hand.
    cookie = f"csrftoken={page.cookies['csrftoken']}"
    return httpx.post(
        f"{url}/admin/login/",
        data={"username": "root", "password": PASSWORD, "csrfmiddlewaretoken": token},
        headers={"Cookie": cookie},
    )


def test_logins_and_reads_fail_fast_with_503_naming_the_database(cluster, postgres, token):
    url = cluster.url(0)
    postgres.stop()
    try:
        started = time.monotonic()
        login = httpx.post(
            f"{url}/api/v1/auth/token/", json={"username": "root", "password": PASSWORD}
        )
        read = httpx.get(
            f"{url}/api/v1/projects/shop/flags", headers={"Authorization": f"Bearer {token}"}
        )
        admin = admin_login(url)
        readiness = httpx.get(f"{url}/readyz")
        elapsed = time.monotonic() - started
    finally:
        postgres.start()
    for response in (login, read):
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        assert response.json()["store"] == "database"
        assert response.headers["retry-after"] == "1"
    assert admin.status_code == 503
    assert admin.headers["content-type"].startswith("text/html")  # the admin keeps HTML
    assert "The database is unavailable" in admin.text
    # Evaluation still answers, so the instance stays in the load balancer, degraded.
    assert readiness.status_code == 200
    assert readiness.json()["status"] == "degraded"
    assert readiness.json()["checks"]["database"].startswith("OperationalError")
    assert elapsed < 5
    wait_until(lambda: httpx.get(f"{url}/readyz").json()["status"] == "ok", timeout=10)


def create_key(url: str, token: str, name: str) -> dict:
    response = httpx.post(
        f"{url}/api/v1/projects/shop/api-keys",
        json={"name": name, "kind": "client", "environment": "production"},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 201, response.text
    return response.json()


# A new connection for each request, so that both workers answer some of them.
fresh_connections = httpx.Client(timeout=5, limits=httpx.Limits(max_keepalive_connections=0))


def evaluate_with(url: str, secret: str) -> httpx.Response:
    return fresh_connections.post(
        f"{url}/ofrep/v1/evaluate/flags/new-checkout",
        json={"context": {"targetingKey": "user-1"}},
        headers={"X-API-Key": secret},
    )


def test_keys_known_before_an_outage_work_through_it_and_revoked_ones_stay_refused(
    cluster, postgres, token
):
    url = cluster.url(0)
    kept = create_key(url, token, "kept")
    revoked = create_key(url, token, "revoked")
    guess = "ffc_" + "g" * 43
    # Right after an earlier outage a worker may still wait its RETRY_SECONDS (503) before
    # it looks a key it has never seen up, and reconnecting to the restarted database takes
    # a while on a busy machine; once one worker has, the shared cache has it. (Preparation:
    # what is asserted starts with the ten rounds below.)
    wait_until(lambda: evaluate_with(url, kept["secret"]).status_code == 200, timeout=20)
    wait_until(lambda: evaluate_with(url, revoked["secret"]).status_code == 200, timeout=20)
    wait_until(lambda: evaluate_with(url, guess).status_code == 401, timeout=20)
    for _ in range(10):
        assert evaluate_with(url, kept["secret"]).status_code == 200
        assert evaluate_with(url, revoked["secret"]).status_code == 200
        assert evaluate_with(url, guess).status_code == 401
    response = httpx.post(
        f"{url}/api/v1/projects/shop/api-keys/{revoked['id']}/revoke",
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 200
    time.sleep(credentials.REVOCATION_BOUND_SECONDS)  # the documented bound, then the outage
    postgres.stop()
    try:
        answers: dict[str, list[httpx.Response]] = {"kept": [], "revoked": [], "guess": []}
        # Longer than every cache of a resolved key counts as an answer.
        deadline = time.monotonic() + credentials.REVOCATION_BOUND_SECONDS + 2
        while time.monotonic() < deadline:
            answers["kept"].append(evaluate_with(url, kept["secret"]))
            answers["revoked"].append(evaluate_with(url, revoked["secret"]))
            answers["guess"].append(evaluate_with(url, guess))
            time.sleep(0.05)
        never_seen = evaluate_with(url, "ffc_" + "n" * 43)
    finally:
        postgres.start()
    assert len(answers["kept"]) > 20
    assert {r.status_code for r in answers["kept"]} == {200}
    assert {r.status_code for r in answers["revoked"]} == {401}
    assert all("revoked" in r.json()["errorDetails"] for r in answers["revoked"])
    # An unknown key is never accepted: 401 where it is known to be unknown, else 503.
    assert {r.status_code for r in answers["guess"]} <= {401, 503}
    assert never_seen.status_code == 503
    assert never_seen.json()["store"] == "database"


def test_evaluation_answers_through_a_redis_kill_and_changes_still_arrive(cluster, redis, token):
    log_start = log_size(cluster)
    writes = Writes(cluster.url(0), token, prefix="redis")
    with load(cluster) as evaluations:
        writes.start()
        time.sleep(2)
        killed = time.monotonic()
        redis.kill()
        time.sleep(8)
        restarted = time.monotonic()
        redis.start()
        time.sleep(4)
        writes.stop()
        # The last change reaches every evaluation (pub/sub is back, or the version poll).
        final = environment_version(cluster.url(0), token)
        wait_until(lambda: evaluations.outcomes[-1].version == final, timeout=3)
    outcomes = evaluations.outcomes
    during = [o for o in outcomes if killed <= o.started < restarted]
    assert len(during) > 50
    assert failures(outcomes) == [], describe(failures(outcomes))
    # Redis is a cache: writes go on while it is away.
    assert failures(writes.sent) == [], describe(failures(writes.sent))
    assert writes.acknowledged <= stored_flags(cluster.url(0), token)
    # Changes made while Redis was away still reached evaluation (from the database).
    versions_during = [o.version for o in during]
    assert max(versions_during) > min(versions_during)
    log = cluster.log(cluster.ports[0])[log_start:]
    assert 1 <= log.count("store down: the cache") <= WORKERS, log[-3000:]
    assert "Traceback" not in log


def test_a_killed_worker_is_replaced_and_the_other_keeps_serving(cluster):
    workers = cluster.wait_for_workers(0, WORKERS)
    with load(cluster) as evaluations:
        time.sleep(1.5)
        killed = time.monotonic()
        os.kill(workers[0], signal.SIGKILL)
        wait_until(lambda: workers[0] not in cluster.workers_of(0), timeout=5)
        cluster.wait_for_workers(0, WORKERS, timeout=15)
        replaced_after = time.monotonic() - killed
        time.sleep(2)
    assert replaced_after < 15
    after = [o for o in evaluations.outcomes if o.started >= killed]
    # Only requests the dead worker held may fail: at most one per evaluation thread.
    assert len(failures(after)) <= len(evaluations.loops), describe(failures(after))
    # The surviving worker answered in every half second after the kill.
    end = after[-1].started
    windows = int((end - killed) / 0.5)
    for window in range(windows):
        start = killed + window * 0.5
        assert any(o.ok and start <= o.started < start + 0.5 for o in after), window


def test_a_rolling_restart_of_the_workers_loses_no_evaluation(cluster):
    workers = cluster.wait_for_workers(0, WORKERS)
    reader = EventReader(cluster.url(0), cluster.seed["server_key"])
    with load(cluster) as evaluations:
        time.sleep(1)
        restarted = time.monotonic()
        cluster.signal(0, signal.SIGHUP)  # gunicorn starts new workers, then drains the old
        wait_until(lambda: not set(cluster.workers_of(0)) & set(workers), timeout=15)
        cluster.wait_for_workers(0, WORKERS)
        took = time.monotonic() - restarted
        time.sleep(1)
    assert reader.ended.wait(5), "the old worker's stream was not closed"
    assert reader.error is None, reader.error
    assert reader.retries[-1] <= 1000  # reconnect soon, to a worker that is staying
    after = [o for o in evaluations.outcomes if o.started >= restarted]
    assert len(after) > 20
    assert len(failures(after)) <= len(evaluations.loops), describe(failures(after))
    assert took < 10


def test_sigterm_with_a_stream_open_exits_promptly(cluster):
    index = len(cluster.ports)
    cluster.start()
    reader = EventReader(cluster.url(index), cluster.seed["client_key"])
    seconds = cluster.stop(index, timeout=15)
    assert seconds < 3, f"took {seconds:.1f}s to exit with a stream open"
    assert reader.ended.wait(2)
    assert reader.error is None, reader.error  # closed cleanly, not cut
    assert 100 <= reader.retries[-1] <= 1000
    assert "timeout graceful shutdown exceeded" not in cluster.log(cluster.ports[index])


def test_without_redis_evaluation_answers_through_a_postgres_outage(postgres):
    """One instance may run without Redis: each worker then relies on its own memory."""
    with Cluster(
        instances=1,
        redis_url=None,
        database_server=postgres.url,
        workers=WORKERS,
        production=True,
        collect_static=False,
        extra_env={"LOG_LEVEL": "WARNING"},
    ) as alone:
        alone.wait_for_workers(0, WORKERS)
        with load(alone) as evaluations:
            time.sleep(2)
            stopped = time.monotonic()
            postgres.stop()
            time.sleep(credentials.REVOCATION_BOUND_SECONDS + 1)
            postgres.start()
            time.sleep(1.5)
    during = [o for o in evaluations.outcomes if o.started >= stopped]
    assert len(during) > 40
    assert failures(evaluations.outcomes) == [], describe(failures(evaluations.outcomes))


def test_workers_started_during_a_postgres_outage_serve_known_keys_from_the_cache(
    cluster, postgres
):
    """A worker that dies while PostgreSQL is away is replaced by one that never read the
    database: it serves what the shared cache knows (the keys, the snapshot, and that
    secure mode is off), both for server and for client keys."""
    url = cluster.url(0)
    keys = {"server": cluster.seed["server_key"], "client": cluster.seed["client_key"]}
    for secret in keys.values():  # known to every worker, and noted in the cache
        wait_until(lambda s=secret: evaluate_with(url, s).status_code == 200, timeout=20)
        for _ in range(10):
            assert evaluate_with(url, secret).status_code == 200
    postgres.stop()
    try:
        old = cluster.wait_for_workers(0, WORKERS)
        for pid in old:
            os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not set(cluster.workers_of(0)) & set(old), timeout=10)
        fresh = cluster.wait_for_workers(0, WORKERS, timeout=20)
        answers = {kind: [evaluate_with(url, s) for _ in range(20)] for kind, s in keys.items()}
        assert set(cluster.workers_of(0)) == set(fresh), "the answers came from new workers"
    finally:
        postgres.start()
    for kind, responses in answers.items():
        statuses = [r.status_code for r in responses]
        assert statuses == [200] * 20, (kind, statuses, responses[-1].text[:300])
        assert len({r.content for r in responses}) == 1, "the same answer from every worker"
