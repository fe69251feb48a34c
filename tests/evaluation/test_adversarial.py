"""Hostile input against the engine and every evaluation endpoint, where a crash shows.

The engine runs `hostile_engine.py` in a process of its own; the endpoints are driven over
HTTP against the production serving stack (`manage.py serve`: gunicorn, uvicorn workers,
a2wsgi) in another process. Either way a crash (the SIGSEGV a lone surrogate used to cause
in the hash's C code) fails the test instead of ending the test run, and the server's
workers must be the same processes at the end as at the start: gunicorn would otherwise
hide a crash by starting a new worker.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st

from tests.evaluation.hostile import contexts, hostile_text, nested_json
from tests.servers import Cluster

HERE = Path(__file__).resolve().parent
EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "100"))

LOAD = """
import json
from tests.evaluation.document_loader import api_key, load_document
from tests.evaluation.hostile import every_operator_document

loaded = load_document(every_operator_document())
assert not loaded.refused, loaded.refused
print(json.dumps({"key": api_key(loaded.environment, "server"),
                  "client": api_key(loaded.environment, "client")}))
"""


def test_the_engine_survives_hostile_documents_and_contexts() -> None:
    done = subprocess.run(
        [sys.executable, str(HERE / "hostile_engine.py")],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HOSTILE_EXAMPLES": str(EXAMPLES)},
    )
    assert done.returncode == 0, f"exit {done.returncode}\n{done.stdout}\n{done.stderr[-4000:]}"
    assert "evaluations held" in done.stdout


@pytest.fixture(scope="module")
def server():
    with Cluster(instances=0) as cluster:
        keys = json.loads(cluster.manage("shell", "-c", LOAD).strip().splitlines()[-1])
        cluster.start()
        master = cluster.processes[0]
        workers = _workers(master.pid)
        assert workers, "the server runs its requests in worker processes"
        with httpx.Client(base_url=cluster.url(0), timeout=30) as client:
            yield client, keys
        assert master.poll() is None, cluster.log(cluster.ports[0])
        assert _workers(master.pid) == workers, "a worker died and was replaced"
        log = cluster.log(cluster.ports[0])
        assert "SIGSEGV" not in log and "Traceback" not in log, log[-4000:]


def _workers(pid: int) -> set[int]:
    children = Path(f"/proc/{pid}/task/{pid}/children")
    return {int(child) for child in children.read_text().split()}


ENDPOINTS = [
    "/api/v1/evaluate",
    "/api/v1/evaluate/rollout-companyid",
    "/ofrep/v1/evaluate/flags",
    "/ofrep/v1/evaluate/flags/matches-email",
]


def _assert_clean(response: httpx.Response) -> None:
    assert response.status_code < 500, (response.status_code, response.text[:500])
    if response.status_code != 304:
        assert response.headers["content-type"].startswith("application/json"), response.text
        response.json()


def _body(context: object) -> bytes:
    # ensure_ascii: a lone surrogate travels as the escape a hostile client would send.
    try:
        return json.dumps({"context": context}).encode()
    except RecursionError:  # too deep for json.dumps: sent by the next test, as text
        reject()


HTTP_SETTINGS = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=list(HealthCheck),
)


@HTTP_SETTINGS
@given(context=contexts, path=st.sampled_from(ENDPOINTS))
def test_hostile_contexts_get_clean_answers(server, context: dict, path: str) -> None:
    client, keys = server
    response = client.post(path, content=_body(context), headers={"X-API-Key": keys["key"]})
    _assert_clean(response)


@HTTP_SETTINGS
@given(
    body=st.one_of(
        st.binary(max_size=64),
        st.integers(1, 10_000).map(nested_json),
        st.integers(1, 12_000).map(
            lambda depth: b'{"context": ' + b"[" * depth + b"]" * depth + b"}"
        ),
        st.sampled_from(
            [
                b'{"context": {"n": 1e400}}',
                b'{"context": {"n": ' + b"9" * 10_000 + b"}}",
                b'{"context": {"targetingKey": "\\ud800"}}',
                b'{"context": {"k\\u0000": "a\\u0000b"}}',
                b'{"context": {"\\udfff": 1}}',
            ]
        ),
    ),
    path=st.sampled_from(ENDPOINTS),
    kind=st.sampled_from(["key", "client"]),
)
def test_hostile_bodies_get_clean_answers(server, body: bytes, path: str, kind: str) -> None:
    client, keys = server
    response = client.post(path, content=body, headers={"X-API-Key": keys[kind]})
    _assert_clean(response)
    assert response.status_code in (200, 400, 404, 413), response.text


@HTTP_SETTINGS
@given(secret=hostile_text, flag=hostile_text)
def test_hostile_keys_and_paths_get_clean_answers(server, secret: str, flag: str) -> None:
    client, _ = server
    # What a client can put on the wire: the UTF-8 (surrogates kept) bytes, no controls.
    header = bytes(b for b in secret.encode("utf-8", "surrogatepass") if b >= 0x20 or b == 9)
    path = "/ofrep/v1/evaluate/flags/" + quote(flag.encode("utf-8", "surrogatepass"), safe="")
    for method, url in (
        ("POST", path),
        ("GET", "/api/v1/sdk/flags"),
        ("GET", "/api/v1/stream"),
        ("POST", "/api/v1/sdk/flags"),
    ):
        response = client.request(method, url, headers={"X-API-Key": header}, content=b"{}")
        _assert_clean(response)
        assert response.status_code in (400, 401, 403, 404, 405), (method, url, response.text)


def test_a_deep_context_and_huge_numbers_answer_400(server) -> None:
    client, keys = server
    deep = b'{"context": ' + nested_json(10_000) + b"}"
    for body in (deep, b'{"context": {"n": 1e400}}', b'{"context": {"n": ' + b"1" * 10_000 + b"}}"):
        for path in ENDPOINTS:
            response = client.post(path, content=body, headers={"X-API-Key": keys["key"]})
            assert response.status_code == 400, (path, response.text)
            assert "errorCode" in response.json() or "error" in response.json()


def test_a_chunked_body_is_read_by_the_production_server(server) -> None:
    client, keys = server
    body = json.dumps({"context": {"email": "a@example.com!"}}).encode()
    # An iterator is sent with Transfer-Encoding: chunked and no Content-Length.
    response = client.post(
        "/api/v1/evaluate/ends_with-email",
        content=iter([body[:10], body[10:]]),
        headers={"X-API-Key": keys["key"], "Content-Type": "application/json"},
    )
    assert response.status_code == 200, response.text
    # The email in the chunked body was read: `ends_with ["!"]` holds for it.
    assert (response.json()["value"], response.json()["reason"]) == (True, "TARGETING_MATCH")


def test_a_chunked_body_over_the_limit_is_413_json(server) -> None:
    client, keys = server
    response = client.post(
        "/ofrep/v1/evaluate/flags",
        content=iter([b"x" * 40_000] * 3),
        headers={"X-API-Key": keys["key"]},
    )
    assert response.status_code == 413
    assert "65536" in response.json()["errorDetails"]


def test_post_on_the_document_is_a_json_405(server) -> None:
    client, keys = server
    response = client.post("/api/v1/sdk/flags", content=b"{}", headers={"X-API-Key": keys["key"]})
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert "GET" in response.headers["allow"]
