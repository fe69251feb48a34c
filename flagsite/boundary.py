"""A sync-only last middleware, so Django runs the middleware chain in one thread hop.

Under ASGI, Django runs each async-capable `MiddlewareMixin` middleware (most of Django's
own) with two `sync_to_async` thread hops per request: about 2 ms for this stack. When the
innermost middleware is sync-only, every middleware outside it runs synchronously, and the
whole chain costs a single hop. Async views (the event stream) still work: Django calls
them from the chain and streams their response in the event loop.
"""

from collections.abc import Callable

from django.http import HttpRequest, HttpResponseBase


class SyncBoundaryMiddleware:
    sync_capable = True
    async_capable = False

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        return self.get_response(request)
