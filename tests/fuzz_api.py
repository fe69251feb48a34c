"""Fuzz the REST API from its own OpenAPI schema with schemathesis (`make fuzz`).

Starts a real server on a store of its own (tests.servers.Cluster), logs in as a superuser
(management API), presents a server key (evaluation API), and lets schemathesis generate
requests for every operation in /api/schema/, valid and not, failing on any 5xx response
or a response that does not match the schema. The budget is bounded by FUZZ_EXAMPLES
(examples per operation, default 30) and FUZZ_SECONDS.

Then a hostile sweep, the same on every run: for every operation of the schema, with the
seeded project's real keys in the path (random ones mostly meet a 404 first), a NUL in each
path part and each text query parameter, 10^30 in each number, a body nested 10,000 deep
and a body holding a NUL and a lone surrogate. Every answer must be a JSON 4xx; it prints
a table of what was sent and what came back.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.servers import Cluster  # noqa: E402

EXAMPLES = os.environ.get("FUZZ_EXAMPLES", "30")
SECONDS = int(os.environ.get("FUZZ_SECONDS", "600"))


def main() -> int:
    schemathesis = Path(sys.executable).with_name("schemathesis")
    # The fuzzer sends thousands of requests a minute as one person: rate limits and login
    # lockouts (documented as 429 on every operation) would answer most of them.
    limits = {"API_RATE_USER": "1000000/minute", "API_RATE_ANON": "1000000/minute"}
    limits |= {"LOGIN_FAILURE_LIMIT": "0", "TRIGGER_RATE_PER_MINUTE": "1000000"}
    with Cluster(instances=1, extra_env=limits) as cluster:
        base = cluster.url(0)
        command = [
            str(schemathesis),
            "run",
            f"{base}/api/schema/",
            "--url",
            base,
            "--header",
            f"Authorization: Bearer {cluster.token(0)}",
            # Evaluation endpoints take the key from X-API-Key before Authorization.
            "--header",
            f"X-API-Key: {cluster.seed['server_key']}",
            # The event stream never ends by design.
            "--exclude-path",
            "/api/v1/stream",
            "--checks",
            "not_a_server_error,status_code_conformance,response_schema_conformance",
            "--max-examples",
            EXAMPLES,
            "--seed",
            os.environ.get("FUZZ_SEED", "1"),
            "--no-color",
        ]
        secrets = (cluster.seed["server_key"], "Bearer ")
        shown = [part if not any(x in part for x in secrets) else "<secret>" for part in command]
        print("$", " ".join(shown))
        try:
            done = subprocess.run(command, timeout=SECONDS)
            returncode = done.returncode
        except subprocess.TimeoutExpired:
            print(f"fuzzing stopped after the {SECONDS}s budget")
            returncode = 0
        headers = {"Authorization": f"Bearer {cluster.token(0)}"}
        headers["X-API-Key"] = cluster.seed["server_key"]
        returncode = returncode or hostile_sweep(base, headers)
        if returncode != 0:
            print(f"server log:\n{cluster.log(cluster.ports[0])[-5000:]}")
        return returncode


# --- The hostile sweep ----------------------------------------------------------------------

# The seeded store's names (tests.servers.SEED): path parts that reach an operation's logic.
KNOWN = {
    "project_key": "shop",
    "flag_key": "new-checkout",
    "environment_key": "production",
    "username": "root",
    "id": "1",
    "number": "1",
}
NUL = "a\u0000b"
DEEP = "[" * 10_000 + "]" * 10_000
UNSTORABLE = '{"name": "a\\u0000b", "title": "\\ud800", "rules": [{"name": "\\u0000"}]}'


def _known(path: str, name: str) -> str:
    if name == "key":  # /projects/{key}, /environments/{key}, /segments/{key}, ofrep's flag
        return (
            "new-checkout"
            if "ofrep" in path
            else "production"
            if "environments" in path
            else "shop"
        )
    return KNOWN.get(name, "1")


def _cases(path: str, method: str, operation: dict):
    """(what, path, query, body) for each hostile request of one operation."""
    parameters = [p for p in operation.get("parameters", []) if p["in"] in ("path", "query")]
    parts = {p["name"]: _known(path, p["name"]) for p in parameters if p["in"] == "path"}
    real = path.format(**parts)
    for name in parts:
        if name != "number":
            yield f"NUL in {{{name}}}", path.format(**{**parts, name: quote(NUL)}), {}, None
    for parameter in parameters:
        if parameter["in"] == "query":
            kind = parameter.get("schema", {}).get("type")
            value, label = ("1" + "0" * 30, "10^30") if kind == "integer" else (NUL, "NUL")
            yield f"{parameter['name']}={label}", real, {parameter["name"]: value}, None
    if "requestBody" in operation:
        yield "body nested 10,000 deep", real, {}, DEEP
        yield "body with NUL and a surrogate", real, {}, UNSTORABLE


def hostile_sweep(base: str, headers: dict) -> int:
    schema = httpx.get(f"{base}/api/schema/?format=json", headers=headers, timeout=30).json()
    rows, failures = [], []
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for path, operations in sorted(schema["paths"].items()):
            if path == "/api/v1/stream":
                continue  # never ends; its Last-Event-ID has a test of its own
            for method, operation in operations.items():
                for what, url, query, body in _cases(path, method, operation):
                    response = client.request(
                        method.upper(),
                        url,
                        params=query,
                        content=body,
                        headers={"Content-Type": "application/json"} if body else {},
                    )
                    is_json = response.headers.get("content-type", "").startswith(
                        "application/json"
                    )
                    rows.append((response.status_code, is_json))
                    if response.status_code >= 500 or (response.status_code >= 400 and not is_json):
                        failures.append(f"{method.upper()} {url} ({what}): {response.status_code}")
    print(_table(rows))
    for failure in failures:
        print(f"FAILED {failure}")
    return 1 if failures else 0


def _table(rows: list[tuple[int, bool]]) -> str:
    statuses = sorted({status for status, _ in rows})
    lines = ["hostile sweep   requests  JSON", "--------------  --------  ----"]
    for status in statuses:
        answers = [is_json for code, is_json in rows if code == status]
        lines.append(f"{status:<14}  {len(answers):>8}  {sum(answers):>4}")
    lines.append(f"{'total':<14}  {len(rows):>8}  {sum(is_json for _, is_json in rows):>4}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
