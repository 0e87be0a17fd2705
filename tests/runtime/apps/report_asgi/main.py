"""A bare ASGI app (uvicorn) that reports what its process sees: env, cwd, process group."""

import json
import os
import sys

os.environ.setdefault("SET_BY_THE_APP", "at import")  # as Django's wsgi.py does

print("main imported (stdout)", flush=True)
print("main imported (stderr)", file=sys.stderr, flush=True)


async def app(scope, receive, send):  # type: ignore[no-untyped-def]
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
    print(f"report on {os.environ.get('PORT')} (stdout)", flush=True)
    print(f"report on {os.environ.get('PORT')} (stderr)", file=sys.stderr, flush=True)
    body = json.dumps(
        {
            "env": {name: os.environ[name] for name in sorted(os.environ) if name != "PATH"},
            "cwd": os.getcwd(),
            "pid": os.getpid(),
            "pgid": os.getpgid(0),
            "sid": os.getsid(0),
            "stdin": sys.stdin.read(),
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})
