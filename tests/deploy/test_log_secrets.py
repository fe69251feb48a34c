"""No secret in any log line: keys, tokens and passwords driven through every door, then
every captured line, formatted by the configured formatters (text and JSON), is searched."""

import io
import logging

import pytest
from django.conf import settings
from django.core.management import call_command
from rest_framework.test import APIClient

from flags import services
from flagsite.logs import JsonFormatter, TextFormatter
from tests import factories

pytestmark = pytest.mark.django_db

PASSWORD = "correct-horse-battery-staple"


@pytest.fixture
def captured():
    """Every record from every logger, through both configured formatters."""
    assert settings.LOGGING["formatters"]["text"]["()"] == "flagsite.logs.TextFormatter"
    assert settings.LOGGING["formatters"]["json"]["()"] == "flagsite.logs.JsonFormatter"
    stream = io.StringIO()
    handlers = []
    for formatter in (
        TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"),
        JsonFormatter(),
    ):
        handler = logging.StreamHandler(stream)
        handler.setFormatter(formatter)
        handler.setLevel(logging.DEBUG)
        handlers.append(handler)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.DEBUG)
    for handler in handlers:
        root.addHandler(handler)
    yield stream
    for handler in handlers:
        root.removeHandler(handler)
    root.setLevel(level)


def test_no_key_token_or_password_reaches_a_log_line(captured, client):
    project = factories.project("shop")
    factories.flag(project, "checkout")
    factories.user("alice", superuser=True)
    environment = factories.environment(project, "production")
    _, server_key = services.api_key_create(
        environment=environment, kind="server", name="s", **factories.SYSTEM
    )
    _, client_key = services.api_key_create(
        environment=environment, kind="client", name="c", **factories.SYSTEM
    )
    api = APIClient()
    tokens = api.post(
        "/api/v1/auth/token/", {"username": "alice", "password": PASSWORD}, format="json"
    ).json()
    secrets = [server_key, client_key, tokens["access"], tokens["refresh"], PASSWORD]

    # The token endpoint, with a wrong password too.
    api.post(
        "/api/v1/auth/token/", {"username": "alice", "password": PASSWORD + "x"}, format="json"
    )
    api.post("/api/v1/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json")
    # The management API: tokens in the header and (refused) in query strings.
    for path in (
        f"/api/v1/projects?access_token={tokens['access']}",
        f"/api/v1/nowhere?api_key={server_key}&password={PASSWORD}",
        f"/api/v1/projects/nope?token={tokens['refresh']}",
    ):
        api.get(path, HTTP_AUTHORIZATION=f"Bearer {tokens['access']}")
    api.get("/api/v1/projects", HTTP_AUTHORIZATION=f"Bearer {tokens['access']}x")
    # Evaluation: keys in headers, and in query strings where nothing should take them.
    for key in (server_key, client_key):
        client.post(
            "/ofrep/v1/evaluate/flags", {}, content_type="application/json", HTTP_X_API_KEY=key
        )
        client.post(f"/ofrep/v1/evaluate/flags?key={key}", {}, content_type="application/json")
        client.get(f"/api/v1/sdk/flags?api_key={key}", HTTP_AUTHORIZATION=f"Bearer {key}x")
        client.get(f"/api/v1/evaluate/checkout?key={key}")
    # The admin login, right and wrong.
    client.post("/admin/login/", {"username": "alice", "password": PASSWORD + "y"})
    client.post(f"/admin/login/?password={PASSWORD}", {"username": "alice", "password": PASSWORD})
    # The command line makes a key (printed once on stdout, never logged).
    call_command(
        "flags", "keys", "create", "shop", "production", "--name", "cli", stdout=io.StringIO()
    )

    output = captured.getvalue()
    assert "POST /api/v1/auth/token/" in output, "the requests were logged"
    assert "[redacted]" in output, "query-string secrets were there to scrub"
    for secret in secrets:
        assert secret not in output
        assert secret[:24] not in output
