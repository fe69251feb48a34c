"""An OpenFeature provider (PyPI's `openfeature-sdk`) evaluating in process with a FlagClient.

Install with the extra: `pip install "flagclient[openfeature]"`. Each state is reported to
OpenFeature once when it changes: PROVIDER_READY when a document is served (and again after
a recovery), PROVIDER_STALE when the server cannot be reached, PROVIDER_ERROR with
PROVIDER_FATAL when it refused the key; PROVIDER_CONFIGURATION_CHANGED with the changed
flag keys on every new version. `client.track(name, context, details)` queues an event
(docs/experiments.md).
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderFatalError, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata
from openfeature.track import TrackingEventDetails

from flagclient.client import FlagClient

# OpenFeature has no PREREQUISITE_FAILED; like the server's OFREP endpoints, answer DISABLED
# (the off variant is what is served) and keep the engine's reason in the metadata.
_REASONS = {"PREREQUISITE_FAILED": Reason.DISABLED}
# The client's events and the provider states they report.
_STATES = {"ready": "ready", "stale": "stale", "error": "fatal"}


class FlagProvider(AbstractProvider):
    """`FlagProvider(client)` or `FlagProvider(url=..., server_key=..., **client_options)`.

    `initialize` waits up to `ready_timeout` seconds for the server's document. It returns
    (OpenFeature marks the provider READY) once a document is served, from the server or
    from the client's bootstrap file (PROVIDER_STALE follows when the server still cannot
    be reached). With nothing to serve it raises PROVIDER_NOT_READY: the SDK reports
    PROVIDER_ERROR, serves defaults, and PROVIDER_READY follows once, when the document
    arrives. A refused key raises PROVIDER_FATAL at once.
    """

    def __init__(
        self,
        client: FlagClient | None = None,
        *,
        url: str = "",
        server_key: str = "",
        ready_timeout: float = 5.0,
        **client_options: Any,
    ) -> None:
        super().__init__()
        self._owns_client = client is None
        self.client = client or FlagClient(url, server_key, start=False, **client_options)
        self.ready_timeout = ready_timeout
        self._initializing = False
        self._reported: str | None = None  # what OpenFeature was told: ready | stale | fatal
        self._lock = threading.Lock()

    def get_metadata(self) -> Metadata:
        return Metadata(name="flagclient")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        with self._lock:
            self._initializing, self._reported = True, None
        self.client.add_listener(self._on_client_event)
        self.client.start()
        self.client._wait_until_confirmed(self.ready_timeout)
        client = self.client
        with self._lock:
            self._initializing = False
            if client.error is not None:
                self._reported = "fatal"
                raise ProviderFatalError(client.error)
            if client.ready:  # the SDK reports PROVIDER_READY when we return
                self._reported = "ready"
                if client.stale:  # from the bootstrap file: report the next failure
                    client._announce_next_attempt()
                return
            self._reported = "error"
        raise ProviderNotReadyError(f"no flag document from {client.url} yet")

    def shutdown(self) -> None:
        self.client.remove_listener(self._on_client_event)
        if self._owns_client:
            self.client.close()

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: EvaluationContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        """OpenFeature's tracking API: the event of the context's targetingKey, with the
        details' numeric `value` (their other attributes are not kept), queued by
        `FlagClient.track`; never blocks."""
        value = None if tracking_event_details is None else tracking_event_details.value
        self.client.track(tracking_event_name, _context(evaluation_context), value)

    def _on_client_event(self, event: str, flag_keys: list[str]) -> None:
        with self._lock:  # one report at a time, in the order the client saw them
            if self._initializing:
                return  # initialize reports the outcome itself
            if event == "changed":
                self.emit_provider_configuration_changed(
                    ProviderEventDetails(flags_changed=flag_keys)
                )
                return
            state = _STATES.get(event)
            if state is None or state == self._reported:
                return
            self._reported = state
            if state == "ready":
                self.emit_provider_ready(ProviderEventDetails(flags_changed=flag_keys or None))
            elif state == "stale":
                self.emit_provider_stale(ProviderEventDetails(message="flag server unreachable"))
            else:
                self.emit_provider_error(
                    ProviderEventDetails(
                        message=self.client.error, error_code=ErrorCode.PROVIDER_FATAL
                    )
                )

    # --- resolution -----------------------------------------------------------------------

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._resolve(flag_key, default_value, evaluation_context, "boolean")

    def resolve_string_details(
        self, flag_key: str, default_value: str, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[str]:
        return self._resolve(flag_key, default_value, evaluation_context, "string")

    def resolve_integer_details(
        self, flag_key: str, default_value: int, evaluation_context: EvaluationContext | None = None
    ) -> FlagResolutionDetails[int]:
        details = self._resolve(flag_key, default_value, evaluation_context, "number")
        if details.error_code is None and details.value.__class__ is not int:
            return _mismatch(default_value, f"flag {flag_key!r} is not an integer")
        return details

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        details = self._resolve(flag_key, default_value, evaluation_context, "number")
        if details.error_code is None:
            details.value = float(details.value)  # 3 is a fine answer to "which float?"
        return details

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[Any] | Mapping[str, Any],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[Any] | Mapping[str, Any]]:
        details = self._resolve(flag_key, default_value, evaluation_context, "json")
        if details.error_code is None:
            details.value = copy.deepcopy(details.value)  # the snapshot's copy is shared
        return details

    def _resolve(
        self,
        flag_key: str,
        default: Any,
        evaluation_context: EvaluationContext | None,
        expected_type: str,
    ) -> FlagResolutionDetails[Any]:
        result = self.client.details(flag_key, _context(evaluation_context), default, expected_type)
        metadata: dict[str, Any] = {}
        version = self.client.version
        if version is not None:
            metadata["version"] = version
        if result.rule_id is not None:
            metadata["ruleId"] = result.rule_id
        reason = _REASONS.get(result.reason)
        if reason is not None:
            metadata["evaluationReason"] = result.reason
        return FlagResolutionDetails(
            value=result.value,
            error_code=_error_code(result.error_code),
            error_message=result.error_details,
            reason=reason or result.reason,
            variant=result.variant,
            flag_metadata=metadata,
        )


def _context(evaluation_context: EvaluationContext | None) -> dict[str, Any]:
    if evaluation_context is None:
        return {}
    context = dict(evaluation_context.attributes)
    if evaluation_context.targeting_key is not None:
        context["targetingKey"] = evaluation_context.targeting_key
    return context


def _error_code(code: str | None) -> ErrorCode | None:
    if code is None:
        return None
    try:
        return ErrorCode(code)
    except ValueError:
        return ErrorCode.GENERAL


def _mismatch(default: Any, message: str) -> FlagResolutionDetails[Any]:
    return FlagResolutionDetails(
        value=default,
        error_code=ErrorCode.TYPE_MISMATCH,
        error_message=message,
        reason=Reason.ERROR,
    )
