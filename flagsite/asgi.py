"""ASGI entry point: what gunicorn's uvicorn worker serves (long-lived streams need it).

Django's handler serves HTTP; the lifespan events start this process's change listener
(evaluation.broadcast) at start-up, so every process hears about changes at once, whether
or not it holds an event stream yet.
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flagsite.settings")

django_application = get_asgi_application()


async def _lifespan(receive, send) -> None:
    from evaluation.broadcast import Broadcaster

    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            Broadcaster.ensure_started()
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            if Broadcaster.current is not None:
                await Broadcaster.current.stop()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def application(scope, receive, send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    await django_application(scope, receive, send)
