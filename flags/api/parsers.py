"""Request body parsers of the management API: what DRF's do, plus the store's limits.

A body nested past `MAX_JSON_DEPTH`, or holding a NUL character or a lone surrogate in any
string or key, is refused here, once for every endpoint and field (JSON fields included),
with the offending place named: `{"fields": {"rules[0].conditions[0].values[0]": [...]}}`.
"""

from __future__ import annotations

from typing import Any

from rest_framework import parsers
from rest_framework.exceptions import ParseError

from flags.validation import DEPTH_MESSAGE, check_fields, check_text


class JSONParser(parsers.JSONParser):
    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        try:
            data = super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise ParseError(f"JSON parse error - {DEPTH_MESSAGE}") from None
        check_text(data)
        return data


class FormParser(parsers.FormParser):
    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        data = super().parse(stream, media_type, parser_context)
        check_fields(data)
        return data


class MultiPartParser(parsers.MultiPartParser):
    def parse(self, stream, media_type=None, parser_context=None) -> Any:
        parsed = super().parse(stream, media_type, parser_context)
        check_fields(parsed.data)
        return parsed
