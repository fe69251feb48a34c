"""The evaluation endpoints as functions of a request: (method, path, headers, body) -> answer.

Native (`/api/v1/evaluate`), OFREP and the SDK flag document are answered here, and only
here: Django's views (evaluation.views) and the ASGI fast path in front of Django
(flagsite.asgi) are thin adapters that turn their own request into a `Request` and the
`Answer` into their own response. So authentication, snapshots, ETags and the bytes of
every answer are the same whichever door a request came through.

These functions are the service's hot path: authenticate from the in-process key cache,
evaluate against the in-process compiled snapshot, encode JSON. Once a key and its
environment's snapshot are cached, a request reaches neither the database nor, most of
the time, the shared cache. Store calls go through `flagsite.failures.reaching`, which on
the event loop raises WouldBlock instead (the fast path then redoes the request in a
thread). See docs/evaluation-api.md.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from evaluation import attributes, events, exposures, secure_mode
from evaluation import cache as snapshots
from evaluation.credentials import Credential, CredentialError, authenticate
from evaluation.engine import ErrorCode, EvaluationResult, Reason, Snapshot, compile_document
from evaluation.streams import OFREP_EVENT_STREAMS
from flags.api.errors import error_body
from flagsite import metrics
from flagsite.metrics import record_evaluations


@dataclass(frozen=True, slots=True)
class Request:
    """What an evaluation endpoint reads of a request."""

    method: str
    headers: Mapping[str, str]  # lower-case names (or case-insensitive, as Django's)
    body: bytes  # at most MAX_BODY_BYTES + 1: any longer body is cut there by the door


@dataclass(frozen=True, slots=True)
class Answer:
    """A response: status, JSON body (empty for a 304) and its headers beyond the type."""

    status: int
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()
    # None for a 304, which has no body: the door's default type, as before.
    content_type: str | None = "application/json"


# A context is a handful of attributes; anything this large is a mistake or an attack.
MAX_BODY_BYTES = 64 * 1024
REQUEST_FIELDS = frozenset({"context"})

# OFREP's reasons are OpenFeature's minus DEFAULT; the native reason stays in the metadata.
OFREP_REASONS = {Reason.DEFAULT: "STATIC", Reason.PREREQUISITE_FAILED: Reason.DISABLED}
# Engine errors a single OFREP evaluation answers with 400 (FLAG_NOT_FOUND is a 404).
OFREP_ERROR_STATUS = 400

_encode = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
# For a body holding a string with no UTF-8 form: escapes (`\ud800`) are still valid JSON.
_encode_ascii = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True).encode
# A lone surrogate can only come from a `\uD800`-`\uDFFF` escape: a body without one needs
# no look at its strings (the check costs a byte search on the hot path).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


class BadRequest(Exception):
    """The request body cannot be evaluated; `error_code` is the OFREP name for it."""

    def __init__(self, status: int, error_code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error_code = error_code
        self.message = message


# --- shared steps ---------------------------------------------------------------------------


def _encoded(body: Any) -> bytes:
    """UTF-8 JSON; with JSON escapes where a string has no UTF-8 form (a lone surrogate)."""
    try:
        return _encode(body).encode()
    except UnicodeEncodeError:
        return _encode_ascii(body).encode()


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    number = float(text)
    if math.isinf(number):  # 1e400: JSON allows it, no double holds it
        raise ValueError(f"the number {text[:40]} is out of range")
    return number


_decoder = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite_float)


def _invalid_text_at(value: Any, path: str = "context") -> str | None:
    """The path of the first string (a key or a value) with no UTF-8 form, or None.

    Only called for a body with a surrogate escape; iterative, as the value may be deep.
    """
    pending = [(value, path)]
    while pending:
        node, where = pending.pop()
        if node.__class__ is str:
            if not node.isascii() and not _is_utf8(node):
                return where
        elif node.__class__ is dict:
            for key, item in node.items():
                if not key.isascii() and not _is_utf8(key):
                    return f"{where} (a key)"
                pending.append((item, f"{where}.{key}"))
        elif node.__class__ is list:
            pending.extend((item, f"{where}[{index}]") for index, item in enumerate(node))
    return None


def _is_utf8(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:
        return False
    return True


def _read_context(body: bytes, *, whole_request: bool = False) -> dict:
    """The raw body and the context in it: `{"context": {...}}`; an empty body is no context.

    A targetingKey that is not a string is left to the engine (each flag answers
    INVALID_CONTEXT), except for `whole_request` evaluations (OFREP bulk), which refuse it
    once, as the OFREP specification's bulk 400 shows. A string anywhere in the context that
    is not valid Unicode (a lone surrogate) is refused once by every endpoint: nothing of
    such a context reaches the engine, whose C code must only ever see UTF-8.
    """
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(413, ErrorCode.GENERAL, f"the body is over {MAX_BODY_BYTES} bytes")
    if not body.strip():
        return {}
    try:
        # json.loads(body, ...) without building a decoder per request.
        data = _decoder.decode(body.decode(json.detect_encoding(body), "surrogatepass"))
    except (ValueError, RecursionError) as error:
        raise BadRequest(
            400, ErrorCode.PARSE_ERROR, f"the body is not valid JSON: {error}"
        ) from None
    if data.__class__ is not dict:
        raise BadRequest(400, ErrorCode.PARSE_ERROR, 'the body must be an object: {"context": {}}')
    if len(data) > 1 or (data and "context" not in data):
        unknown = sorted(set(data) - REQUEST_FIELDS)[0]
        raise BadRequest(400, ErrorCode.PARSE_ERROR, f"unknown field {unknown!r}: send context")
    context = data.get("context", {})
    if context.__class__ is not dict:
        raise BadRequest(400, ErrorCode.INVALID_CONTEXT, "context must be a JSON object")
    if b"\\u" in body and _SURROGATE_ESCAPE.search(body):
        where = _invalid_text_at(context)
        if where is not None:
            raise BadRequest(
                400,
                ErrorCode.INVALID_CONTEXT,
                f"{where} is not valid Unicode (a lone surrogate escape such as \\ud800)",
            )
    targeting_key = context.get("targetingKey")
    if whole_request and targeting_key is not None and targeting_key.__class__ is not str:
        raise BadRequest(400, ErrorCode.INVALID_CONTEXT, "context.targetingKey must be a string")
    return context


def _snapshot(credential: Credential) -> Snapshot:
    snapshot = snapshots.snapshot(credential.environment_id)
    if snapshot is None:
        raise CredentialError(401, "the key's environment no longer exists")
    return snapshot


def _vouched(credential: Credential, snapshot: Snapshot, context: dict) -> dict:
    """The context to evaluate: for a client key in secure mode, only with a valid hash.

    The hash attribute is a credential, not something to target on: no key's rules see it.
    """
    if not credential.is_server:
        mode = secure_mode.setting(credential.environment_id, snapshot.version)
        if mode.enabled:
            try:
                secure_mode.verify(context, mode)
            except secure_mode.Refusal as refusal:
                raise BadRequest(
                    refusal.status, ErrorCode.INVALID_CONTEXT, refusal.message
                ) from None
    return secure_mode.without_hash(context)


# --- what each audience sees ----------------------------------------------------------------
#
# Server keys see every flag. Client keys (browsers, mobile apps) see only the flags made
# available to client-side keys, and of those only what evaluation needs: a flag they may
# not see is answered exactly as a flag that does not exist (docs/security.md).

# Evaluating here answers every key as the engine answers a flag that does not exist.
_NO_FLAGS = compile_document({"flags": {}})


@dataclass(frozen=True, slots=True)
class _ClientView:
    snapshot: Snapshot
    keys: tuple[str, ...]  # live flags available to client-side keys, in document order
    visible: frozenset[str]
    metadata: dict[str, dict[str, Any]]


_client_views: dict[int, _ClientView] = {}


def _client_view(environment_id: int, snapshot: Snapshot) -> _ClientView:
    """What client keys may see of a snapshot, worked out once per snapshot."""
    view = _client_views.get(environment_id)
    if view is not None and view.snapshot is snapshot:
        return view
    flags = snapshot.document.get("flags", {})
    keys = tuple(
        key
        for key in snapshot.flag_keys
        if isinstance(flags[key], dict) and flags[key].get("clientSide") is True
    )
    metadata = {
        key: {"flagType": flags[key].get("type", ""), "version": snapshot.version} for key in keys
    }
    view = _ClientView(snapshot, keys, frozenset(keys), metadata)
    _client_views[environment_id] = view
    return view


def _evaluate_one(
    credential: Credential, snapshot: Snapshot, key: str, context: dict
) -> EvaluationResult:
    if credential.is_server or key in _client_view(credential.environment_id, snapshot).visible:
        return snapshot.evaluate(key, context)
    return _NO_FLAGS.evaluate(key, context)


def _evaluate_all(
    credential: Credential, snapshot: Snapshot, context: dict
) -> dict[str, EvaluationResult]:
    if credential.is_server:
        return snapshot.evaluate_all(context)
    keys = _client_view(credential.environment_id, snapshot).keys
    return {key: snapshot.evaluate(key, context) for key in keys}


def _metadata(credential: Credential, snapshot: Snapshot) -> dict[str, dict[str, Any]]:
    if credential.is_server:
        return _metadata_of(credential.environment_id, snapshot)
    return _client_view(credential.environment_id, snapshot).metadata


def _etag(credential: Credential, snapshot: Snapshot, scope: str, body: bytes) -> str:
    """Changes with the environment's version and with the request (context, flag, key kind)."""
    scope_bytes = scope.encode("utf-8", "surrogatepass")  # never raises, whatever the path
    request_hash = hashlib.blake2b(scope_bytes + b"\0" + body, digest_size=8).hexdigest()
    kind = "s" if credential.is_server else "c"
    return f'"{credential.environment_id}-{snapshot.version}-{kind}{request_hash}"'


def _no_fields(error: BadRequest) -> dict[str, Any]:
    return {}


def _error_code(error: BadRequest) -> dict[str, Any]:
    return {"errorCode": error.error_code}


def _native_error(status: int, message: str, **extra: Any) -> Answer:
    return _error_answer(status, error_body(status, message, **extra))


def _native_result(result: EvaluationResult, server: bool) -> dict[str, Any]:
    answer = {"value": result.value, "variant": result.variant, "reason": result.reason}
    if server and result.rule_id is not None:
        answer["ruleId"] = result.rule_id  # rules stay private to server keys
    if result.error_code is not None:
        answer["errorCode"] = result.error_code
        answer["errorDetails"] = result.error_details
    return answer


def _error_answer(status: int, body: Any, extra: tuple[tuple[str, str], ...] = ()) -> Answer:
    if status == 401:
        extra = (*extra, ("WWW-Authenticate", 'Bearer realm="flags"'))
    return Answer(status, _encoded(body), extra)


def _json(body: Any, status: int = 200, etag: str | None = None) -> Answer:
    return _raw(_encoded(body), status, etag)


def _raw(encoded: bytes, status: int = 200, etag: str | None = None) -> Answer:
    if etag is None:
        return Answer(status, encoded)
    # Clients may keep the answer but must revalidate it (cheaply, with If-None-Match).
    return Answer(status, encoded, (("ETag", etag), ("Cache-Control", "private, no-cache")))


def _not_modified(etag: str) -> Answer:
    return Answer(304, b"", (("ETag", etag), ("Cache-Control", "private, no-cache")), None)


def _matches(request: Request, etag: str) -> bool:
    header = request.headers.get("if-none-match")
    if not header:
        return False
    if header.strip() == "*":
        return True
    return any(tag.strip().removeprefix("W/") == etag for tag in header.split(","))


def _with_allow(answer: Answer, allowed: str) -> Answer:
    return Answer(answer.status, answer.body, (*answer.headers, ("Allow", allowed)))


def _prepare(
    request: Request,
    scope: str,
    render: Callable[..., Answer],
    *,
    whole_request: bool = False,
    describe: Callable[[BadRequest], dict[str, Any]] = _no_fields,
) -> tuple[Credential, Snapshot, dict, str] | Answer:
    """Check the method, authenticate, parse: a tuple to evaluate with, or the answer to
    send (405, 401/403 or 400/413 drawn by `render`, with `describe`'s fields; or 304)."""
    if request.method != "POST":
        return _with_allow(render(405, "use POST"), "POST")
    try:
        credential = authenticate(request.headers)
        snapshot = _snapshot(credential)
        context = _read_context(request.body, whole_request=whole_request)
        context = _vouched(credential, snapshot, context)
    except CredentialError as error:
        return render(error.status, error.message)
    except BadRequest as error:
        return render(error.status, error.message, **describe(error))
    etag = _etag(credential, snapshot, scope, request.body)
    if _matches(request, etag):
        return _not_modified(etag)
    return credential, snapshot, context, etag


def _record(
    credential: Credential,
    context: dict,
    results: Iterable[EvaluationResult],
    fixed: _BulkPlan | None = None,
) -> None:
    """Count the evaluations; with a targetingKey, record its first exposures to splits;
    note the attribute names asked with (the admin's condition builder suggests them).
    `fixed`: a bulk answer's fixed flags, counted together besides `results`."""
    exposures.record(credential.environment_id, results)
    if fixed is not None:
        exposures.record_together(fixed.exposed)
    attributes.note(credential.environment_id, context)
    unit = context.get("targetingKey")
    if unit is not None:
        splits = results if fixed is None else (*fixed.splits, *results)
        events.expose(credential.environment_id, unit, splits)


# --- native ---------------------------------------------------------------------------------


def evaluate_flags(request: Request) -> Answer:
    """POST /api/v1/evaluate: every flag of the key's environment for one context."""
    prepared = _prepare(request, "", _native_error, describe=_error_code)
    if isinstance(prepared, Answer):
        return prepared
    credential, snapshot, context, etag = prepared
    results = _evaluate_all(credential, snapshot, context)
    record_evaluations(results.values())
    _record(credential, context, results.values())
    server = credential.is_server
    flags = {key: _native_result(result, server) for key, result in results.items()}
    return _json({"version": snapshot.version, "flags": flags}, etag=etag)


def evaluate_flag(request: Request, flag_key: str) -> Answer:
    """POST /api/v1/evaluate/<flag_key>: one flag for one context."""
    prepared = _prepare(request, flag_key, _native_error, describe=_error_code)
    if isinstance(prepared, Answer):
        return prepared
    credential, snapshot, context, etag = prepared
    result = _evaluate_one(credential, snapshot, flag_key, context)
    if result.error_code == ErrorCode.FLAG_NOT_FOUND:
        # Neither counted nor recorded: the key is whatever a client put in the path, and
        # each new one would be a new metric series and exposure counter.
        return _native_error(
            404, result.error_details or "no such flag", errorCode=result.error_code
        )
    record_evaluations((result,))
    _record(credential, context, (result,))
    answer = {"key": flag_key, **_native_result(result, credential.is_server)}
    answer["version"] = snapshot.version
    return _json(answer, etag=etag)


# --- OFREP ----------------------------------------------------------------------------------


def _ofrep_error(status: int, message: str, **fields: Any) -> Answer:
    return _error_answer(status, {**fields, "errorDetails": message})


_flag_metadata: dict[int, tuple[Snapshot, dict[str, dict[str, Any]]]] = {}


def _metadata_of(environment_id: int, snapshot: Snapshot) -> dict[str, dict[str, Any]]:
    """OFREP flag metadata (scalars only, per the spec), built once per snapshot."""
    entry = _flag_metadata.get(environment_id)
    if entry is not None and entry[0] is snapshot:
        return entry[1]
    metadata = {}
    for key, flag in snapshot.document.get("flags", {}).items():
        about = flag.get("metadata") or {}
        scalars: dict[str, Any] = {"flagType": flag.get("type", "")}
        for name in ("name", "description"):
            if isinstance(about.get(name), str) and about[name]:
                scalars[name] = about[name]
        if about.get("tags"):
            scalars["tags"] = ",".join(str(tag) for tag in about["tags"])
        scalars["version"] = snapshot.version
        metadata[key] = scalars
    _flag_metadata[environment_id] = (snapshot, metadata)
    return metadata


def _ofrep_result(
    result: EvaluationResult, metadata: dict[str, dict[str, Any]], server: bool
) -> dict[str, Any]:
    """One evaluationSuccess or evaluationFailure item."""
    base = metadata.get(result.flag_key, {})
    if result.error_code is not None:
        return {
            "key": result.flag_key,
            "errorCode": result.error_code,
            "errorDetails": result.error_details or result.error_code,
            "metadata": base,
        }
    reason = OFREP_REASONS.get(result.reason, result.reason)
    extra = {}
    if reason != result.reason:
        extra["evaluationReason"] = result.reason
    if server and result.rule_id is not None:
        extra["ruleId"] = result.rule_id
    return {
        "key": result.flag_key,
        "value": result.value,
        "reason": reason,
        "variant": result.variant,
        "metadata": {**base, **extra} if extra else base,
    }


# --- answers encoded once per snapshot --------------------------------------------------------
#
# The engine answers with results it made when it compiled the snapshot (one per variant
# and reason), except for errors about a context. So each such result's OFREP item is
# encoded once per snapshot and audience, and a bulk answer joins the bytes: the same
# bytes as encoding the whole answer at once (compact separators, keys in the same order).


@dataclass(slots=True)
class _Items:
    snapshot: Snapshot
    # id(result) -> (the result, kept so that its id stays its own; its item, encoded)
    encoded: dict[int, tuple[EvaluationResult, bytes]]
    limit: int


_items: dict[tuple[int, bool], _Items] = {}


def _encoded_items(
    credential: Credential, snapshot: Snapshot, results: Iterable[EvaluationResult]
) -> list[bytes] | None:
    """Each result's OFREP item as JSON; None if one has no UTF-8 form (see `_encoded`)."""
    server = credential.is_server
    table = _items.get((credential.environment_id, server))
    if table is None or table.snapshot is not snapshot:
        # Bounded: a result the engine made for one context is encoded, never kept.
        table = _Items(snapshot, {}, 4 * len(snapshot.flag_keys) + 64)
        _items[(credential.environment_id, server)] = table
    encoded = table.encoded
    metadata = None
    items = []
    for result in results:
        entry = encoded.get(id(result))
        if entry is not None and entry[0] is result:
            items.append(entry[1])
            continue
        if metadata is None:
            metadata = _metadata(credential, snapshot)
        try:
            item = _encode(_ofrep_result(result, metadata, server)).encode()
        except UnicodeEncodeError:
            return None
        if result.error_code is None and len(encoded) < table.limit:
            encoded[id(result)] = (result, item)
        items.append(item)
    return items


def ofrep_flag(request: Request, key: str) -> Answer:
    """POST /ofrep/v1/evaluate/flags/{key}: OFREP single-flag evaluation."""
    prepared = _prepare(
        request,
        key,
        _ofrep_error,
        describe=lambda error: {"key": key, "errorCode": error.error_code},
    )
    if isinstance(prepared, Answer):
        return prepared
    credential, snapshot, context, etag = prepared
    result = _evaluate_one(credential, snapshot, key, context)
    if result.error_code == ErrorCode.FLAG_NOT_FOUND:  # not counted: see evaluate_flag
        details = result.error_details or f"flag {key!r} was not found"
        return _ofrep_error(404, details, key=key, errorCode=result.error_code)
    record_evaluations((result,))
    _record(credential, context, (result,))
    status = OFREP_ERROR_STATUS if result.error_code is not None else 200
    items = _encoded_items(credential, snapshot, (result,))
    if items is not None:
        return _raw(items[0], status=status, etag=etag)
    answer = _ofrep_result(result, _metadata(credential, snapshot), credential.is_server)
    return _json(answer, status=status, etag=etag)


def ofrep_flags(request: Request) -> Answer:
    """POST /ofrep/v1/evaluate/flags: OFREP bulk evaluation, with ETag / If-None-Match."""
    prepared = _prepare(
        request,
        "",
        _ofrep_error,
        whole_request=True,
        describe=lambda error: {"errorCode": error.error_code},
    )
    if isinstance(prepared, Answer):
        return prepared
    credential, snapshot, context, etag = prepared
    plan = _bulk_plan(credential, snapshot)
    dependent = None if plan is None else _dependent(credential, snapshot, plan, context)
    if plan is None or dependent is None or len(dependent) != len(plan.slots):
        return _ofrep_bulk(credential, snapshot, context, etag)
    record_evaluations(dependent.values())
    metrics.record_evaluations_together(plan.counted)
    _record(credential, context, dependent.values(), fixed=plan)
    items = _encoded_items(credential, snapshot, dependent.values())
    if items is None:  # an answer with no UTF-8 form: encoded whole, with escapes
        fixed = snapshot.fixed_answers
        ordered = [dependent[key] if key in dependent else fixed[key] for key in plan.keys]
        return _ofrep_bulk_body(credential, snapshot, ordered, etag)
    body = list(plan.body)
    for slot, item in zip(plan.slots, items, strict=True):
        body[slot] = item
    tail = _bulk_tail(credential.environment_id, snapshot)
    return _raw(b'{"flags":[' + b",".join(body) + tail, etag=etag)


def _dependent(
    credential: Credential, snapshot: Snapshot, plan: _BulkPlan, context: dict
) -> dict[str, EvaluationResult] | None:
    """The answers of the flags the plan leaves to each request, in document order."""
    if credential.is_server:
        return snapshot.evaluate_dependent(context)
    # A client key's visible flags. The context was read by `_read_context`, so the engine
    # refuses none of it (an object, its targetingKey a string if any, valid Unicode
    # throughout): the fixed answers hold. Where they are at least half of the flags that
    # depend on the context, all of those are evaluated together (each segment matched
    # once, flags of one shape in one call) and the hidden ones left out; else one by one.
    every = len(snapshot.flag_keys) - len(snapshot.fixed_answers)
    if 2 * len(plan.dependent) >= every:
        answers = snapshot.evaluate_dependent(context)
        return None if answers is None else {key: answers[key] for key in plan.dependent}
    return {key: snapshot.evaluate(key, context) for key in plan.dependent}


def _ofrep_bulk(credential: Credential, snapshot: Snapshot, context: dict, etag: str) -> Answer:
    """The bulk answer with every flag's item looked up (or encoded) for this request."""
    results = _evaluate_all(credential, snapshot, context)
    record_evaluations(results.values())
    _record(credential, context, results.values())
    items = _encoded_items(credential, snapshot, results.values())
    if items is not None:
        tail = _bulk_tail(credential.environment_id, snapshot)
        return _raw(b'{"flags":[' + b",".join(items) + tail, etag=etag)
    return _ofrep_bulk_body(credential, snapshot, results.values(), etag)


def _ofrep_bulk_body(
    credential: Credential, snapshot: Snapshot, results: Iterable[EvaluationResult], etag: str
) -> Answer:
    metadata = _metadata(credential, snapshot)
    server = credential.is_server
    body = {
        "flags": [_ofrep_result(result, metadata, server) for result in results],
        "metadata": {"version": snapshot.version},
        "eventStreams": OFREP_EVENT_STREAMS,
    }
    return _json(body, etag=etag)


@dataclass(frozen=True, slots=True)
class _BulkPlan:
    """An OFREP bulk answer for one audience (server or client keys), as far as it is the
    same for every context: the items of the flags it shows whose answer is fixed
    (`Snapshot.fixed_answers`), encoded and joined once per snapshot, each run of them
    between two flags that depend on the context one element of `body`; `slots` are the
    elements that those flags' items fill, and `dependent` their keys, in document order;
    `keys` every flag the answer shows."""

    snapshot: Snapshot
    keys: tuple[str, ...]
    body: tuple[bytes, ...]
    slots: tuple[int, ...]
    dependent: tuple[str, ...]
    # The fixed flags' evaluations and exposure counts, each counted once a request, and
    # those of them that are splits (first exposures are recorded per unit).
    counted: metrics.CountedTogether
    exposed: exposures.Together
    splits: tuple[EvaluationResult, ...]


# (environment id, server keys?) -> (its snapshot, its plan, or None when a fixed item has
# no UTF-8 form)
_bulk_plans: dict[tuple[int, bool], tuple[Snapshot, _BulkPlan | None]] = {}


def _bulk_plan(credential: Credential, snapshot: Snapshot) -> _BulkPlan | None:
    audience = (credential.environment_id, credential.is_server)
    entry = _bulk_plans.get(audience)
    if entry is not None and entry[0] is snapshot:
        return entry[1]
    if credential.is_server:
        keys = tuple(snapshot.flag_keys)
        fixed = dict(snapshot.fixed_answers)
    else:
        keys = _client_view(credential.environment_id, snapshot).keys
        every = snapshot.fixed_answers
        fixed = {key: every[key] for key in keys if key in every}
    items = _encoded_items(credential, snapshot, fixed.values())
    plan = None
    if items is not None:
        encoded = dict(zip(fixed, items, strict=True))
        plan = _planned(credential.environment_id, snapshot, keys, fixed, encoded)
    _bulk_plans[audience] = (snapshot, plan)
    return plan


def _planned(
    environment_id: int,
    snapshot: Snapshot,
    keys: tuple[str, ...],
    fixed: dict[str, EvaluationResult],
    encoded: dict[str, bytes],
) -> _BulkPlan:
    body: list[bytes] = []
    slots: list[int] = []
    dependent: list[str] = []
    run: list[bytes] = []
    for key in keys:
        item = encoded.get(key)
        if item is not None:
            run.append(item)
            continue
        if run:
            body.append(b",".join(run))
            run = []
        slots.append(len(body))
        dependent.append(key)
        body.append(b"")  # this flag's item, encoded per request
    if run:
        body.append(b",".join(run))
    results = tuple(fixed.values())
    return _BulkPlan(
        snapshot,
        keys,
        tuple(body),
        tuple(slots),
        tuple(dependent),
        counted=metrics.CountedTogether(results),
        exposed=exposures.Together(environment_id, results),
        splits=tuple(result for result in results if result.reason == Reason.SPLIT),
    )


_bulk_tails: dict[int, tuple[Snapshot, bytes]] = {}


def _bulk_tail(environment_id: int, snapshot: Snapshot) -> bytes:
    """What follows the items of an OFREP bulk answer, encoded once per snapshot."""
    entry = _bulk_tails.get(environment_id)
    if entry is not None and entry[0] is snapshot:
        return entry[1]
    metadata = _encode({"version": snapshot.version}).encode()
    streams = _encode(OFREP_EVENT_STREAMS).encode()
    tail = b'],"metadata":' + metadata + b',"eventStreams":' + streams + b"}"
    _bulk_tails[environment_id] = (snapshot, tail)
    return tail


def ofrep_not_found(path: str) -> Answer:
    """A path under /ofrep/ that names no endpoint: OFREP's error shape, 404."""
    return _ofrep_error(404, f"no OFREP endpoint at {path!r}", errorCode="GENERAL")


def native_not_found(path: str) -> Answer:
    """A path under /api/v1/evaluate/ that names no flag (empty, or with a slash): 404."""
    return _native_error(404, f"no evaluation endpoint at {path!r}")


# --- the SDK document -----------------------------------------------------------------------

_encoded_documents: dict[int, tuple[Snapshot, bytes]] = {}


def _encoded_document(environment_id: int, snapshot: Snapshot) -> bytes:
    """The document as JSON bytes, encoded once per snapshot."""
    entry = _encoded_documents.get(environment_id)
    if entry is not None and entry[0] is snapshot:
        return entry[1]
    encoded = _encoded(snapshot.document)
    _encoded_documents[environment_id] = (snapshot, encoded)
    return encoded


def sdk_flags(request: Request) -> Answer:
    """GET /api/v1/sdk/flags: the environment's flag document, for server keys only."""
    if request.method not in ("GET", "HEAD"):
        return _with_allow(_native_error(405, "use GET, HEAD"), "GET, HEAD")
    try:
        credential = authenticate(request.headers, server_only=True)
        snapshot = _snapshot(credential)
    except CredentialError as error:
        return _native_error(error.status, error.message)
    etag = f'"{credential.environment_id}-{snapshot.version}"'
    if _matches(request, etag):
        return _not_modified(etag)
    return _raw(_encoded_document(credential.environment_id, snapshot), etag=etag)
