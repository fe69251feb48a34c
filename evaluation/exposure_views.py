"""`POST /api/v1/sdk/exposures`: server-side SDKs that evaluate in process post their counts.

A count must be well formed (else the request is a 400 naming the item and field) and name
a flag of the key's environment, one of its variants (none only with reason ERROR) and an
engine reason; a count that does not is dropped, counted in the answer's `dropped` and in
`flags_exposures_dropped_total`, and never reaches the counters.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

from django.conf import settings
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from evaluation import cache, exposures
from evaluation.credentials import Credential, CredentialError, authenticate
from evaluation.engine import Reason, Snapshot
from flags.api.errors import error_body
from flagsite import metrics

MAX_ITEMS = 1000
MAX_COUNT = 1_000_000_000
# Counts for hours older than this are refused: the admin's charts have moved on.
MAX_AGE_SECONDS = 7 * 24 * 3600
FIELDS = {"flag", "variant", "reason", "count", "hour"}
REASONS = frozenset(
    value for name, value in vars(Reason).items() if name.isupper() and isinstance(value, str)
)


class BadExposures(ValueError):
    pass


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse(error_body(status, message), status=status)


def moment(value: Any, where: str, now: float, max_age: float) -> float:
    """Epoch seconds of an ISO 8601 time with a zone or of epoch seconds, from `max_age`
    seconds ago to an hour ahead (clocks differ); BadExposures naming `where` if not."""
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is None or parsed.tzinfo is None:
            raise BadExposures(f"{where}: an ISO 8601 time with a zone")
        value = parsed.timestamp()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadExposures(f"{where}: an ISO 8601 time or epoch seconds")
    if not now - max_age <= value <= now + 3600:
        raise BadExposures(f"{where}: within the last {max_age // 86400:.0f} days")
    return float(value)


def _hour(value: Any, index: int, now: float) -> int:
    if value is None:
        return int(now)
    return int(moment(value, f"exposures[{index}].hour", now, MAX_AGE_SECONDS))


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


def posted_json(
    request: HttpRequest, *, server_only: bool
) -> tuple[Credential, Any] | JsonResponse:
    """The key and the JSON body of an SDK's POST, or the answer to send (405, 401/403,
    413, or 400 for a body that is not JSON: NaN, nested too deeply, ...)."""
    if request.method != "POST":
        response = _error(405, "use POST")
        response["Allow"] = "POST"
        return response
    try:
        credential = authenticate(request.headers, server_only=server_only)
    except CredentialError as error:
        return _error(error.status, error.message)
    try:
        body = json.loads(request.body or b"null", parse_constant=_no_constant)
    except RequestDataTooBig:
        return _error(413, f"the body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes")
    except RecursionError:
        return _error(400, "the body is not valid JSON: nested too deeply")
    except ValueError as error:
        return _error(400, f"the body is not valid JSON: {error}")
    return credential, body


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


@csrf_exempt
def sdk_exposures(request: HttpRequest) -> HttpResponse:
    """Accept `{"exposures": [{"flag", "variant", "reason", "count", "hour"?}, ...]}`."""
    posted = posted_json(request, server_only=True)
    if isinstance(posted, JsonResponse):
        return posted
    credential, body = posted
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
    known = known_flags(credential.environment_id)
    dropped: dict[str, int] = {}
    accepted = 0
    for flag, variant, reason, count, hour in parsed:
        why = unknown_in(known, flag, variant, reason)
        if why:
            dropped[why] = dropped.get(why, 0) + 1
            continue
        exposures.add(credential.environment_id, flag, variant, reason, count, hour)
        accepted += 1
    for why, number in dropped.items():
        metrics.record_dropped_exposures(why, number)
    answer: dict[str, Any] = {"accepted": accepted, "dropped": sum(dropped.values())}
    if dropped:
        answer["droppedBy"] = dropped
    return JsonResponse(answer, status=202)


_known: dict[int, tuple[Snapshot, dict[str, frozenset[str]]]] = {}


def known_flags(environment_id: int) -> dict[str, frozenset[str]]:
    """Each flag of the environment's current snapshot with its variant keys."""
    snapshot = cache.snapshot(environment_id)
    if snapshot is None:
        return {}
    entry = _known.get(environment_id)
    if entry is not None and entry[0] is snapshot:
        return entry[1]
    flags = {
        key: frozenset(
            str(v["key"])
            for v in flag.get("variants", ())
            if isinstance(v, dict) and isinstance(v.get("key"), str)
        )
        for key, flag in snapshot.document.get("flags", {}).items()
        if isinstance(flag, dict)
    }
    _known[environment_id] = (snapshot, flags)
    return flags


def unknown_in(known: dict[str, frozenset[str]], flag: str, variant: str, reason: str) -> str:
    """Why a count names nothing of the environment ("unknown_flag", ...), or ""."""
    if flag not in known:
        return "unknown_flag"
    if reason not in REASONS:
        return "unknown_reason"
    if variant not in known[flag] and not (variant == "" and reason == Reason.ERROR):
        return "unknown_variant"
    return ""
