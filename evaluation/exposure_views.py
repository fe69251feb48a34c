"""`POST /api/v1/sdk/exposures`: server-side SDKs that evaluate in process post their counts."""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from evaluation import exposures
from evaluation.credentials import CredentialError, authenticate
from flags.api.errors import error_body

MAX_ITEMS = 1000
MAX_COUNT = 1_000_000_000
# Counts for hours older than this are refused: the admin's charts have moved on.
MAX_AGE_SECONDS = 7 * 24 * 3600
FIELDS = {"flag", "variant", "reason", "count", "hour"}


class BadExposures(ValueError):
    pass


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse(error_body(status, message), status=status)


def _hour(value: Any, index: int, now: float) -> int:
    if value is None:
        return int(now)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise BadExposures(f"exposures[{index}].hour: an ISO 8601 time with a zone")
        value = parsed.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadExposures(f"exposures[{index}].hour: an ISO 8601 time or epoch seconds")
    if not now - MAX_AGE_SECONDS <= value <= now + 3600:
        raise BadExposures(f"exposures[{index}].hour: within the last 7 days")
    return int(value)


def _item(item: Any, index: int, now: float) -> tuple[str, str, str, int, int]:
    if not isinstance(item, dict):
        raise BadExposures(f"exposures[{index}]: must be an object")
    unknown = sorted(set(item) - FIELDS)
    if unknown:
        raise BadExposures(f"exposures[{index}].{unknown[0]}: unknown field")
    flag, variant = item.get("flag"), item.get("variant") or ""
    reason, count = item.get("reason"), item.get("count")
    if not isinstance(flag, str) or not 0 < len(flag) <= 100:
        raise BadExposures(f"exposures[{index}].flag: a flag key")
    if not isinstance(variant, str) or len(variant) > 64:
        raise BadExposures(f"exposures[{index}].variant: a variant key or null")
    if not isinstance(reason, str) or not 0 < len(reason) <= 32:
        raise BadExposures(f"exposures[{index}].reason: an evaluation reason")
    if isinstance(count, bool) or not isinstance(count, int) or not 0 < count <= MAX_COUNT:
        raise BadExposures(f"exposures[{index}].count: a whole number from 1 to {MAX_COUNT}")
    return flag, variant, reason, count, _hour(item.get("hour"), index, now)


@csrf_exempt
def sdk_exposures(request: HttpRequest) -> HttpResponse:
    """Accept `{"exposures": [{"flag", "variant", "reason", "count", "hour"?}, ...]}`."""
    if request.method != "POST":
        response = _error(405, "use POST")
        response["Allow"] = "POST"
        return response
    try:
        credential = authenticate(request, server_only=True)
    except CredentialError as error:
        return _error(error.status, error.message)
    try:
        body = json.loads(request.body or b"null")
    except ValueError as error:
        return _error(400, f"the body is not valid JSON: {error}")
    if not isinstance(body, dict) or set(body) != {"exposures"}:
        return _error(400, 'the body is {"exposures": [...]}')
    items = body["exposures"]
    if not isinstance(items, list) or len(items) > MAX_ITEMS:
        return _error(400, f"exposures: a list of at most {MAX_ITEMS} counts")
    now = time.time()
    try:
        parsed = [_item(item, index, now) for index, item in enumerate(items)]
    except BadExposures as error:
        return _error(400, str(error))
    for flag, variant, reason, count, hour in parsed:
        exposures.add(credential.environment_id, flag, variant, reason, count, hour)
    return JsonResponse({"accepted": len(parsed)}, status=202)
