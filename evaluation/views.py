"""Django's door to the evaluation endpoints: each view adapts its request to
evaluation.answers and the answer back to an HttpResponse.

The ASGI fast path (flagsite.asgi) answers the same endpoints through the same functions
before Django is reached; these views serve what it hands on (a browser's CORS request, a
path it does not route) and every request under WSGI and the test client.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from django.views.decorators.csrf import csrf_exempt

from evaluation import answers
from evaluation.answers import MAX_BODY_BYTES, Answer


def response(answer: Answer) -> HttpResponse:
    """The HttpResponse of an answer."""
    if answer.content_type is None:
        reply = HttpResponse(answer.body, status=answer.status)
    else:
        reply = HttpResponse(answer.body, content_type=answer.content_type, status=answer.status)
    for name, value in answer.headers:
        reply[name] = value
    return reply


def _body(request: HttpRequest) -> bytes:
    """The request body, cut at MAX_BODY_BYTES + 1 (the answer is then a 413).

    A chunked body (`Transfer-Encoding: chunked`, no Content-Length) is read from the
    server's input stream, which has it de-chunked: Django reads only up to the
    Content-Length, so it would see an empty body and evaluate an empty context.
    """
    too_big = b"x" * (MAX_BODY_BYTES + 1)
    length = request.META.get("CONTENT_LENGTH")
    if length and length.isdigit() and int(length) > MAX_BODY_BYTES:
        return too_big
    if not length and "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower():
        stream = request.META.get("wsgi.input")
        return stream.read(MAX_BODY_BYTES + 1) if stream is not None else b""
    try:
        return request.body
    except RequestDataTooBig:
        return too_big


def _request(request: HttpRequest) -> answers.Request:
    method = request.method or ""
    body = _body(request) if method == "POST" else b""
    return answers.Request(method, request.headers, body)


def _adapt(answer: Callable[..., Answer]) -> Callable[..., HttpResponse]:
    def view(request: HttpRequest, *args: str, **kwargs: str) -> HttpResponse:
        return response(answer(_request(request), *args, **kwargs))

    view.__name__ = answer.__name__
    view.__doc__ = answer.__doc__
    # A key, not a cookie, authenticates: a POST gets the JSON answer, not CSRF's page.
    return csrf_exempt(view)


evaluate_flags = _adapt(answers.evaluate_flags)
evaluate_flag = _adapt(answers.evaluate_flag)
ofrep_flag = _adapt(answers.ofrep_flag)
ofrep_flags = _adapt(answers.ofrep_flags)
sdk_flags = _adapt(answers.sdk_flags)


@csrf_exempt
def ofrep_not_found(request: HttpRequest) -> HttpResponse:
    """A path under /ofrep/ that names no endpoint: OFREP's error shape, 404."""
    return response(answers.ofrep_not_found(request.path))


@csrf_exempt
def native_not_found(request: HttpRequest) -> HttpResponse:
    """A path under /api/v1/evaluate/ that names no flag (empty, or with a slash): 404."""
    return response(answers.native_not_found(request.path))


@csrf_exempt
def trivial(request: HttpRequest) -> HttpResponse:
    """A view that does nothing: the benchmark's floor (routed only with BENCH_TRIVIAL_VIEW=1)."""
    return HttpResponse(b"{}", content_type="application/json")
