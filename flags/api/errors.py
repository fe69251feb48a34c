"""One JSON error shape for the whole API: `{"error": CODE, "detail": ..., "fields": {...}}`."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from flags.errors import NotFound
from flags.services import ConflictError

CODES = {
    400: "invalid_request",
    401: "not_authenticated",
    403: "permission_denied",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    409: "conflict",
    413: "request_too_large",
    415: "unsupported_media_type",
    429: "throttled",
}


def _fields(detail, path: str = "") -> dict[str, list[str]]:
    """DRF's nested errors as flat `{"rules[0].serve.variant": [message, ...]}`."""
    if isinstance(detail, dict):
        fields: dict[str, list[str]] = {}
        for key, value in detail.items():
            name = f"{path}[{key}]" if isinstance(key, int) else f"{path}.{key}" if path else key
            fields.update(_fields(value, name))
        return fields
    if isinstance(detail, list) and any(isinstance(item, dict | list) for item in detail):
        fields = {}
        for index, item in enumerate(detail):
            fields.update(_fields(item, f"{path}[{index}]"))
        return fields
    messages = detail if isinstance(detail, list) else [detail]
    return {path or "body": [str(message) for message in messages]}


def error_body(status_code: int, detail: str, fields: dict | None = None, **extra) -> dict:
    body: dict[str, Any] = {"error": CODES.get(status_code, "error"), "detail": detail}
    if fields:
        body["fields"] = fields
    body.update(extra)
    return body


def exception_handler(exc, context):
    """Translate domain exceptions (services) and DRF's own into the API's JSON errors."""
    if isinstance(exc, RequestDataTooBig):
        detail = f"the body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes"
        return Response(error_body(413, detail), status=413)
    if isinstance(exc, ConflictError):
        body = error_body(409, str(exc), current_version=exc.current_version)
        return Response(body, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, DjangoValidationError):
        fields = exc.message_dict if hasattr(exc, "error_dict") else {"non_field": exc.messages}
        first = next(iter(fields.items()))
        detail = f"{first[0]}: {first[1][0]}"
        return Response(error_body(400, detail, fields), status=400)
    if isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied(str(exc) or None)
    if isinstance(exc, Http404 | NotFound):
        exc = exceptions.NotFound(str(exc) or None)
    response = drf_exception_handler(exc, context)
    if response is None:
        return None
    detail = response.data
    fields = _fields(detail) if isinstance(exc, exceptions.ValidationError) else None
    if fields:
        first_key, first_messages = next(iter(fields.items()))
        text = f"{first_key}: {first_messages[0]}"
    elif isinstance(detail, dict) and "detail" in detail:
        text = str(detail["detail"])
    elif isinstance(detail, list):
        text = "; ".join(str(item) for item in detail)
    else:
        text = str(detail)
    response.data = error_body(response.status_code, text, fields)
    return response
