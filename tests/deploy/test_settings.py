"""Settings read at import, checked in fresh processes: errors, admin switch, transport security."""

import json
import sys

import pytest

from tests.deploy.conftest import JWT_SECRET, REPO, clean_env, run_manage

# Runs in a fresh process: sets Django up from the environment, makes GET requests with the
# test client, prints what each response said.
PROBE = r"""
import json, sys
import django
django.setup()
from django.test import Client
client = Client()
answers = []
for path, headers in json.loads(sys.argv[1]):
    response = client.get(path, headers=headers)
    answers.append({
        "status": response.status_code,
        "location": response.get("Location", ""),
        "hsts": response.get("Strict-Transport-Security", ""),
        "cookies": {name: bool(cookie["secure"]) for name, cookie in response.cookies.items()},
    })
print(json.dumps(answers))
"""


def probe(requests: list[tuple[str, dict]], **variables: str) -> list[dict]:
    import subprocess

    env = clean_env(DJANGO_SETTINGS_MODULE="flagsite.settings", **variables)
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(requests)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def production(tmp_path_factory) -> dict[str, str]:
    """Production settings with their static files collected (the admin pages need them)."""
    root = tmp_path_factory.mktemp("production")
    variables = {
        "NODE_ENV": "production",
        "JWT_SECRET": JWT_SECRET,
        "DB_URL": f"sqlite:///{root / 'flags.sqlite3'}",
        "STATIC_ROOT": str(root / "static"),
    }
    collected = run_manage(
        "collectstatic", "--no-input", "--verbosity", "0", env=clean_env(**variables)
    )
    assert collected.returncode == 0, collected.stderr
    return variables


@pytest.mark.parametrize(
    ("variable", "value"),
    [("NODE_ENV", "bogus"), ("DB_URL", "garbage"), ("REDIS_URL", "localhost:6379")],
)
def test_malformed_variable_stops_check_with_one_line_naming_it(variable, value, tmp_path):
    # JWT_SECRET set so that development's warning about a missing one stays out of stderr.
    result = run_manage("check", env=clean_env(JWT_SECRET=JWT_SECRET, **{variable: value}))
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"configuration error: {variable}: ")


def test_production_without_jwt_secret_stops_check_with_one_line():
    result = run_manage("check", env=clean_env(NODE_ENV="production"))
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "configuration error: JWT_SECRET: must be set when NODE_ENV=production "
        "(the key that signs API tokens)"
    ]


def test_admin_disabled_answers_404_at_admin(tmp_path):
    answers = probe(
        [("/admin/", {}), ("/admin/login/", {}), ("/healthz", {})],
        ADMIN_ENABLED="false",
        DB_URL=f"sqlite:///{tmp_path / 'flags.sqlite3'}",
    )
    assert [answer["status"] for answer in answers] == [404, 404, 200]


def test_production_marks_cookies_secure_and_sends_hsts_behind_tls_proxy(production):
    behind_tls, plain = probe(
        [("/admin/login/", {"X-Forwarded-Proto": "https"}), ("/admin/login/", {})], **production
    )
    assert behind_tls["status"] == 200
    assert behind_tls["cookies"] == {"csrftoken": True}
    assert behind_tls["hsts"].startswith("max-age=31536000")
    # X-Forwarded-Proto is what tells the app the client used TLS.
    assert plain["status"] == 200
    assert plain["hsts"] == ""


def test_https_redirect_sends_plain_http_to_https_but_not_probes(production):
    page, healthz, readyz, metrics, behind_tls = probe(
        [
            ("/admin/login/", {}),
            ("/healthz", {}),
            ("/readyz", {}),
            ("/metrics", {}),
            ("/admin/login/", {"X-Forwarded-Proto": "https"}),
        ],
        HTTPS_REDIRECT="true",
        **production,
    )
    assert page["status"] == 301
    assert page["location"] == "https://testserver/admin/login/"
    assert healthz["status"] == 200
    assert readyz["status"] == 200
    assert metrics["status"] == 200
    assert behind_tls["status"] == 200


def test_development_logs_requests_as_readable_lines(tmp_path):
    import subprocess

    env = clean_env(DJANGO_SETTINGS_MODULE="flagsite.settings", JWT_SECRET=JWT_SECRET)
    env["DB_URL"] = f"sqlite:///{tmp_path / 'flags.sqlite3'}"
    result = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps([("/no-such-page", {"X-Request-ID": "r-1"})])],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    request_lines = [line for line in result.stderr.splitlines() if "flagsite.request" in line]
    assert len(request_lines) == 1, result.stderr
    assert "GET /no-such-page 404" in request_lines[0]
    assert "id=r-1" in request_lines[0]
    assert not request_lines[0].startswith("{")
