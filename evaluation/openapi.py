"""The evaluation endpoints in the OpenAPI schema (they are plain Django views, not DRF's).

A drf-spectacular post-processing hook adds them to /api/schema/ with the API-key security
scheme, so the published schema covers everything the server accepts and the fuzzer
(`make fuzz`) exercises these endpoints too. The OFREP shapes follow the OFREP 0.3.0
specification.
"""

from __future__ import annotations

from typing import Any

ANY: dict = {}
CONTEXT = {
    "type": "object",
    "description": "The evaluation context: `targetingKey` plus any attributes.",
    "properties": {"targetingKey": {"type": "string"}},
    "additionalProperties": True,
}
REQUEST = {
    "required": False,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "properties": {"context": CONTEXT},
                "additionalProperties": False,
            }
        }
    },
}
NATIVE_RESULT = {
    "type": "object",
    "required": ["value", "variant", "reason"],
    "properties": {
        "value": ANY,
        "variant": {"type": "string", "nullable": True},
        "reason": {"type": "string"},
        "ruleId": {"type": "string", "description": "Server keys only."},
        "errorCode": {"type": "string"},
        "errorDetails": {"type": "string", "nullable": True},
    },
}
ERROR = {"$ref": "#/components/schemas/Error"}
OFREP_ERROR = {
    "type": "object",
    "required": ["errorDetails"],
    "properties": {
        "key": {"type": "string"},
        "errorCode": {"type": "string"},
        "errorDetails": {"type": "string"},
    },
}
METADATA = {
    "type": "object",
    "additionalProperties": {
        "oneOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"}]
    },
}
OFREP_ITEM = {
    "type": "object",
    "required": ["key"],
    "properties": {
        "key": {"type": "string"},
        "value": ANY,
        "reason": {"type": "string"},
        "variant": {"type": "string", "nullable": True},
        "errorCode": {"type": "string"},
        "errorDetails": {"type": "string"},
        "metadata": METADATA,
    },
}
SECURITY: list[dict[str, list[str]]] = [{"ApiKey": []}, {"ApiKeyBearer": []}]
NAME = {"type": "string", "minLength": 1}
TIME = {
    "oneOf": [{"type": "string", "format": "date-time"}, {"type": "number"}],
    "description": "ISO 8601 with a zone, or epoch seconds; within the last 7 days.",
}
EVENTS_REQUEST = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "events": {
                        "type": "array",
                        "maxItems": 1000,
                        "items": {
                            "type": "object",
                            "required": ["event", "targetingKey"],
                            "additionalProperties": False,
                            "properties": {
                                "event": {**NAME, "maxLength": 100},
                                "targetingKey": {**NAME, "maxLength": 256},
                                "value": {"type": "number", "nullable": True},
                                "timestamp": TIME,
                                "targetingKeyHash": {"type": "string"},
                            },
                        },
                    },
                    "firstExposures": {
                        "type": "array",
                        "maxItems": 1000,
                        "description": "Server keys only.",
                        "items": {
                            "type": "object",
                            "required": ["flag", "variant", "targetingKey"],
                            "additionalProperties": False,
                            "properties": {
                                "flag": {**NAME, "maxLength": 100},
                                "variant": {**NAME, "maxLength": 64},
                                "targetingKey": {**NAME, "maxLength": 256},
                                "timestamp": TIME,
                            },
                        },
                    },
                },
            }
        }
    },
}


EXPOSURES_REQUEST = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "object",
                "required": ["exposures"],
                "additionalProperties": False,
                "properties": {
                    "exposures": {
                        "type": "array",
                        "maxItems": 1000,
                        "items": {
                            "type": "object",
                            "required": ["flag", "reason", "count"],
                            "additionalProperties": False,
                            "properties": {
                                "flag": {**NAME, "maxLength": 100},
                                "variant": {"type": "string", "nullable": True},
                                "reason": {"type": "string"},
                                "count": {
                                    "type": "integer",
                                    "minimum": 1,
                                    "maximum": 1_000_000_000,
                                },
                                "hour": TIME,
                            },
                        },
                    }
                },
            }
        }
    },
}


def _json(schema: dict, description: str = "") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


# What the SDK ingestion endpoints answer: how many items were taken, how many dropped, why.
ACCEPTED = _json(
    {
        "type": "object",
        "required": ["accepted", "dropped"],
        "properties": {
            "accepted": {"type": "integer"},
            "dropped": {"type": "integer"},
            "droppedBy": {"type": "object", "additionalProperties": {"type": "integer"}},
        },
    },
    "Accepted",
)


def _errors(codes: tuple[int, ...], schema: dict = ERROR) -> dict[str, Any]:
    names = {
        400: "Malformed body or context",
        401: "No valid API key",
        403: "The key may not do this",
        404: "No such flag",
        405: "Wrong method",
        413: "Body too large",
        429: "The key's evaluation rate is exceeded (see Retry-After)",
        503: "A key never seen before while the store is unavailable (see Retry-After)",
    }
    # Any request may meet the key's rate limit or a store outage.
    return {str(code): _json(schema, names[code]) for code in (*codes, 429, 503)}


def _post(
    operation_id: str, summary: str, ok: dict, errors: dict, parameters: list | None = None
) -> dict:
    operation = {
        "post": {
            "operationId": operation_id,
            "tags": ["evaluation"],
            "summary": summary,
            "security": SECURITY,
            "requestBody": REQUEST,
            "parameters": [
                {
                    "name": "If-None-Match",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string"},
                },
                *(parameters or []),
            ],
            "responses": {
                "200": ok,
                "304": {"description": "Not modified (ETag matches)"},
                **errors,
            },
        }
    }
    return operation


FLAG_KEY = {"name": "flag_key", "in": "path", "required": True, "schema": {"type": "string"}}
OFREP_KEY = {**FLAG_KEY, "name": "key"}


def evaluation_paths() -> dict[str, dict]:
    native_all = _json(
        {
            "type": "object",
            "required": ["version", "flags"],
            "properties": {
                "version": {"type": "integer"},
                "flags": {"type": "object", "additionalProperties": NATIVE_RESULT},
            },
        }
    )
    native_one = _json(
        {
            "allOf": [
                NATIVE_RESULT,
                {
                    "type": "object",
                    "required": ["key", "version"],
                    "properties": {"key": {"type": "string"}, "version": {"type": "integer"}},
                },
            ]
        }
    )
    ofrep_bulk = _json(
        {
            "type": "object",
            "required": ["flags"],
            "properties": {
                "flags": {"type": "array", "items": OFREP_ITEM},
                "metadata": {"type": "object"},
                "eventStreams": {"type": "array", "items": {"type": "object"}},
            },
        }
    )
    return {
        "/api/v1/evaluate": _post(
            "evaluate_all",
            "Evaluate every flag of the key's environment",
            native_all,
            _errors((400, 401, 403, 405, 413)),
        ),
        "/api/v1/evaluate/{flag_key}": _post(
            "evaluate_one",
            "Evaluate one flag",
            native_one,
            _errors((400, 401, 403, 404, 405, 413)),
            [FLAG_KEY],
        ),
        "/ofrep/v1/evaluate/flags": _post(
            "ofrep_evaluate_flags",
            "OFREP bulk evaluation",
            ofrep_bulk,
            _errors((400, 401, 403, 405, 413), OFREP_ERROR),
        ),
        "/ofrep/v1/evaluate/flags/{key}": _post(
            "ofrep_evaluate_flag",
            "OFREP single-flag evaluation",
            _json(OFREP_ITEM),
            _errors((400, 401, 403, 404, 405, 413), OFREP_ERROR),
            [OFREP_KEY],
        ),
        "/api/v1/sdk/flags": {
            "get": {
                "operationId": "sdk_flags",
                "tags": ["evaluation"],
                "summary": "The environment's flag document (server keys only)",
                "security": SECURITY,
                "parameters": [
                    {
                        "name": "If-None-Match",
                        "in": "header",
                        "required": False,
                        "schema": {"type": "string"},
                    },
                ],
                "responses": {
                    "200": _json({"type": "object"}, "The flag document"),
                    "304": {"description": "Not modified (ETag matches)"},
                    **_errors((401, 403)),
                },
            }
        },
        "/api/v1/sdk/exposures": {
            "post": {
                "operationId": "sdk_exposures",
                "tags": ["evaluation"],
                "summary": "Evaluation counts from SDKs that evaluate in process (server keys)",
                "security": SECURITY,
                "requestBody": EXPOSURES_REQUEST,
                "responses": {"202": ACCEPTED, **_errors((400, 401, 403, 405, 413))},
            }
        },
        "/api/v1/sdk/events": {
            "post": {
                "operationId": "sdk_events",
                "tags": ["evaluation"],
                "summary": "Events and first unit exposures, for experiments (docs/experiments.md)",
                "security": SECURITY,
                "requestBody": EVENTS_REQUEST,
                "responses": {
                    "202": ACCEPTED,
                    **_errors((400, 401, 403, 405, 413)),
                    "503": _json(
                        ERROR,
                        "The store is unavailable, or the environment's events wait to be "
                        "stored in such numbers that no more are taken (backlog_full); nothing "
                        "was kept: send it again after Retry-After",
                    ),
                },
            }
        },
        "/api/v1/stream": {
            "get": {
                "operationId": "stream",
                "tags": ["evaluation"],
                "summary": "Server-Sent Events: one event per change of the environment",
                "security": SECURITY,
                "parameters": [
                    {
                        "name": "key",
                        "in": "query",
                        "required": False,
                        "description": "A client key, for EventSource (no headers); a server "
                        "key here is refused with 400: send it in a header",
                        "schema": {"type": "string"},
                    }
                ],
                "responses": {
                    "200": {
                        "description": "An endless text/event-stream (see docs/realtime.md)",
                        "content": {"text/event-stream": {"schema": {"type": "string"}}},
                    },
                    **_errors((400, 401)),
                },
            }
        },
    }


def add_evaluation_paths(result: dict, generator, request, public) -> dict:
    """drf-spectacular post-processing hook."""
    result.setdefault("paths", {}).update(evaluation_paths())
    components = result.setdefault("components", {})
    components.setdefault("securitySchemes", {}).update(
        {
            "ApiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            "ApiKeyBearer": {"type": "http", "scheme": "bearer", "description": "An API key"},
        }
    )
    return result
