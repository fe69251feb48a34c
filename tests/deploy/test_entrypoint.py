"""The container's start sequence (deploy/entrypoint.sh) run outside a container."""

import json
import os
import re
import signal
import subprocess
import time
import uuid

import httpx
import pytest

from tests.deploy.conftest import JWT_SECRET, REPO, clean_env, free_port

pytestmark = pytest.mark.server

ENTRYPOINT = REPO / "deploy" / "entrypoint.sh"


def production_env(tmp_path, db_url: str, **extra: str) -> dict[str, str]:
    variables = {
        "NODE_ENV": "production",
        "JWT_SECRET": JWT_SECRET,
        "DB_URL": db_url,
        "HOST": "127.0.0.1",
        "PORT": str(free_port()),
        "WEB_CONCURRENCY": "2",
        "STATIC_ROOT": str(tmp_path / "static"),
        "COLLECTSTATIC_ON_START": "true",
        "TMPDIR": str(tmp_path),
    }
    if os.environ.get("REDIS_URL"):
        variables["REDIS_URL"] = os.environ["REDIS_URL"]
        variables["CACHE_PREFIX"] = f"flags-deploy-{uuid.uuid4().hex[:8]}"
    variables.update(extra)
    return clean_env(**variables)


def wait_until_serving(process: subprocess.Popen, base: str, log_path) -> None:
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the entrypoint exited with {process.returncode}:\n{log_path.read_text()}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    pytest.fail(f"nothing answered /healthz within 90s:\n{log_path.read_text()}")


@pytest.fixture
def served(tmp_path, scratch_db_url):
    """The entrypoint's `serve` sequence on a free loopback port, stopped afterwards."""
    home = tmp_path / "home"  # as in the image: a home of its own that nothing should need
    home.mkdir()
    env = production_env(tmp_path, scratch_db_url, HOME=str(home))
    env.pop("XDG_RUNTIME_DIR", None)
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["sh", str(ENTRYPOINT), "serve"], cwd=REPO, env=env, stdout=log, stderr=log
        )
    base = f"http://127.0.0.1:{env['PORT']}"
    try:
        wait_until_serving(process, base, log_path)
        yield base, log_path
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_entrypoint_migrates_collects_static_and_serves_admin_with_css(served):
    base, log_path = served
    assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
    assert httpx.get(f"{base}/readyz").status_code == 200  # migrated database answers

    login = httpx.get(f"{base}/admin/login/")
    assert login.status_code == 200
    stylesheets = re.findall(r'href="(/static/admin/css/[^"]+\.css)"', login.text)
    assert stylesheets, "the login page links no admin stylesheet"
    for href in stylesheets:
        css = httpx.get(f"{base}{href}")
        assert css.status_code == 200, href
        assert css.headers["content-type"].startswith("text/css")
    log = log_path.read_text()
    assert "Operations to perform" in log or "No migrations to apply" in log


def test_no_control_socket_is_opened(served, tmp_path):
    """gunicorn's control socket (gunicornc) is off: under the image's user, with a read-only
    root file system, making it fails at every start, and nothing here uses it."""
    _, log_path = served
    assert not (tmp_path / "home" / ".gunicorn").exists()
    assert "Control" not in log_path.read_text()


def test_served_requests_are_logged_as_json_lines_with_the_callers_request_id(served):
    base, log_path = served
    response = httpx.get(f"{base}/admin/login/", headers={"X-Request-ID": "trace-42"})
    assert response.headers["x-request-id"] == "trace-42"

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        lines = [line for line in log_path.read_text().splitlines() if "trace-42" in line]
        if lines:
            break
        time.sleep(0.1)
    entry = json.loads(lines[0])
    assert entry["request_id"] == "trace-42"
    assert entry["method"] == "GET"
    assert entry["route"] == "admin:login"
    assert entry["status"] == 200
    assert entry["duration_ms"] >= 0


def test_metrics_sum_all_workers_and_name_routes(served):
    base, _ = served
    for _ in range(8):  # with two workers, both very likely answer some of these
        httpx.get(f"{base}/healthz")
    # Each worker adds what it counted to the shared files every second (and the one that
    # answers /metrics before it answers): the other worker's requests show within seconds.
    deadline = time.monotonic() + 5
    while True:
        body = httpx.get(f"{base}/metrics").text
        counted = re.search(
            r'flags_http_requests_total\{method="GET",route="healthz",status="200"\} (\S+)', body
        )
        assert counted is not None, body[:2000]
        if float(counted.group(1)) >= 9 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert float(counted.group(1)) >= 9  # the 8 above and the start-up probe


def test_entrypoint_refuses_to_start_without_jwt_secret(tmp_path):
    env = production_env(tmp_path, f"sqlite:///{tmp_path / 'flags.sqlite3'}")
    del env["JWT_SECRET"]
    result = subprocess.run(
        ["sh", str(ENTRYPOINT), "serve"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "configuration error: JWT_SECRET: must be set when NODE_ENV=production "
        "(the key that signs API tokens)"
    ]


def test_entrypoint_scheduler_migrates_first_runs_passes_and_stops_on_sigterm(
    tmp_path, scratch_db_url
):
    env = production_env(tmp_path, scratch_db_url, LOG_LEVEL="INFO")
    log_path = tmp_path / "scheduler.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            ["sh", str(ENTRYPOINT), "scheduler", "--interval", "0.2"],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=log,
        )
    try:
        deadline = time.monotonic() + 90
        while "scheduler: started" not in log_path.read_text():
            assert process.poll() is None, log_path.read_text()
            assert time.monotonic() < deadline, log_path.read_text()
            time.sleep(0.2)
        time.sleep(3)  # passes on the new schema, each a query of every table it drains
        assert process.poll() is None, f"the scheduler stopped:\n{log_path.read_text()}"
    finally:
        process.send_signal(signal.SIGTERM)
        started = time.monotonic()
        try:
            code = process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            raise
    assert code == 0, log_path.read_text()
    assert time.monotonic() - started < 10
    log = log_path.read_text()
    assert "Operations to perform" in log.split("scheduler: started")[0]  # migrated first
    assert "scheduler: stopped" in log
    assert "Traceback" not in log
