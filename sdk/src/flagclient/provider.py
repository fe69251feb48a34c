"""An OpenFeature provider (PyPI's `openfeature-sdk`) evaluating in process with a FlagClient.

Install with the extra: `pip install "flagclient[openfeature]"`. Events: PROVIDER_READY when
the first document arrives (and again after a recovery), PROVIDER_CONFIGURATION_CHANGED with
the changed flag keys on every new version, PROVIDER_STALE when the server cannot be reached.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEventDetails
from openfeature.exception import ErrorCode, ProviderNotReadyError
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata

from flagclient.client import FlagClient

# OpenFeature has no PREREQUISITE_FAILED; like the server's OFREP endpoints, answer DISABLED
# (the off variant is what is served) and keep the engine's reason in the metadata.
_REASONS = {"PREREQUISITE_FAILED": Reason.DISABLED}


class FlagProvider(AbstractProvider):
    """`FlagProvider(client)` or `FlagProvider(url=..., server_key=..., **client_options)`.

    `initialize` waits up to `ready_timeout` seconds for the first document; if none comes
    it raises PROVIDER_NOT_READY (the SDK reports PROVIDER_ERROR and serves defaults) and
    emits PROVIDER_READY once the document arrives.
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
        self._phase = "new"  # new -> initializing -> running | failed -> running
        self._phase_lock = threading.Lock()

    def get_metadata(self) -> Metadata:
        return Metadata(name="flagclient")

    def initialize(self, evaluation_context: EvaluationContext) -> None:
        with self._phase_lock:
            self._phase = "initializing"
        self.client.add_listener(self._on_client_event)
        self.client.start()
        ready = self.client.wait_until_ready(self.ready_timeout)
        with self._phase_lock:
            if ready or self.client.ready:
                self._phase = "running"  # the SDK emits PROVIDER_READY when we return
                return
            self._phase = "failed"
        raise ProviderNotReadyError(f"no flag document from {self.client.url} yet")

    def shutdown(self) -> None:
        self.client.remove_listener(self._on_client_event)
        if self._owns_client:
            self.client.close()

    def _on_client_event(self, event: str, flag_keys: list[str]) -> None:
        with self._phase_lock:
            if self._phase == "initializing":
                return
            if self._phase == "failed":
                if event != "ready":
                    return
                self._phase = "running"
        details = ProviderEventDetails(flags_changed=flag_keys or None)
        if event == "ready":
            self.emit_provider_ready(details)
        elif event == "changed":
            self.emit_provider_configuration_changed(details)
        elif event == "stale":
            self.emit_provider_stale(ProviderEventDetails(message="flag server unreachable"))

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
