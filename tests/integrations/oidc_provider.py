"""A real OpenID Connect provider for the tests (oidc-provider under node), and the login
round trip driven with real HTTP.

The provider's packages come from tests/integrations/oidc/package-lock.json (`make
test` runs `npm ci` there). Without node or those packages the SSO tests are skipped
locally, with the command that fixes it, and fail in CI (CI=true), where they must run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urljoin

import httpx
import pytest

HERE = Path(__file__).resolve().parent / "oidc"
CLIENT_ID = "flags-admin"
CLIENT_SECRET = "test-only-client-secret-0123456789"


def require_node() -> str:
    node = shutil.which("node")
    problem = None
    if node is None:
        problem = "node is not installed (apt-get install -y nodejs npm)"
    elif not (HERE / "node_modules" / "oidc-provider").is_dir():
        problem = f"the test provider's packages are missing: run `npm ci` in {HERE}"
    if problem is None:
        return node
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI must run the single sign-on tests: {problem}")
    pytest.skip(problem)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Provider:
    """One provider process; `users` is re-read by it at every login."""

    workdir: Path
    redirect_uri: str
    users: dict = field(default_factory=dict)
    issuer_path: str = ""
    announce_origin: bool = False  # discovery claims the bare origin as issuer
    forge_jwks: bool = False

    def __post_init__(self) -> None:
        node = require_node()
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.users_file = self.workdir / f"users-{self.port}.json"
        self.set_users(self.users)
        config = {
            "issuer": self.url + self.issuer_path,
            "client": {
                "client_id": CLIENT_ID,
                "client_secret": CLIENT_SECRET,
                "redirect_uris": [self.redirect_uri],
            },
            "users_file": str(self.users_file),
            "announce_issuer": self.url if self.announce_origin else None,
            "forge_jwks": self.forge_jwks,
        }
        config_file = self.workdir / f"provider-{self.port}.json"
        config_file.write_text(json.dumps(config))
        self.log = (self.workdir / f"provider-{self.port}.log").open("w")
        self.process = subprocess.Popen(
            [node, str(HERE / "provider.mjs"), str(self.port), str(config_file)],
            cwd=HERE,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self._wait_until_up()

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the provider exited: {self.log_text()}")
            try:
                httpx.get(self.url + "/.well-known/openid-configuration", timeout=2)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise RuntimeError(f"the provider did not start: {self.log_text()}")

    def log_text(self) -> str:
        self.log.flush()
        return Path(self.log.name).read_text()[-2000:]

    def set_users(self, users: dict) -> None:
        self.users = users
        self.users_file.write_text(json.dumps(users))

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def _follow(client: httpx.Client, response: httpx.Response) -> httpx.Response:
    for _ in range(20):
        if response.status_code not in (301, 302, 303, 307):
            return response
        response = client.get(urljoin(str(response.url), response.headers["location"]))
    raise AssertionError("too many redirects")


def sso_login(base_url: str, username: str, password: str) -> tuple[httpx.Client, httpx.Response]:
    """Click "Sign in", sign in at the provider, come back: the client and the last page."""
    client = httpx.Client(timeout=30, follow_redirects=False)
    page = _follow(client, client.get(f"{base_url}/oidc/authenticate/?next=/admin/"))
    if "/interaction/" not in str(page.url):
        return client, page  # refused before reaching the provider
    action = re.search(r'action="([^"]+)"', page.text).group(1)
    answer = client.post(
        urljoin(str(page.url), action), data={"login": username, "password": password}
    )
    return client, _follow(client, answer)
