"""Uncaught errors and stores that are away, as a client and the log see them.

The views below fail on purpose, with real errors: a bug, and the errors real clients
raise for a PostgreSQL and a Redis nobody listens on. This module is also the URLconf of
its tests: those views next to the service's own URLs and error handler.
"""

from __future__ import annotations

import logging

import pytest
from django.db.utils import ConnectionHandler
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import path
from django_redis.cache import RedisCache

from flagsite import failures
from flagsite.urls import handler500  # noqa: F401 - the handler these tests exercise
from flagsite.urls import urlpatterns as site_urlpatterns
from tests.servers import free_port

pytestmark = pytest.mark.django_db

CLOSED_PORT = free_port()  # bound and released: nothing listens there


def bug(request: HttpRequest) -> HttpResponse:
    raise ZeroDivisionError("a bug with a secret in it: s3cr3t")


def database_away(request: HttpRequest) -> HttpResponse:
    settings = {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": "flags",
        "USER": "postgres",
        "HOST": "127.0.0.1",
        "PORT": CLOSED_PORT,
        "OPTIONS": {"connect_timeout": 1},
    }
    with ConnectionHandler({"default": settings})["default"].cursor() as cursor:
        cursor.execute("SELECT 1")
    return HttpResponse("unreachable")


def cache_away(request: HttpRequest) -> HttpResponse:
    redis = RedisCache(
        f"redis://127.0.0.1:{CLOSED_PORT}/0",
        {"OPTIONS": {"SOCKET_CONNECT_TIMEOUT": 0.5, "SOCKET_TIMEOUT": 0.5}},
    )
    redis.get("anything")
    return HttpResponse("unreachable")


failing = [
    path(f"{prefix}/{name}", view)
    for prefix in ("api/v1/test", "ofrep/v1/test", "pages")
    for name, view in (("bug", bug), ("database", database_away), ("cache", cache_away))
]
urlpatterns = failing + site_urlpatterns


class BrokenMiddleware:
    """Fails outside any view, where only handler500 can answer."""

    def __init__(self, get_response) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path.endswith("/broken-middleware"):
            raise KeyError("in a middleware")
        return self.get_response(request)


@pytest.fixture(autouse=True)
def urls_and_fresh_store_states(settings):
    settings.ROOT_URLCONF = __name__
    failures.forget()
    yield
    failures.forget()


@pytest.fixture
def client() -> Client:
    # Answer as the server does, instead of re-raising the error into the test.
    return Client(raise_request_exception=False)


def error_records(caplog) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


@pytest.mark.parametrize("prefix", ["/api/v1/test", "/ofrep/v1/test"])
def test_an_uncaught_error_under_the_api_is_a_json_500_logged_once(client, caplog, prefix):
    response = client.get(f"{prefix}/bug")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert body.get("error") == "internal_error" or body.get("errorCode") == "GENERAL"
    assert body["requestId"] == response["X-Request-ID"]
    assert "Traceback" not in response.content.decode()
    assert "s3cr3t" not in response.content.decode()
    records = error_records(caplog)
    assert len(records) == 1, [record.getMessage() for record in records]
    assert records[0].exc_info is not None  # the traceback is in the log, once


def test_an_error_raised_outside_a_view_is_a_json_500_too(client, settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, f"{__name__}.BrokenMiddleware"]
    response = client.get("/api/v1/test/broken-middleware")
    assert response.status_code == 500
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"] == "internal_error"


def test_pages_outside_the_api_keep_the_html_error_page(client):
    response = client.get("/pages/bug")
    assert response.status_code == 500
    assert response["Content-Type"].startswith("text/html")
    assert "Traceback" not in response.content.decode()


@pytest.mark.parametrize(("view", "store"), [("database", "database"), ("cache", "cache")])
def test_a_store_that_is_away_is_a_503_naming_it_with_one_log_line(client, caplog, view, store):
    responses = [client.get(f"/api/v1/test/{view}") for _ in range(3)]
    for response in responses:
        assert response.status_code == 503
        assert response["Content-Type"] == "application/json"
        assert response["Retry-After"] == "1"
        assert response.json() == {
            "error": "store_unavailable",
            "detail": f"the {store} is unavailable; retry in a moment",
            "store": store,
        }
    messages = [record.getMessage() for record in caplog.records]
    down = [message for message in messages if message.startswith("store down")]
    assert len(down) == 1, messages
    assert down[0].startswith(f"store down: the {store} is unavailable")
    assert not any(record.exc_info for record in caplog.records), "no traceback per request"
    assert not error_records(caplog)  # and no ERROR line per request from Django either


def test_ofrep_answers_a_store_outage_in_its_own_error_shape(client):
    response = client.get("/ofrep/v1/test/cache")
    assert response.status_code == 503
    assert response.json() == {
        "errorCode": "GENERAL",
        "errorDetails": "the cache is unavailable; retry in a moment",
        "store": "cache",
    }


def test_pages_outside_the_api_answer_a_store_outage_with_a_short_html_503(client):
    response = client.get("/pages/database")
    assert response.status_code == 503
    assert response["Content-Type"].startswith("text/html")
    assert "The database is unavailable" in response.content.decode()
