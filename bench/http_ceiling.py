"""The HTTP benchmark's ceiling: a raw ASGI application that reads the body and answers a
small JSON object, served by the same gunicorn and uvicorn workers (bench/http.py).

Nothing served by the product can be faster on this machine: each endpoint's row in
`make bench-http` is shown as its share of this one, measured in the same run.
"""

BODY = b'{"key":"flag-07","value":true,"reason":"STATIC","variant":"on","metadata":{}}'
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def application(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
