"""OpenAPI generation: every operation documents the error responses it can really give."""

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from rest_framework import serializers


class ErrorSerializer(serializers.Serializer):
    """The one error shape of the API (flags.api.errors)."""

    error = serializers.CharField(help_text="A stable code, e.g. invalid_request, conflict.")
    detail = serializers.CharField(help_text="What went wrong, for a person.")
    fields = serializers.DictField(
        required=False, help_text="Messages by the name of the offending field."
    )
    current_version = serializers.IntegerField(
        required=False, help_text="On 409: the configuration's current version."
    )


WRITES = ("POST", "PUT", "PATCH", "DELETE")


class AutoSchema(SpectacularAutoSchema):
    def _is_list_view(self, serializer=None) -> bool:
        # A page object (views.paginated) is the whole response, not an item of an array.
        if type(serializer).__name__.startswith("Paginated"):
            return False
        return super()._is_list_view(serializer)

    def _error_codes(self) -> list[int]:
        codes = [400, 401, 403, 404]
        if self.method in WRITES:
            codes.append(413)
        if self.method in ("PATCH", "POST") and "environment_key" in self.path:
            codes.append(409)
        return codes

    def _get_response_bodies(self, direction: str = "response") -> dict:
        responses = super()._get_response_bodies(direction)
        if direction != "response":
            return responses
        for code in self._error_codes():
            responses.setdefault(str(code), self._get_response_for_code(ErrorSerializer, str(code)))
        return responses
