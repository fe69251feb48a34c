"""A Content-Security-Policy on the admin's pages: scripts, styles and frames from here only.

The admin needs no third-party origin (its scripts and styles are served by this app), so
the policy is one fixed header; the API and evaluation answers are JSON and do not need it.
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase

POLICY = (
    # Style attributes only (the evaluations page draws its bars with them): no script.
    "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
    "img-src 'self' data:; "
    "font-src 'self'; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
    "base-uri 'self'; object-src 'none'"
)
PREFIXES = ("/admin/",)


class AdminContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if request.path.startswith(PREFIXES):
            response.setdefault("Content-Security-Policy", POLICY)
        return response
