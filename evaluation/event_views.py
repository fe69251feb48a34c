"""`POST /api/v1/sdk/events`: what units did (events), and the first exposures of SDKs that
evaluate in process.

`{"events": [{"event", "targetingKey", "value"?, "timestamp"?}, ...],
  "firstExposures": [{"flag", "variant", "targetingKey", "timestamp"?}, ...]}` (either list
may be left out). An item that is not well formed makes the request a 400 naming the item
and the field, and nothing of it is kept. A first exposure naming no flag or variant of the
key's environment is dropped and counted in the answer's `droppedBy`.

Server keys may send both. Client keys (browsers, apps: where conversions happen) may send
events only, at most CLIENT_MAX_ITEMS a request, under the per-key rate limit of every SDK
endpoint; with secure mode on, each event's targetingKey must come with its
`targetingKeyHash`, so a page reports events only as the user it was rendered for. Events
name no flag, and nothing is answered about any flag: a client key learns nothing by them.

While the environment's backlog in Redis is at its bound (`EVENTS_MAX_BACKLOG`), a well
formed request is a 503 with Retry-After and nothing of it is kept: what was answered 202
is stored, what was not is for the SDK to send again.
"""

from __future__ import annotations

import math
import time
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from evaluation import cache, events, secure_mode
from evaluation.batches import text_problem
from evaluation.credentials import Credential
from evaluation.engine import Reason
from evaluation.exposure_views import BadExposures, known_flags, moment, posted_json, unknown_in
from flags.api.errors import error_body
from flagsite import metrics

MAX_ITEMS = 1000
CLIENT_MAX_ITEMS = 100
MAX_VALUE = 1e12  # |value|: a price, a duration, a count; the sums of squares stay exact enough
MAX_AGE_SECONDS = 7 * 24 * 3600
EVENT_FIELDS = frozenset({"event", "targetingKey", "value", "timestamp", "targetingKeyHash"})
EXPOSURE_FIELDS = frozenset({"flag", "variant", "targetingKey", "timestamp"})
BODY_FIELDS = frozenset({"events", "firstExposures"})


class BadEvents(ValueError):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JsonResponse:
    return JsonResponse(error_body(status, message), status=status)


def _fields(item: Any, where: str, allowed: frozenset[str]) -> dict:
    if not isinstance(item, dict):
        raise BadEvents(400, f"{where}: must be an object")
    unknown = sorted(set(item) - allowed)
    if unknown:
        raise BadEvents(400, f"{where}.{unknown[0]}: unknown field")
    return item


def _name(item: dict, field: str, where: str, limit: int) -> str:
    text = item.get(field)
    problem = "is empty" if text == "" else text_problem(field, text, limit)
    if problem:
        raise BadEvents(400, f"{where}.{field}: a string of 1 to {limit} characters ({problem})")
    return str(text)


def _unit(item: dict, where: str) -> str:
    unit = item.get("targetingKey")
    problem = events.unit_problem(unit)
    if problem:
        raise BadEvents(400, f"{where}.targetingKey: {problem}")
    return str(unit)


def _value(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadEvents(400, f"{where}.value: a number")
    # abs() before isfinite(): an integer of 400 digits has no float to be compared as.
    if not abs(value) <= MAX_VALUE or not math.isfinite(value):
        raise BadEvents(400, f"{where}.value: a finite number of at most {MAX_VALUE:.0e}")
    return float(value)


def _time(value: Any, where: str, now: float) -> float:
    if value is None:
        return now
    try:
        return moment(value, f"{where}.timestamp", now, MAX_AGE_SECONDS)
    except BadExposures as error:
        raise BadEvents(400, str(error)) from None


def _event(item: Any, index: int, now: float, vouch: secure_mode.Setting | None) -> tuple:
    where = f"events[{index}]"
    item = _fields(item, where, EVENT_FIELDS)
    event = _name(item, "event", where, events.MAX_EVENT)
    unit = _unit(item, where)
    if vouch is not None:
        context = {"targetingKey": unit, secure_mode.HASH_ATTRIBUTE: item.get("targetingKeyHash")}
        try:
            secure_mode.verify(context, vouch)
        except secure_mode.Refusal as refusal:
            message = refusal.message.replace("context.", f"{where}.")
            raise BadEvents(refusal.status, message) from None
    return event, unit, _value(item.get("value"), where), _time(item.get("timestamp"), where, now)


def _first_exposure(item: Any, index: int, now: float) -> tuple[str, str, str, float]:
    where = f"firstExposures[{index}]"
    item = _fields(item, where, EXPOSURE_FIELDS)
    flag = _name(item, "flag", where, 100)
    variant = _name(item, "variant", where, 64)
    unit = _unit(item, where)
    return flag, variant, unit, _time(item.get("timestamp"), where, now)


def _lists(credential: Credential, body: Any) -> tuple[list, list]:
    if not isinstance(body, dict) or not body or set(body) - BODY_FIELDS:
        raise BadEvents(400, 'the body is {"events": [...], "firstExposures": [...]}')
    limit = MAX_ITEMS if credential.is_server else CLIENT_MAX_ITEMS
    found = []
    for field in ("events", "firstExposures"):
        items = body.get(field, [])
        if not isinstance(items, list) or len(items) > limit:
            raise BadEvents(400, f"{field}: a list of at most {limit} items")
        found.append(items)
    if found[1] and not credential.is_server:
        raise BadEvents(403, "firstExposures: a client key cannot send these; use a server key")
    return found[0], found[1]


def _vouch(credential: Credential) -> secure_mode.Setting | None:
    """The secure mode that a client key's events must satisfy, or None."""
    if credential.is_server:
        return None
    snapshot = cache.snapshot(credential.environment_id)
    if snapshot is None:
        raise BadEvents(401, "the key's environment no longer exists")
    mode = secure_mode.setting(credential.environment_id, snapshot.version)
    return mode if mode.enabled else None


def _backlog_full() -> JsonResponse:
    """503: the environment's events wait for the database in such numbers that this one
    would be one too many; the SDK keeps its queue and sends it again after Retry-After."""
    response = JsonResponse(
        {
            "error": "backlog_full",
            "detail": "events wait to be stored in such numbers that no more are taken now; "
            "send them again after Retry-After",
        },
        status=503,
    )
    response["Retry-After"] = str(max(1, settings.EXPOSURE_FLUSH_SECONDS))
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt
def sdk_events(request: HttpRequest) -> HttpResponse:
    """Accept a batch of events and first exposures; 202 with what was kept."""
    posted = posted_json(request, server_only=False)
    if isinstance(posted, JsonResponse):
        return posted
    credential, body = posted
    now = time.time()
    try:
        tracked, exposed = _lists(credential, body)
        vouch = _vouch(credential) if tracked else None
        parsed_events = [_event(item, index, now, vouch) for index, item in enumerate(tracked)]
        parsed_exposures = [_first_exposure(item, index, now) for index, item in enumerate(exposed)]
    except BadEvents as error:
        return _error(error.status, str(error))
    environment_id = credential.environment_id
    if events.backlog_full(environment_id):
        return _backlog_full()
    for event, unit, value, at in parsed_events:
        events.track(environment_id, event, unit, value, at)
    dropped: dict[str, int] = {}
    known = known_flags(environment_id) if parsed_exposures else {}
    for flag, variant, unit, at in parsed_exposures:
        why = unknown_in(known, flag, variant, Reason.SPLIT)
        if why:
            dropped[why] = dropped.get(why, 0) + 1
            continue
        events.expose_at(environment_id, flag, variant, unit, at)
    for why, number in dropped.items():
        metrics.record_dropped_events(why, number)
    kept = len(parsed_events) + len(parsed_exposures) - sum(dropped.values())
    answer: dict[str, Any] = {"accepted": kept, "dropped": sum(dropped.values())}
    if dropped:
        answer["droppedBy"] = dropped
    return JsonResponse(answer, status=202)
