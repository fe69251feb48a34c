"""Real server processes for tests and benchmarks: a store of their own, N instances.

`Cluster` makes a fresh database (on `database_server` when given, else on the run's
DB_URL when it points to PostgreSQL, else a SQLite file), seeds it through the services,
starts `manage.py serve` (gunicorn + uvicorn workers) on free loopback ports, and removes
everything afterwards. `PrivatePostgres` and `PrivateRedis` are servers of a test's own,
which it may stop, kill and start again; the shared ones are never touched that way.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
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
flag = services.flag_create(
    project=project, key="new-checkout", client_side=True, actor=None, source="system"
)
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


# What production-like serving needs beyond NODE_ENV (settings refuse to start without it).
PRODUCTION_ENV = {"NODE_ENV": "production", "JWT_SECRET": "test-only-" + "s" * 40}


@dataclass
class Cluster:
    instances: int = 3
    redis_url: str | None = field(default_factory=lambda: os.environ.get("REDIS_URL") or None)
    extra_env: dict[str, str] = field(default_factory=dict)
    # A PostgreSQL server URL to create the cluster's database on (a test's own server).
    database_server: str | None = None
    workers: int = 1
    production: bool = False
    collect_static: bool = True  # production only: what the admin's pages need
    ports: list[int] = field(default_factory=list)
    processes: list[subprocess.Popen] = field(default_factory=list)
    seed: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.name = f"flags_cluster_{uuid.uuid4().hex[:10]}"
        base = self.database_server or os.environ.get("DB_URL", "")
        self.postgres = base.startswith(("postgres://", "postgresql://"))
        self.admin_url = _postgres_url(base, "postgres") if self.postgres else ""
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
            WEB_CONCURRENCY=str(self.workers),
            PYTHONUNBUFFERED="1",
            DJANGO_SETTINGS_MODULE="flagsite.settings",
        )
        if self.production:
            env.update(PRODUCTION_ENV, STATIC_ROOT=str(self.workdir / "static"))
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
            if self.production and self.collect_static:  # as the image's build step does
                self.manage("collectstatic", "--no-input", "-v", "0")
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

    def stop(self, index: int, timeout: float = 5) -> float:
        """SIGTERM the instance (a graceful shutdown); the seconds it took to exit."""
        process = self.processes[index]
        started = time.monotonic()
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        return time.monotonic() - started

    def signal(self, index: int, signum: int = signal.SIGHUP) -> None:
        """Signal the instance's gunicorn master (SIGHUP: replace every worker, one by one)."""
        self.processes[index].send_signal(signum)

    def workers_of(self, index: int) -> list[int]:
        """The process ids of the instance's gunicorn workers (children of its master)."""
        return child_pids(self.processes[index].pid)

    def wait_for_workers(self, index: int, count: int, timeout: float = 30) -> list[int]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pids = self.workers_of(index)
            log = self.log(self.ports[index])
            # uvicorn logs this line (with the worker's pid) once the worker serves.
            if len(pids) == count and all(
                f"[{pid}] [INFO] Application startup complete." in log for pid in pids
            ):
                return pids
            time.sleep(0.1)
        raise AssertionError(f"instance {index} has not {count} workers: {self.workers_of(index)}")

    def __exit__(self, *exc) -> None:
        for index, process in enumerate(self.processes):
            if process.poll() is None:
                self.stop(index)
        if self.postgres:
            self._admin_sql(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
        if self.redis_url:
            self._drop_redis_keys()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def _admin_sql(self, statement: str) -> None:
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as connection:
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


def child_pids(pid: int) -> list[int]:
    """The live direct children of a process (Linux /proc); a dead one not yet reaped is not."""
    children: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children += [int(child) for child in (task / "children").read_text().split()]
        except OSError:
            continue
    return sorted(child for child in children if _alive(child))


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def find_program(name: str) -> str | None:
    """A program on PATH or, for PostgreSQL's, in Debian's /usr/lib/postgresql/<major>/bin."""
    found = shutil.which(name)
    if found:
        return found
    versions = sorted(
        Path("/usr/lib/postgresql").glob(f"*/bin/{name}"),
        key=lambda path: int(path.parts[-3]) if path.parts[-3].isdigit() else 0,
    )
    return str(versions[-1]) if versions else None


def require_tool(*names: str, hint: str) -> None:
    """Skip the test when a server program is missing, except in CI, where it fails."""
    missing = [name for name in names if find_program(name) is None]
    if not missing:
        return
    # `make test` works without these installed; CI always has them, so there it fails.
    message = f"{', '.join(missing)} not installed ({hint})"
    if os.environ.get("CI") == "true":
        raise RuntimeError(message)
    import pytest

    pytest.skip(message)


class PrivatePostgres:
    """A PostgreSQL server of this test's own (initdb in a temporary directory, pg_ctl on a
    free port), so it can be stopped and started again under load.

    As root (PostgreSQL refuses to run as root) the server runs as the `postgres` user.
    fsync is off for speed: a commit still waits for its WAL write, which survives the
    server's own stop or crash (only a crash of the machine would lose it).
    """

    def __init__(self) -> None:
        require_tool("initdb", "pg_ctl", hint="apt-get install -y postgresql")
        self.port = free_port()
        self.url = f"postgres://postgres@127.0.0.1:{self.port}/postgres"
        self.directory = Path(tempfile.mkdtemp(prefix="flags-postgres-"))
        self.data = self.directory / "data"
        self.running = False
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root needs a 'postgres' user for initdb") from None
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
            self._as_user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *command: str, timeout: float = 60) -> None:
        program = find_program(command[0]) or command[0]
        done = subprocess.run(
            [*self._as_user, program, *command[1:]], capture_output=True, text=True, timeout=timeout
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout}{done.stderr}")

    def init(self) -> PrivatePostgres:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8",
            "--no-sync", "--no-instructions",
        )  # fmt: skip
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.directory} "
            "-c fsync=off -c full_page_writes=off"
        )
        log = str(self.directory / "postgres.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-o", options, "-w", "start")
        self.running = True

    def stop(self) -> None:
        """A fast shutdown: sessions are ended, committed work is kept."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        self.running = False

    def remove(self) -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            self.running = False
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PrivatePostgres:
        try:
            self.init().start()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


class PrivateRedis:
    """A Redis server of this test's own, so it can be killed and brought back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = None

    def start(self) -> None:
        require_tool("redis-server", hint="apt-get install -y redis-server")
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

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.kill()
