"""GET /api/v1/stream: Server-Sent Events telling SDKs that their environment changed.

The shape is OFREP's notify-then-refetch (shared/ofrep/event-streams.yaml): each event is
`event: message`, `id: <version>`, `data: {"type": "refetchEvaluation", "etag": ...}`;
`data` also carries `version` and `changedAt` (epoch seconds of the commit, when known).
A reconnecting client sends `Last-Event-ID`; if the environment moved on meanwhile it gets
one event at once, so no change is missed. Comment lines every `HEARTBEAT_SECONDS` keep
idle proxies from closing the connection.

When the process shuts down, each stream sends a short `retry:` (spread over
`CLOSING_RETRY_MILLISECONDS`, so a thousand clients do not reconnect in the same
millisecond) and ends; the client reconnects to another process with its Last-Event-ID.
A stream opens at the version this process serves (while the stores are away, too): a
client that fetched the document just before it connected has that one. A newer version
the process has heard of meanwhile (its snapshot compiling) is announced to it at once.
"""

from __future__ import annotations

import asyncio
import json
import random
import time

from asgiref.sync import sync_to_async
from django.db import connections
from django.http import (
    HttpRequest,
    HttpResponseBase,
    JsonResponse,
    StreamingHttpResponse,
)

from evaluation import cache, credentials
from evaluation.broadcast import CLOSE, Broadcaster
from flags.models import ApiKey
from flags.services import KEY_PREFIXES
from flagsite import metrics

HEARTBEAT_SECONDS = 15.0
# What OFREP's bulk response advertises: connect here (same credentials) and refetch on
# each event. `endpoint` keeps the origin the provider already uses.
OFREP_EVENT_STREAMS = [
    {"type": "sse", "endpoint": {"requestUri": "/api/v1/stream"}, "inactivityDelaySec": 120}
]
RETRY_MILLISECONDS = 2000
STREAM_ERRORS = {400: "invalid_request", 401: "not_authenticated", 403: "permission_denied"}
SERVER_KEY_PREFIX = KEY_PREFIXES[ApiKey.Kind.SERVER]
# The reconnection delay a stream closed by a shutdown advises: a random value in this range.
CLOSING_RETRY_MILLISECONDS = (100, 1000)


def config_etag(environment_id: int, version: int) -> str:
    """The flag configuration's validator; the SDK document's ETag carries the same value."""
    return f"{environment_id}-{version}"


def event(environment_id: int, version: int, changed_at: float | None = None) -> str:
    changed_at = changed_at or time.time()
    data = {
        "type": "refetchEvaluation",
        "etag": config_etag(environment_id, version),
        "version": version,
        "lastModified": int(changed_at),
        "changedAt": changed_at,
    }
    return f"id: {version}\nevent: message\ndata: {json.dumps(data)}\n\n"


# A version is a 64-bit integer: a longer id is not one of ours (and int() of 5,000 digits
# raises), so it counts as no id at all.
MAX_EVENT_ID_DIGITS = 19


def _last_event_id(request: HttpRequest) -> int | None:
    raw = request.headers.get("Last-Event-ID", "").strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_EVENT_ID_DIGITS:
        return None
    return int(raw)


SERVER_KEY_IN_URL = (
    "a server key cannot be sent in the URL (URLs end up in logs and browser history): "
    "send it as 'Authorization: Bearer <key>' or X-API-Key; ?key= takes client keys only"
)


def _authenticate(request: HttpRequest) -> credentials.Credential:
    """Headers as everywhere; `?key=` too, since browsers' EventSource cannot set headers.

    Only client keys may travel in the URL: a server key there is refused (400) whether or
    not it is valid, and whether or not a header carries a key as well.
    """
    key = request.GET.get("key")
    if key is None:
        return credentials.authenticate(request.headers)
    if key.strip().startswith(SERVER_KEY_PREFIX):
        raise credentials.CredentialError(400, SERVER_KEY_IN_URL)
    if credentials.presented_secret(request.headers):
        return credentials.authenticate(request.headers)
    headers = {"x-api-key": key} if key.strip() else {}
    credential = credentials.authenticate(headers)
    if credential.is_server:  # a server key without its usual prefix
        raise credentials.CredentialError(400, SERVER_KEY_IN_URL)
    return credential


def _open(request: HttpRequest) -> tuple[int, int]:
    """The stream's environment and the version it opens at.

    Each request has database connections of its own, closed when it ends; a stream ends
    only when its client leaves, so it gives them back here, before it starts waiting.
    Otherwise every open stream would hold a PostgreSQL connection, and a few hundred
    streams would exhaust the server's `max_connections`.
    """
    try:
        credential = _authenticate(request)
        return credential.environment_id, cache.served_version(credential.environment_id)
    finally:
        for connection in connections.all(initialized_only=True):
            if not connection.in_atomic_block:
                connection.close()


async def stream(request: HttpRequest) -> HttpResponseBase:
    if request.method != "GET":
        return JsonResponse({"error": "method_not_allowed", "detail": "use GET"}, status=405)
    try:
        environment_id, version = await sync_to_async(_open)(request)
    except credentials.CredentialError as error:
        code = STREAM_ERRORS.get(error.status, "permission_denied")
        return JsonResponse({"error": code, "detail": error.message}, status=error.status)
    broadcaster = Broadcaster.ensure_started()
    queue = broadcaster.subscribe(environment_id, version)
    response = StreamingHttpResponse(
        _events(broadcaster, queue, environment_id, version, _last_event_id(request)),
        content_type="text/event-stream",
    )
    response["Cache-Control"] = "no-cache"
    response["X-Accel-Buffering"] = "no"  # nginx: do not buffer the stream
    return response


def _version(announcement: tuple[int, float | None]) -> int:
    return announcement[0]


def closing() -> str:
    """The stream's last words on shutdown: reconnect soon (elsewhere), nothing is lost."""
    retry = random.randint(*CLOSING_RETRY_MILLISECONDS)
    return f"retry: {retry}\n: server shutting down, reconnect\n\n"


async def _events(broadcaster, queue, environment_id: int, version: int, last_seen: int | None):
    metrics.stream_opened()
    try:
        yield f"retry: {RETRY_MILLISECONDS}\n: connected at version {version}\n\n"
        sent = version
        if last_seen is not None and last_seen < version:
            yield event(environment_id, version)
        while True:
            try:
                announcements = [await asyncio.wait_for(queue.get(), HEARTBEAT_SECONDS)]
            except TimeoutError:
                yield ": heartbeat\n\n"
                continue
            while not queue.empty():  # a burst of changes is one refetch
                announcements.append(queue.get_nowait())
            if any(announcement is CLOSE for announcement in announcements):
                yield closing()
                return
            latest, changed_at = max(announcements, key=_version)
            if latest > sent:
                sent = latest
                yield event(environment_id, latest, changed_at)
    finally:
        broadcaster.unsubscribe(environment_id, queue)
        metrics.stream_closed()
