"""The two doors to the evaluation endpoints, for tests: Django's views and the ASGI fast
path in front of Django (evaluation.fastpath).

`FastPathClient` is Django's test client whose requests go through the fast path first;
what the fast path hands on to Django is served by Django's own test handler. The fast
path runs in an event loop of asgiref's `async_to_sync`, so its work redone in a thread
(`sync_to_async`) comes back to the test's thread, inside the test's transaction.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote

import pytest
from asgiref.sync import async_to_sync
from django.core.handlers.wsgi import WSGIRequest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.http import HttpResponse
from django.test import Client

from evaluation.fastpath import FastPath

DOORS = ("django", "fast path")


def _scope(environ: dict) -> dict:
    raw_path = environ["PATH_INFO"].encode("latin-1")
    headers = []
    for name, value in environ.items():
        if name.startswith("HTTP_"):
            headers.append((name[5:].replace("_", "-").lower().encode(), value.encode("latin-1")))
        elif name in ("CONTENT_TYPE", "CONTENT_LENGTH") and value:
            headers.append((name.replace("_", "-").lower().encode(), str(value).encode()))
    if not any(name == b"host" for name, _ in headers):
        headers.append((b"host", environ.get("SERVER_NAME", "testserver").encode()))
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": environ["REQUEST_METHOD"],
        "scheme": environ.get("wsgi.url_scheme", "http"),
        "path": raw_path.decode("utf-8", "replace"),
        "raw_path": quote(raw_path).encode(),
        "query_string": environ.get("QUERY_STRING", "").encode("latin-1"),
        "headers": headers,
        "client": (environ.get("REMOTE_ADDR", "127.0.0.1"), 50000),
        "server": ("testserver", 80),
    }


@contextmanager
def keeping_the_test_transaction() -> Iterator[None]:
    """As Django's test handler: the test's transaction must outlive each request, which
    the request signals' `close_old_connections` would end."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


class _FastPathHandler:
    def __init__(self, django_handler) -> None:
        self.django_handler = django_handler
        self.deferred = 0

    def __call__(self, environ: dict) -> HttpResponse:
        stream = environ["wsgi.input"]
        length = environ.get("CONTENT_LENGTH")
        body = stream.read(int(length)) if length else b""
        messages: list[dict] = []
        handed_on: list[bool] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict) -> None:
            messages.append(message)

        async def django(scope, receive, send) -> None:
            handed_on.append(True)

        with keeping_the_test_transaction():
            async_to_sync(FastPath(fallback=django))(_scope(environ), receive, send)
        if handed_on:
            self.deferred += 1
            environ["wsgi.input"] = type(stream)(body)
            return self.django_handler(environ)
        start, content = messages[0], messages[1]
        response = HttpResponse(content["body"], status=start["status"])
        del response["Content-Type"]
        for name, value in start["headers"]:
            response[name.decode()] = value.decode("latin-1")
        response.wsgi_request = WSGIRequest(environ)  # type: ignore[attr-defined]
        response.served_by_fast_path = True  # type: ignore[attr-defined]
        return response


class FastPathClient(Client):
    """Django's test client, with the evaluation endpoints answered by the fast path."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.handler = _FastPathHandler(self.handler)


@pytest.fixture(params=DOORS)
def client(request):
    """Each test that takes `client` runs through both doors."""
    return Client() if request.param == "django" else FastPathClient()
