"""Pages of the management API's lists: `?limit=&offset=`, checked strictly.

DRF's LimitOffsetPagination falls back to its default on a `limit` it cannot read and
passes any size on to the database, where `limit=10^30` overflows. Here both parameters
are whole numbers in a stated range, or the request is a 400 naming the parameter.
"""

from __future__ import annotations

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

MAX_LIMIT = 1000
MAX_OFFSET = 1_000_000_000


def _whole_number(request: Request, name: str, low: int, high: int, default: int) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    # isdigit() alone lets "²" through, and int() of thousands of digits is refused late.
    if raw.isascii() and raw.isdigit() and len(raw) <= len(str(high)) and low <= int(raw) <= high:
        return int(raw)
    raise ValidationError({name: [f"expected a whole number from {low} to {high}"]})


class Pagination(LimitOffsetPagination):
    max_limit = MAX_LIMIT

    def get_limit(self, request: Request) -> int:
        return _whole_number(
            request, self.limit_query_param, 1, MAX_LIMIT, self.default_limit or MAX_LIMIT
        )

    def get_offset(self, request: Request) -> int:
        return _whole_number(request, self.offset_query_param, 0, MAX_OFFSET, 0)
