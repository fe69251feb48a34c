"""ASGI entry point: what gunicorn's uvicorn workers serve.

One process serves three kinds of request. The evaluation endpoints (native, OFREP, the
SDK document) are answered in the event loop by evaluation.fastpath, in front of Django,
through the same functions as Django's views; whatever it does not serve goes on to
Django. Event streams (`/api/v1/stream`) are long-lived and idle most of the time, so
they run as async views in the event loop, through Django's ASGI handler. Every other
request is short and synchronous, so it runs through Django's WSGI handler on a small
thread pool (a2wsgi): Django's ASGI handler would add thread hops around each middleware,
which measured three times slower for the same views.

The lifespan events start this process's change listener (evaluation.broadcast) at
start-up, so every process hears about changes at once, whether or not it holds a stream,
and note which stores answer the new process (its readiness, flagsite.health). Shutdown
ends the event streams first (flagsite.gunicorn), then the listener.
"""

import os

from a2wsgi import WSGIMiddleware
from django.core.asgi import get_asgi_application
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flagsite.settings")

django_asgi = get_asgi_application()
django_wsgi = WSGIMiddleware(
    # Django's handler is a WSGI application; its stub returns a response, not bytes.
    get_wsgi_application(),  # type: ignore[arg-type]
    workers=int(os.environ.get("WSGI_THREADS", "2")),
)

STREAM_PATHS = ("/api/v1/stream",)


async def _django(scope, receive, send) -> None:
    if scope["type"] == "http" and scope["path"] not in STREAM_PATHS:
        await django_wsgi(scope, receive, send)
    else:
        await django_asgi(scope, receive, send)


# The evaluation endpoints are answered before Django (evaluation.fastpath); the rest is
# Django's. Imported after Django is set up: it reads the settings.
from evaluation.fastpath import FastPath  # noqa: E402

_served = FastPath(fallback=_django)


async def _lifespan(receive, send) -> None:
    from asgiref.sync import sync_to_async

    from evaluation.broadcast import Broadcaster
    from evaluation.cache import Refresher
    from flagsite import health, metrics

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            # New versions are compiled in the refresher's thread, not by the requests.
            Refresher.ensure_started()
            Broadcaster.ensure_started()
            await sync_to_async(health.note_reachable_stores)()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if Broadcaster.current is not None:
                await Broadcaster.current.stop()
            if Refresher.current is not None:
                await sync_to_async(Refresher.current.stop)()
            metrics.flush_pending()  # the last second's samples, counted
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
    else:
        await _served(scope, receive, send)
