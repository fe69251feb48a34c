"""Request logging: one record per request, a request id echoed back, no secrets."""

import logging
import re

import pytest


@pytest.fixture
def request_records(caplog):
    caplog.set_level(logging.DEBUG, logger="flagsite.request")
    return caplog


def records_for(caplog, request_id: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if getattr(r, "request_id", None) == request_id]


def test_callers_request_id_is_echoed_and_logged(client, request_records):
    response = client.get("/no-such-page", headers={"X-Request-ID": "abc-123"})
    assert response["X-Request-ID"] == "abc-123"
    (record,) = records_for(request_records, "abc-123")
    assert record.levelno == logging.INFO
    assert (record.method, record.route, record.path, record.status) == (
        "GET",
        "unresolved",
        "/no-such-page",
        404,
    )
    assert record.duration_ms >= 0


def test_request_id_is_made_when_none_is_given(client):
    first = client.get("/healthz")["X-Request-ID"]
    second = client.get("/healthz")["X-Request-ID"]
    assert re.fullmatch(r"[0-9a-f]{32}", first)
    assert first != second


@pytest.mark.parametrize("given", ["two\nlines", "x" * 129, "spaces are odd"])
def test_unusable_request_ids_are_replaced(client, given):
    returned = client.get("/healthz", headers={"X-Request-ID": given})["X-Request-ID"]
    assert returned != given
    assert re.fullmatch(r"[0-9a-f]{32}", returned)


def test_probes_are_logged_at_debug_only(client, request_records):
    client.get("/healthz", headers={"X-Request-ID": "probe-1"})
    (record,) = records_for(request_records, "probe-1")
    assert record.levelno == logging.DEBUG
    assert record.route == "healthz"


def test_secrets_in_headers_query_and_body_are_never_logged(client, db, request_records):
    client.post(
        "/admin/login/?token=query-secret-1",
        {"username": "someone", "password": "body-secret-2"},
        headers={
            "Authorization": "Bearer header-secret-3",
            "X-API-Key": "header-secret-4",
            "X-Request-ID": "login-1",
        },
    )
    (record,) = records_for(request_records, "login-1")
    logged = request_records.text + repr(vars(record))
    for secret in ("query-secret-1", "body-secret-2", "header-secret-3", "header-secret-4"):
        assert secret not in logged
