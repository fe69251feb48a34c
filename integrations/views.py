"""The trigger endpoint alerting systems call: `POST /api/v1/triggers/<uid>`.

A plain Django view, like the evaluation endpoints: every answer is JSON in the API's error
shape, whatever the caller sends. The body is optional; when given it must be a JSON
object (Alertmanager, Grafana and Datadog send one), its strings free of NUL and lone
surrogates, and it is read only for a short reason kept in the audit log. Bodies of other
types (forms, text) are not read at all.
"""

from __future__ import annotations

import json
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from flags.api.errors import error_body
from integrations import triggers

MAX_BODY_BYTES = 64 * 1024
MAX_REASON = 300


class BadBody(Exception):
    def __init__(self, status: int, message: str, field: str = "body") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def _answer(status: int, detail: str, field: str | None = None, **headers: str) -> JsonResponse:
    fields = {field: [detail]} if field else None
    response = JsonResponse(error_body(status, detail, fields), status=status)
    for name, value in headers.items():
        response[name] = value
    return response


def _secret(request: HttpRequest) -> str:
    header = request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip()
    return request.GET.get("token", "")


def _bad_text(value: str) -> bool:
    return "\x00" in value or any(0xD800 <= ord(char) <= 0xDFFF for char in value)


def _check_strings(value: Any, path: str = "body") -> None:
    """Every key and string of the body must be text the database can hold."""
    stack = [(value, path)]
    while stack:
        item, where = stack.pop()
        if isinstance(item, str) and _bad_text(item):
            field = "reason" if where == "body.reason" else "body"
            raise BadBody(400, f"{where}: contains NUL or a lone surrogate", field)
        if isinstance(item, dict):
            for key, child in item.items():
                if _bad_text(key):
                    raise BadBody(400, f"{where}: a key contains NUL or a lone surrogate")
                stack.append((child, f"{where}.{key}"))
        elif isinstance(item, list):
            stack.extend((child, f"{where}[{index}]") for index, child in enumerate(item))


def _is_json(content_type: str) -> bool:
    # Senders that name no type get the benefit of the doubt; forms and text are not read.
    return content_type in ("", "application/json") or content_type.endswith("+json")


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _read_body(request: HttpRequest) -> dict:
    length = request.META.get("CONTENT_LENGTH") or ""
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise BadBody(413, f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        raw = request.body
    except RequestDataTooBig:
        raise BadBody(413, f"the body is over {MAX_BODY_BYTES} bytes") from None
    if len(raw) > MAX_BODY_BYTES:
        raise BadBody(413, f"the body is over {MAX_BODY_BYTES} bytes")
    if not raw.strip() or not _is_json(request.content_type or ""):
        return {}  # a form or text body carries nothing the trigger reads
    try:
        data = json.loads(raw.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadBody(400, "the body is not valid JSON (UTF-8)") from None
    if not isinstance(data, dict):
        raise BadBody(400, "the body must be a JSON object")
    _check_strings(data)
    return data


def reason_of(body: dict) -> str:
    """Why the trigger fired, from our own `reason` or the alerting systems' usual fields."""
    reason = body.get("reason")
    if reason is None:
        labels = body.get("commonLabels")
        if isinstance(labels, dict) and isinstance(labels.get("alertname"), str):
            reason = f"{body.get('status', 'firing')}: {labels['alertname']}"  # Alertmanager
        elif isinstance(body.get("title"), str):
            reason = body["title"]  # Grafana
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise BadBody(400, "reason: must be a string", "reason")
    return str(reason)[:MAX_REASON]


@csrf_exempt
def fire(request: HttpRequest, uid: str) -> JsonResponse:
    if request.method != "POST":
        return _answer(405, "use POST", Allow="POST")
    address = request.META.get("REMOTE_ADDR", "")
    try:
        body = _read_body(request)
        reason = reason_of(body)
        trigger = triggers.authenticate(uid, _secret(request), address)
        firing = triggers.trigger_fire(trigger=trigger, reason=reason)
    except BadBody as error:
        return _answer(error.status, error.message, error.field)
    except triggers.TriggerRefused as error:
        headers = {"Retry-After": str(error.retry_after)} if error.retry_after else {}
        if error.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="triggers"'
        return _answer(error.status, error.message, **headers)
    return JsonResponse(firing.as_json())
