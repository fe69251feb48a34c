"""OpenAPI generation: every operation documents the error responses it can really give."""

from typing import Literal

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers

from flags.api.pagination import MAX_LIMIT, MAX_OFFSET


class ErrorSerializer(serializers.Serializer):
    """The one error shape of the API (flags.api.errors)."""

    error = serializers.CharField(help_text="A stable code, e.g. invalid_request, conflict.")
    detail = serializers.CharField(help_text="What went wrong, for a person.")
    fields = serializers.DictField(  # type: ignore[assignment]  # the body's field, not DRF's
        required=False, help_text="Messages by the name of the offending field."
    )
    current_version = serializers.IntegerField(
        required=False, help_text="On 409: the configuration's current version."
    )


WRITES = ("POST", "PUT", "PATCH", "DELETE")

PAGE_PARAMETERS = [
    OpenApiParameter(
        "limit",
        {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT},
        description=f"Items per page, 1 to {MAX_LIMIT} (default 50).",
    ),
    OpenApiParameter(
        "offset",
        {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET},
        description="Items to skip.",
    ),
]


def _is_page(serializer) -> bool:
    return type(serializer).__name__.startswith("Paginated")


class AutoSchema(SpectacularAutoSchema):
    def _is_list_view(self, serializer=None) -> bool:
        # A page object (views.paginated) is the whole response, not an item of an array.
        if _is_page(serializer):
            return False
        return super()._is_list_view(serializer)

    def get_override_parameters(self) -> list:
        """A page's `limit` and `offset`, so clients (and the fuzzer) know their range."""
        parameters = list(super().get_override_parameters())
        responses = self.get_response_serializers()
        pages = responses.values() if isinstance(responses, dict) else [responses]
        if any(_is_page(serializer) for serializer in pages):
            parameters += PAGE_PARAMETERS
        return parameters

    def _error_codes(self) -> list[int]:
        # 429: rate limits and login lockouts; 503: the database or the cache is unavailable.
        codes = [400, 401, 403, 404, 429, 503]
        if self.method in WRITES:
            codes.append(413)
        if self.method in ("PATCH", "POST") and "environment_key" in self.path:
            codes.append(409)
        return codes

    def _get_response_bodies(self, direction: Literal["request", "response"] = "response") -> dict:
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for code in self._error_codes():
            responses.setdefault(str(code), self._get_response_for_code(ErrorSerializer, str(code)))
        return responses
