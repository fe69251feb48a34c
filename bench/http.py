"""HTTP benchmark of the evaluation endpoints under the production server (`make bench-http`).

Starts `python manage.py serve` (gunicorn + uvicorn workers, production settings) on
127.0.0.1 against a temporary SQLite database (or $DB_URL), loads 50 flags, and drives each
scenario with wrk for BENCH_SECONDS (default 10, at most 20). Prints a Markdown table of
requests/s and p50/p99 latency, with two references measured in the same run: the
ceiling, a raw ASGI application that reads the body and answers small JSON under the same
gunicorn and uvicorn workers (bench/http_ceiling.py), against which each row shows its
share; and a Django view that does nothing, in the product's server (routed only because
BENCH_TRIVIAL_VIEW=1 is set here), which is what a request answered by Django costs.
"""

from __future__ import annotations

import sys
from pathlib import Path

# Run as `python bench/http.py`, this directory comes first on the path and this file would
# hide the standard library's `http` package from urllib.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import json  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
import urllib.request  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FLAGS = 50
SECONDS = min(int(os.environ.get("BENCH_SECONDS", "10")), 20)
CONNECTIONS = int(os.environ.get("BENCH_CONNECTIONS", "8"))
CONTEXT = {"targetingKey": "user-1234", "country": "US", "plan": "pro"}


def seed() -> None:
    """In the server's environment: create the project, 50 flags and two keys; print keys."""
    import django

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flagsite.settings")
    django.setup()
    from flags import services
    from flags.models import FlagConfig

    system = {"actor": None, "source": "system"}
    project = services.project_create(key="bench", name="Bench", **system)
    environment = project.environments.get(key="production")
    for index in range(FLAGS):
        # Available to client-side keys too: the browser rows evaluate them with one.
        flag = services.flag_create(
            project=project, key=f"flag-{index:02d}", client_side=True, **system
        )
        config = FlagConfig.objects.get(flag=flag, environment=environment)
        rule = {
            "conditions": [
                {"attribute": "country", "operator": "in", "values": ["US", "CA", "GB"]},
                {"attribute": "plan", "operator": "equals", "values": ["pro"]},
            ],
            "serve": {"variant": "on"},
        }
        rollout = {
            "rollout": {
                "variants": [{"variant": "on", "weight": 25}, {"variant": "off", "weight": 75}]
            }
        }
        services.flag_config_update(
            config=config,
            data={"enabled": True, "rules": [rule], "defaultServe": rollout},
            **system,
        )
    _, server = services.api_key_create(
        environment=environment, kind="server", name="bench", **system
    )
    _, browser = services.api_key_create(
        environment=environment, kind="client", name="bench browser", **system
    )
    print(json.dumps({"server": server, "client": browser}))


# A web app calling the bulk endpoint sends its Origin: CORS headers in every answer.
BROWSER_ORIGIN = "https://app.example"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def server_environment(directory: str, port: int) -> dict[str, str]:
    env = {
        **os.environ,
        "NODE_ENV": "production",
        "JWT_SECRET": secrets.token_urlsafe(48),
        "ALLOWED_HOSTS": "127.0.0.1",
        "ALLOWED_ORIGINS": BROWSER_ORIGIN,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": os.environ.get("WEB_CONCURRENCY", "2"),
        "BENCH_TRIVIAL_VIEW": "1",
        # Counted as usual, but high enough that no scenario is refused.
        "EVALUATION_RATE_LIMIT": "1000000000",
        "LOG_LEVEL": os.environ.get("LOG_LEVEL", "WARNING"),
        "PROMETHEUS_MULTIPROC_DIR": os.path.join(directory, "metrics"),
    }
    env.setdefault("DB_URL", f"sqlite:///{directory}/bench.sqlite3")
    os.makedirs(env["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)
    return env


def wait_until_up(url: str, server: subprocess.Popen) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit("the server exited during start-up")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit("the server did not come up within 30 s")


def wrk_script(directory: str, name: str, method: str, body: str, headers: dict[str, str]) -> str:
    lines = [f'wrk.method = "{method}"']
    if body:
        lines.append(f"wrk.body = {json.dumps(body)}")
    for header, value in headers.items():
        lines.append(f'wrk.headers["{header}"] = {json.dumps(value)}')
    path = os.path.join(directory, f"{name}.lua")
    Path(path).write_text("\n".join(lines) + "\n")
    return path


def _milliseconds(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(number) * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def run_wrk(url: str, script: str) -> dict[str, float]:
    command = ["wrk", "-t2", f"-c{CONNECTIONS}", f"-d{SECONDS}s", "--latency", "-s", script, url]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    p50 = _milliseconds(re.search(r"\s50%\s+(\S+)", output).group(1))
    p99 = _milliseconds(re.search(r"\s99%\s+(\S+)", output).group(1))
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {"rate": rate, "p50": p50, "p99": p99, "errors": int(bad.group(1)) if bad else 0}


def main() -> None:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    with tempfile.TemporaryDirectory(prefix="bench-http-") as directory:
        port = free_port()
        env = server_environment(directory, port)
        python = sys.executable
        subprocess.run(
            [python, "manage.py", "migrate", "--no-input", "-v0"], cwd=ROOT, env=env, check=True
        )
        keys = json.loads(
            subprocess.run(
                [python, __file__, "seed"], cwd=ROOT, env=env, check=True, capture_output=True
            )
            .stdout.decode()
            .strip()
            .splitlines()[-1]
        )
        ceiling = _ceiling(directory, env)
        server = subprocess.Popen(
            [python, "manage.py", "serve"],
            cwd=ROOT,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(os.path.join(directory, "server.log"), "w"),  # noqa: SIM115
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_until_up(f"{base}/healthz", server)
            print(_run(directory, base, keys, ceiling))
        finally:
            server.terminate()
            server.wait(timeout=15)


def _ceiling(directory: str, env: dict[str, str]) -> dict[str, float]:
    """wrk against the raw ASGI application, under the same workers, before the product runs."""
    port = free_port()
    gunicorn = str(Path(sys.executable).with_name("gunicorn"))
    command = [
        gunicorn,
        "-k",
        "uvicorn_worker.UvicornWorker",
        "-w",
        env["WEB_CONCURRENCY"],
        "-b",
        f"127.0.0.1:{port}",
        "--log-level",
        "warning",
        "bench.http_ceiling:application",
    ]
    server = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/ofrep/v1/evaluate/flags/flag-07"
        wait_until_up(url, server)
        body = json.dumps({"context": CONTEXT})
        script = wrk_script(
            directory, "ceiling", "POST", body, {"Content-Type": "application/json"}
        )
        return run_wrk(url, script)
    finally:
        server.terminate()
        server.wait(timeout=15)


def _run(directory: str, base: str, keys: dict[str, str], ceiling: dict[str, float]) -> str:
    key = keys["server"]
    body = json.dumps({"context": CONTEXT})
    post = {"Content-Type": "application/json", "X-API-Key": key}
    request = urllib.request.Request(f"{base}/api/v1/sdk/flags", headers={"X-API-Key": key})
    etag = urllib.request.urlopen(request).headers["ETag"]
    scenarios = [
        ("trivial Django view", "/bench/trivial", "POST", body, post),
        ("OFREP single flag", "/ofrep/v1/evaluate/flags/flag-07", "POST", body, post),
        (f"OFREP bulk ({FLAGS} flags)", "/ofrep/v1/evaluate/flags", "POST", body, post),
        (
            f"OFREP bulk ({FLAGS} flags), from a browser (CORS)",
            "/ofrep/v1/evaluate/flags",
            "POST",
            body,
            {**post, "Origin": BROWSER_ORIGIN},
        ),
        (
            f"OFREP bulk ({FLAGS} flags), client key from a browser (CORS)",
            "/ofrep/v1/evaluate/flags",
            "POST",
            body,
            {**post, "X-API-Key": keys["client"], "Origin": BROWSER_ORIGIN},
        ),
        ("SDK document (200)", "/api/v1/sdk/flags", "GET", "", {"X-API-Key": key}),
        (
            "SDK document (304)",
            "/api/v1/sdk/flags",
            "GET",
            "",
            {"X-API-Key": key, "If-None-Match": etag},
        ),
    ]
    rows = [_row("raw ASGI app (ceiling)", ceiling, ceiling["rate"])]
    for index, (name, path, method, payload, headers) in enumerate(scenarios):
        for _ in range(50):  # warm the key and snapshot caches of every worker
            warm = urllib.request.Request(
                base + path, data=payload.encode() or None, headers=headers, method=method
            )
            try:
                urllib.request.urlopen(warm).read()
            except urllib.error.HTTPError as error:
                if error.code != 304:
                    raise
        result = run_wrk(base + path, wrk_script(directory, f"s{index}", method, payload, headers))
        rows.append(_row(name, result, ceiling["rate"]))
    header = [
        f"wrk -t2 -c{CONNECTIONS} -d{SECONDS}s; gunicorn, "
        f"{os.environ.get('WEB_CONCURRENCY', '2')} uvicorn workers; {os.cpu_count()} CPUs",
        "",
        "| scenario | req/s | of ceiling | p50 ms | p99 ms | non-2xx/3xx |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    return "\n".join(header + rows)


def _row(name: str, result: dict[str, float], ceiling: float) -> str:
    return (
        f"| {name} | {result['rate']:,.0f} | {result['rate'] / ceiling:.0%} "
        f"| {result['p50']:.2f} | {result['p99']:.2f} | {result['errors']:.0f} |"
    )


if __name__ == "__main__":
    if sys.argv[1:] == ["seed"]:
        sys.path.insert(0, str(ROOT))
        seed()
    else:
        main()
