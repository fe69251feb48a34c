"""Runs the conformance suite (tests/conformance/*.json) against the HTTP evaluation API.

Each file's document is loaded into the database through flags.services (a flag the
services refuse, such as one with an invalid regular expression, cannot reach the API: its
cases are skipped, and the runner checks that the engine calls each of them PARSE_ERROR),
then every case is evaluated through the native and the
OFREP endpoints, single-flag and bulk, and compared as the README says. A context the API
refuses as a whole (a string that is not valid Unicode, anywhere in it) is a 400 with its
error code on every endpoint, which the runner reads as that error. OFREP has no
DEFAULT or PREREQUISITE_FAILED reason: the API answers STATIC and DISABLED and keeps the
native reason in the flag metadata, and this runner checks both.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.evaluation.document_loader import (  # noqa: F401 - fixture
    api_key,
    fresh_credentials,
    load_document,
)

HERE = Path(__file__).resolve().parent
SUITES = {path.stem: json.loads(path.read_text()) for path in sorted(HERE.glob("*.json"))}
OFREP_REASONS = {"DEFAULT": "STATIC", "PREREQUISITE_FAILED": "DISABLED"}
# Cases the HTTP API cannot express: it takes no expected type from the caller.
HTTP_UNSUPPORTED_ERRORS = {"TYPE_MISMATCH"}


def _error(code: str | None) -> dict:
    return {"value": None, "variant": None, "reason": "ERROR", "error_code": code}


def _native(answer: dict) -> dict:
    return {
        "value": answer["value"],
        "variant": answer["variant"],
        "reason": answer["reason"],
        "error_code": answer.get("errorCode"),
    }


def _ofrep(item: dict) -> dict:
    if "errorCode" in item:
        return _error(item["errorCode"])
    reason = item["metadata"].get("evaluationReason", item["reason"])
    assert OFREP_REASONS.get(reason, reason) == item["reason"]
    return {
        "value": item["value"],
        "variant": item["variant"],
        "reason": reason,
        "error_code": None,
    }


class Api:
    """The four ways to evaluate one case over HTTP, each answering in the README's terms."""

    def __init__(self, client, key: str) -> None:
        self.client = client
        self.key = key
        self.bulk: dict[tuple[str, str], dict] = {}

    def post(self, path: str, context: dict):
        body = json.dumps({"context": context})
        return self.client.post(path, body, "application/json", HTTP_X_API_KEY=self.key)

    def native_one(self, flag: str, context: dict) -> dict:
        response = self.post(f"/api/v1/evaluate/{flag}", context)
        if response.status_code in (400, 404):  # no such flag, or a context refused whole
            return _error(response.json()["errorCode"])
        assert response.status_code == 200, response.content
        return _native(response.json())

    def ofrep_one(self, flag: str, context: dict) -> dict:
        response = self.post(f"/ofrep/v1/evaluate/flags/{flag}", context)
        body = response.json()
        if response.status_code in (400, 404):
            assert body["key"] == flag
            assert (response.status_code == 404) == (body["errorCode"] == "FLAG_NOT_FOUND")
            return _error(body["errorCode"])
        assert response.status_code == 200, response.content
        return _ofrep(body)

    def _bulk(self, kind: str, context: dict) -> dict:
        cache_key = (kind, json.dumps(context, sort_keys=True))
        if cache_key not in self.bulk:
            path = "/api/v1/evaluate" if kind == "native" else "/ofrep/v1/evaluate/flags"
            response = self.post(path, context)
            self.bulk[cache_key] = {"status": response.status_code, "body": response.json()}
        return self.bulk[cache_key]

    def native_bulk(self, flag: str, context: dict) -> dict:
        answer = self._bulk("native", context)
        if answer["status"] == 400:  # a context refused as a whole
            return _error(answer["body"]["errorCode"])
        assert answer["status"] == 200
        if flag not in answer["body"]["flags"]:
            return _error("FLAG_NOT_FOUND")  # archived and missing flags are not listed
        return _native(answer["body"]["flags"][flag])

    def ofrep_bulk(self, flag: str, context: dict) -> dict:
        answer = self._bulk("ofrep", context)
        if answer["status"] == 400:  # a context refused as a whole
            return _error(answer["body"]["errorCode"])
        assert answer["status"] == 200
        items = {item["key"]: item for item in answer["body"]["flags"]}
        if flag not in items:
            return _error("FLAG_NOT_FOUND")
        return _ofrep(items[flag])


@pytest.mark.django_db
@pytest.mark.parametrize("name", sorted(SUITES))
def test_suite_over_http(client, name: str) -> None:
    suite = SUITES[name]
    loaded = load_document(suite["document"])
    # The services refuse the flags the engine cannot compile, and prerequisites the engine
    # treats as failed (on a missing flag, in a cycle); nothing else.
    for case in suite["cases"]:
        reason = loaded.refused.get(case["flag"])
        if reason is not None and "prerequisites[" not in reason:
            assert case["expect"].get("error_code") == "PARSE_ERROR", reason
    api = Api(client, api_key(loaded.environment, "server"))
    mismatches, checked = [], 0
    for index, case in enumerate(suite["cases"]):
        expect = {**case["expect"], "error_code": case["expect"].get("error_code")}
        if expect["error_code"] in HTTP_UNSUPPORTED_ERRORS:
            continue
        if case["flag"] in loaded.refused:
            continue
        for way in (api.native_one, api.ofrep_one, api.native_bulk, api.ofrep_bulk):
            actual = way(case["flag"], case["context"])
            same_json = json.dumps(actual["value"]) == json.dumps(expect["value"])
            if actual != expect or not same_json:
                mismatches.append((index, case["flag"], way.__name__, actual, expect))
        checked += 1
    assert not mismatches, mismatches[:10]
    assert checked >= len(suite["cases"]) * 0.5, "most of each suite runs over HTTP"
