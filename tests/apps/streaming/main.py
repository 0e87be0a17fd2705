"""A FastAPI app that exercises the router: SSE, a WebSocket echo, slow and crashing requests.

Every endpoint reports what the instance sees, so the e2e tests can assert on the instance
contract (env, stdin, cwd) and on what the router let through (requests in flight).
"""

import asyncio
import os
import select
import stat
import sys
import time

from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import PlainTextResponse, StreamingResponse

app = FastAPI()

# Requests currently inside /slow, and the most seen at once since the last reset. One uvicorn
# worker runs one event loop, so plain integers are safe here.
in_flight = 0
max_in_flight = 0

print(f"streaming app booting pid={os.getpid()}", flush=True)


def _stdin_state():
    """'eof' when stdin reads end-of-file at once, as Cloud Run gives it."""
    try:
        mode = os.fstat(0).st_mode
    except OSError:
        return "closed"
    if stat.S_ISSOCK(mode):
        return "socket"
    readable, _, _ = select.select([0], [], [], 0.2)
    if not readable:
        return "blocks"
    return "eof" if os.read(0, 1) == b"" else "data"


@app.get("/env")
def env():
    return {
        "PORT": os.environ.get("PORT"),
        "K_SERVICE": os.environ.get("K_SERVICE"),
        "K_REVISION": os.environ.get("K_REVISION"),
        "K_CONFIGURATION": os.environ.get("K_CONFIGURATION"),
        "GREETING": os.environ.get("GREETING"),
        "DSN": os.environ.get("DSN"),
        "cwd": os.getcwd(),
        "main_py_in_cwd": os.path.exists("main.py"),
        "pid": os.getpid(),
        "pgid": os.getpgid(0),
        "stdin": _stdin_state(),
        "python": sys.executable,
    }


@app.get("/slow")
async def slow(seconds: float = 1.0):
    global in_flight, max_in_flight
    in_flight += 1
    max_in_flight = max(max_in_flight, in_flight)
    started = time.time()
    try:
        await asyncio.sleep(seconds)
    finally:
        in_flight -= 1
    return {"slept": seconds, "started": started, "finished": time.time(), "pid": os.getpid()}


@app.get("/inflight")
def inflight():
    return {"in_flight": in_flight, "max_in_flight": max_in_flight}


@app.post("/inflight/reset")
def inflight_reset():
    global max_in_flight
    max_in_flight = in_flight
    return {"in_flight": in_flight, "max_in_flight": max_in_flight}


@app.get("/sse")
async def sse(events: int = 5, interval: float = 0.3):
    async def stream():
        for number in range(events):
            yield f"id: {number}\ndata: {time.time()}\n\n"
            if number < events - 1:
                await asyncio.sleep(interval)

    return StreamingResponse(stream(), media_type="text/event-stream")


@app.get("/log")
def log(msg: str):
    print(f"app-log {msg}", flush=True)
    print(f"app-err {msg}", file=sys.stderr, flush=True)
    return {"logged": msg}


@app.get("/crash")
def crash():
    # Die with the request half-handled: the router has sent it and waits for a response.
    print(f"crashing pid={os.getpid()}", flush=True)
    os._exit(17)


@app.post("/echo")
async def echo(request: Request):
    body = await request.body()
    return PlainTextResponse(body, media_type="application/octet-stream")


@app.websocket("/ws")
async def websocket_echo(websocket: WebSocket):
    await websocket.accept()
    try:
        while True:
            message = await websocket.receive_text()
            await websocket.send_text(f"echo: {message}")
    except WebSocketDisconnect:
        pass
