"""With nothing configured the service is not open: its own secret, no debug pages, loopback."""

import json
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO, clean_env

# The signing key settings.py used to publish for development: tokens signed with it must fail.
PUBLISHED = "development-only-secret-do-not-use-in-production-0123456789abcdef"

PROBE = r"""
import json, sys
import django
django.setup()
import jwt
from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.test import Client
call_command("migrate", verbosity=0)
users = get_user_model().objects
admin = users.filter(username="root").first() or users.create_superuser("root", password="x" * 20)
forged = jwt.encode(
    {"token_type": "access", "exp": 4102444800, "iat": 1, "jti": "f", "user_id": str(admin.pk)},
    sys.argv[1],
    algorithm="HS256",
)
client = Client(raise_request_exception=False)
forged_answer = client.get("/api/v1/projects", headers={"Authorization": f"Bearer {forged}"})
missing = client.get("/no-such-page")
print(json.dumps({
    "signing_key": settings.SIMPLE_JWT["SIGNING_KEY"],
    "secret_key": settings.SECRET_KEY,
    "forged_status": forged_answer.status_code,
    "missing_status": missing.status_code,
    "debug_page": b"URLconf" in missing.content,
}))
"""


def probe(tmp_path, **variables) -> dict:
    env = clean_env(
        DJANGO_SETTINGS_MODULE="flagsite.settings",
        DB_URL=f"sqlite:///{tmp_path / 'flags.sqlite3'}",
        STATIC_ROOT=str(tmp_path / "static"),
        **variables,
    )
    result = subprocess.run(
        [sys.executable, "-c", PROBE, PUBLISHED],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_an_unconfigured_installation_makes_its_own_secret_readable_by_its_owner(tmp_path):
    secret_file = tmp_path / "var" / "secret-key"
    first = probe(tmp_path, SECRET_KEY_FILE=str(secret_file))

    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert len(secret_file.read_text().strip()) >= 48
    source = (REPO / "flagsite" / "settings.py").read_text()
    assert first["signing_key"] not in source and first["secret_key"] not in source
    assert first["signing_key"] != first["secret_key"]
    again = probe(tmp_path, SECRET_KEY_FILE=str(secret_file))
    assert again["signing_key"] == first["signing_key"], "kept across restarts"
    other = probe(tmp_path, SECRET_KEY_FILE=str(tmp_path / "elsewhere"))
    assert other["signing_key"] != first["signing_key"], "each installation its own"


def test_a_token_signed_with_the_once_published_key_is_refused(tmp_path):
    answer = probe(tmp_path, SECRET_KEY_FILE=str(tmp_path / "secret-key"))
    assert answer["forged_status"] == 401


def test_debug_pages_only_when_asked_for(tmp_path):
    secret = {"SECRET_KEY_FILE": str(tmp_path / "secret-key")}
    quiet = probe(tmp_path, **secret)
    assert (quiet["missing_status"], quiet["debug_page"]) == (404, False)
    asked = probe(tmp_path, DEBUG="true", **secret)
    assert asked["debug_page"] is True
    production = probe(tmp_path, NODE_ENV="production", JWT_SECRET="j" * 40, DEBUG="true")
    assert production["debug_page"] is False


def test_an_unwritable_secret_file_stops_start_up_with_one_line(tmp_path):
    blocked = tmp_path / "blocked"
    blocked.write_text("")
    env = clean_env(SECRET_KEY_FILE=str(blocked / "secret-key"))
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=REPO, env=env, capture_output=True, text=True
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("configuration error: SECRET_KEY_FILE: ")


def _listening_addresses(port: int) -> set[str]:
    """IPv4 addresses with a socket listening on `port`, from the kernel's table."""
    addresses = set()
    for line in (Path("/proc/net/tcp").read_text().splitlines())[1:]:
        local, state = line.split()[1], line.split()[3]
        address, local_port = local.split(":")
        if state == "0A" and int(local_port, 16) == port:
            addresses.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return addresses


@pytest.mark.parametrize("host, expected", [(None, "127.0.0.1"), ("0.0.0.0", "0.0.0.0")])
def test_serve_listens_on_loopback_unless_told_otherwise(tmp_path, host, expected):
    from tests.servers import free_port

    port = free_port()
    variables = {"PORT": str(port), "WEB_CONCURRENCY": "1", "SECRET_KEY_FILE": str(tmp_path / "k")}
    if host:
        variables["HOST"] = host
    env = clean_env(DB_URL=f"sqlite:///{tmp_path / 'flags.sqlite3'}", **variables)
    server = subprocess.Popen(
        [sys.executable, "manage.py", "serve"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        line = server.stdout.readline()
        assert line.startswith(f"Serving on http://{expected}:{port} "), line
        listening: set[str] = set()
        for _ in range(120):
            listening = _listening_addresses(port)
            if listening:
                break
            time.sleep(0.5)
        assert listening == {expected}
    finally:
        os.killpg(server.pid, 15)
        server.wait(timeout=30)
