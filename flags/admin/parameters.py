"""What the admin's pages take from their URLs: path parts and query strings, checked.

Changelist filters and searches (`?flag_key=`, `?q=`), the custom pages' `?days=` and any
part of a path go to the database as typed. Every admin page here is wrapped so that such
text is checked first (flags.validation): a NUL character, a lone surrogate or a number
out of range is a 400 page naming the parameter, never a database error and a 500.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps

from django.contrib import admin
from django.contrib.admin.options import IncorrectLookupParameters
from django.core.exceptions import ValidationError
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import URLPattern

from flags.validation import check_fields, check_text


class BadParameter(Exception):
    """A URL parameter the page cannot use; shown as a 400 page."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name, self.problem = name, problem


def check_parameters(request: HttpRequest, path_parts: dict) -> None:
    """Raise BadParameter for the first path part or query parameter the store cannot take."""
    try:
        for name, value in path_parts.items():
            check_text(value, name)
        check_fields(request.GET)
    except ValidationError as error:
        name, messages = next(iter(error.message_dict.items()))
        raise BadParameter(name, messages[0]) from None


def whole_number(request: HttpRequest, name: str, default: int, low: int, high: int) -> int:
    """`?name=` as a whole number from `low` to `high`; `default` when absent or empty."""
    raw = request.GET.get(name, "")
    if not raw:
        return default
    if raw.isascii() and raw.isdigit() and len(raw) <= len(str(high)) and low <= int(raw) <= high:
        return int(raw)
    raise BadParameter(name, f"expected a whole number from {low} to {high}, not {raw!r}")


def bad_request_page(site: admin.AdminSite, request: HttpRequest, error: BadParameter):
    context = {
        **site.each_context(request),
        "title": "Bad request",
        "parameter": error.name,
        "problem": error.problem,
    }
    return TemplateResponse(request, "admin/flags/bad_request.html", context, status=400)


def _checked(view: Callable, site: admin.AdminSite) -> Callable:
    @wraps(view)
    def checked_view(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        try:
            check_parameters(request, kwargs)
            return view(request, *args, **kwargs)
        except BadParameter as error:
            return bad_request_page(site, request, error)

    return checked_view


class CheckedParametersAdmin(admin.ModelAdmin):
    """A model admin whose every page (its own extra pages too) checks its URL first."""

    @property
    def urls(self) -> list:
        return [
            URLPattern(
                url.pattern, _checked(url.callback, self.admin_site), url.default_args, url.name
            )
            if isinstance(url, URLPattern)
            else url
            for url in self.get_urls()
        ]

    def get_changelist_instance(self, request: HttpRequest):
        try:
            return super().get_changelist_instance(request)
        except OverflowError as error:  # e.g. a date-hierarchy year of 40 digits
            raise IncorrectLookupParameters(error) from error
