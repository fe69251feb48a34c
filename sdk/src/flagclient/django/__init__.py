"""Django helpers: one client per process from settings, `flag_enabled`, a view decorator.

    # settings.py
    INSTALLED_APPS = [..., "flagclient.django"]   # for the {% flag %} template tag
    FLAGCLIENT = {"URL": "https://flags.example.com", "SERVER_KEY": os.environ["FLAGS_KEY"]}

The client is created on first use in each process, so under gunicorn every worker starts
its own background thread after the fork (see docs/sdk.md).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.http import Http404, HttpRequest, HttpResponseBase, HttpResponseRedirect
from django.shortcuts import resolve_url
from django.utils.module_loading import import_string

from flagclient.client import FlagClient

# FLAGCLIENT keys and the FlagClient arguments they set.
OPTIONS = {
    "STREAMING": "streaming",
    "STREAM_URL": "stream_url",
    "POLL_INTERVAL": "poll_interval",
    "STREAM_POLL_INTERVAL": "stream_poll_interval",
    "RECONNECT_DELAY": "reconnect_delay",
    "STREAM_HEALTHY_AFTER": "stream_healthy_after",
    "TIMEOUT": "timeout",
    "STREAM_READ_TIMEOUT": "stream_read_timeout",
    "MAX_DOCUMENT_BYTES": "max_document_bytes",
    "BOOTSTRAP_PATH": "bootstrap_path",
    "REPORT_EXPOSURES": "report_exposures",
    "EXPOSURE_INTERVAL": "exposure_interval",
    "OFFLINE": "offline",
}

_client: FlagClient | None = None
_client_lock = threading.Lock()


def get_client() -> FlagClient:
    """The process's client, built from `settings.FLAGCLIENT` on first use."""
    global _client
    client = _client
    if client is not None:
        return client
    with _client_lock:
        if _client is None:
            _client = _build_client(getattr(settings, "FLAGCLIENT", None))
        return _client


def _build_client(config: dict[str, Any] | None) -> FlagClient:
    if not isinstance(config, dict):
        raise ImproperlyConfigured("set FLAGCLIENT = {'URL': ..., 'SERVER_KEY': ...}")
    offline = bool(config.get("OFFLINE"))
    if not offline and not (config.get("URL") and config.get("SERVER_KEY")):
        raise ImproperlyConfigured("FLAGCLIENT needs URL and SERVER_KEY (or OFFLINE: True)")
    options = {name: config[key] for key, name in OPTIONS.items() if key in config}
    try:
        return FlagClient(config.get("URL", ""), config.get("SERVER_KEY", ""), **options)
    except (TypeError, ValueError) as error:
        raise ImproperlyConfigured(f"FLAGCLIENT: {error}") from error


def _reset_client(*, setting: str, **kwargs: Any) -> None:
    """Tests that change FLAGCLIENT get a client built from the new settings."""
    global _client
    if setting != "FLAGCLIENT":
        return
    with _client_lock:
        client, _client = _client, None
    if client is not None:
        client.close()


setting_changed.connect(_reset_client)


def user_context(request: HttpRequest) -> dict[str, Any]:
    """The default evaluation context: the user's primary key as targeting key, and a few
    attributes rules commonly use. Replace it with FLAGCLIENT["CONTEXT"] (a dotted path)."""
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return {"anonymous": True}
    return {
        "targetingKey": str(user.pk),
        "anonymous": False,
        "username": user.get_username(),
        "email": getattr(user, "email", "") or "",
        "staff": bool(getattr(user, "is_staff", False)),
        "superuser": bool(getattr(user, "is_superuser", False)),
    }


def request_context(request: HttpRequest) -> dict[str, Any]:
    """The context for `request`, built once per request."""
    context = getattr(request, "_flagclient_context", None)
    if context is None:
        path = (getattr(settings, "FLAGCLIENT", None) or {}).get("CONTEXT")
        build: Callable[[HttpRequest], dict[str, Any]] = (
            import_string(path) if path else user_context
        )
        context = build(request)
        request._flagclient_context = context  # type: ignore[attr-defined]
    return context


def flag_value(request: HttpRequest, flag_key: str, default: Any = None) -> Any:
    return get_client().value(flag_key, request_context(request), default)


def flag_enabled(request: HttpRequest, flag_key: str, default: bool = False) -> bool:
    """Whether the boolean flag is on for the request's user; `default` if it cannot tell."""
    return get_client().value(flag_key, request_context(request), default) is True


View = Callable[..., HttpResponseBase]


def flag_required(flag_key: str, *, redirect_to: str | None = None) -> Callable[[View], View]:
    """A view decorator: the view runs only with the flag on; else 404 or a redirect."""

    def decorator(view: View) -> View:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
            if flag_enabled(request, flag_key):
                return view(request, *args, **kwargs)
            if redirect_to is not None:
                return HttpResponseRedirect(resolve_url(redirect_to))
            raise Http404(f"flag {flag_key} is off")

        return wrapped

    return decorator
