"""Real server processes for tests and benchmarks: a store of their own, N instances.

`Cluster` makes a fresh database (a PostgreSQL database when the run's DB_URL points to
PostgreSQL, else a SQLite file), seeds it through the services, starts `manage.py serve`
(gunicorn + uvicorn workers) on free loopback ports, and removes everything afterwards.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct-horse-battery-staple"

SEED = """
import json
from django.contrib.auth import get_user_model
from flags import services
from flags.models import FlagConfig

admin = get_user_model().objects.create_superuser("root", "root@example.com", PASSWORD)
project = services.project_create(key="shop", name="Shop", actor=None, source="system")
flag = services.flag_create(project=project, key="new-checkout", actor=None, source="system")
environment = project.environments.get(key="production")
config = FlagConfig.objects.get(flag=flag, environment=environment)
services.flag_config_update(
    config=config, data={"defaultServe": {"variant": "on"}}, actor=None, source="system"
)
_, server = services.api_key_create(
    environment=environment, kind="server", name="backend", actor=None, source="system"
)
_, client = services.api_key_create(
    environment=environment, kind="client", name="web", actor=None, source="system"
)
print(json.dumps({"server_key": server, "client_key": client, "environment": environment.pk}))
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _postgres_url(base: str, name: str) -> str:
    head, _, _ = base.rpartition("/")
    return f"{head}/{name}"


@dataclass
class Cluster:
    instances: int = 3
    redis_url: str | None = field(default_factory=lambda: os.environ.get("REDIS_URL") or None)
    extra_env: dict[str, str] = field(default_factory=dict)
    ports: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)
    seed: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = f"flags_cluster_{uuid.uuid4().hex[:10]}"
        base = os.environ.get("DB_URL", "")
        self.postgres = base.startswith(("postgres://", "postgresql://"))
        self.workdir = Path(os.environ.get("TMPDIR", "/tmp")) / self.name
        self.db_url = (
            _postgres_url(base, self.name)
            if self.postgres
            else f"sqlite:///{self.workdir / 'flags.sqlite3'}"
        )

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            key: value
            for key, value in os.environ.items()
            if key not in ("DB_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE")
        }
        env.update(
            DB_URL=self.db_url,
            NODE_ENV="development",
            CACHE_PREFIX=self.name,
            HOST="127.0.0.1",
            WEB_CONCURRENCY="1",
            PYTHONUNBUFFERED="1",
            DJANGO_SETTINGS_MODULE="flagsite.settings",
        )
        if self.redis_url:
            env["REDIS_URL"] = self.redis_url
        env.update(self.extra_env)
        env.update(extra)
        return env

    def manage(self, *args: str, stdin: str | None = None) -> str:
        done = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env=self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout

    def __enter__(self) -> Cluster:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if self.postgres:
            self._admin_sql(f'CREATE DATABASE "{self.name}"')
        try:
            self.manage("migrate", "--no-input", "-v", "0")
            script = f"PASSWORD = {PASSWORD!r}\n{SEED}"
            out = self.manage("shell", "-c", script)
            self.seed = json.loads(out.strip().splitlines()[-1])
            for _ in range(self.instances):
                self.start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def start(self, **extra: str) -> int:
        port = free_port()
        log = open(self.workdir / f"server-{port}.log", "w")  # noqa: SIM115
        process = subprocess.Popen(
            [sys.executable, "manage.py", "serve"],
            cwd=ROOT,
            env=self.env(PORT=str(port), **extra),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.ports.append(port)
        self.processes.append(process)
        self._wait_healthy(port, process)
        return port

    def _wait_healthy(self, port: int, process: subprocess.Popen) -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise RuntimeError(f"server on {port} exited:\n{self.log(port)}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server on {port} did not become healthy:\n{self.log(port)}")

    def log(self, port: int) -> str:
        path = self.workdir / f"server-{port}.log"
        return path.read_text() if path.exists() else ""

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    def token(self, index: int = 0) -> str:
        response = httpx.post(
            f"{self.url(index)}/api/v1/auth/token/",
            json={"username": "root", "password": PASSWORD},
            timeout=5,
        )
        response.raise_for_status()
        return response.json()["access"]

    def stop(self, index: int) -> None:
        process = self.processes[index]
        process.terminate()
        try:
            # Open event streams hold gunicorn's graceful shutdown; tests need not wait for it.
            process.wait(2)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __exit__(self, *exc) -> None:
        for index, process in enumerate(self.processes):
            if process.poll() is None:
                self.stop(index)
        if self.postgres:
            self._admin_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        if self.redis_url:
            self._drop_redis_keys()
        for path in sorted(self.workdir.glob("*"), reverse=True):
            path.unlink()
        self.workdir.rmdir()

    def _admin_sql(self, statement: str) -> None:
        import psycopg

        admin_url = _postgres_url(os.environ["DB_URL"], "postgres")
        with psycopg.connect(admin_url, autocommit=True) as connection:
            connection.execute(statement)

    def _drop_redis_keys(self) -> None:
        import redis

        client = redis.Redis.from_url(self.redis_url)
        try:
            keys = list(client.scan_iter(f"{self.name}:*"))
            if keys:
                client.delete(*keys)
        except redis.ConnectionError:
            pass  # a test's own Redis that is gone already holds nothing
        finally:
            client.close()


class PrivateRedis:
    """A Redis server of this test's own, so it can be killed and brought back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self) -> None:
        if shutil.which("redis-server") is None:
            # `make test` works without Redis installed; CI always has it, so there it fails.
            message = "redis-server is not installed (apt-get install -y redis-server)"
            if os.environ.get("CI") == "true":
                raise RuntimeError(message)
            import pytest

            pytest.skip(message)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=subprocess.DEVNULL,
        )
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.1).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None
