"""A raw ASGI app for the proxy tests, run under uvicorn: every path is one behaviour to proxy."""

from __future__ import annotations

import asyncio
import hashlib
import json
from typing import Any
from urllib.parse import parse_qs

Scope = dict[str, Any]
Message = dict[str, Any]

# Per tag (a query parameter each test makes unique): what the app saw, for /stats.
seen: dict[str, dict[str, int]] = {}


def _count(tag: str, event: str) -> None:
    counts = seen.setdefault(tag, {})
    counts[event] = counts.get(event, 0) + 1


async def _send_body(
    send: Any, body: bytes, status: int = 200, content_type: bytes = b"text/plain"
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _read_body(receive: Any) -> bytes:
    pieces = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        pieces.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(pieces)


async def app(scope: Scope, receive: Any, send: Any) -> None:
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            pass
        return
    if scope["type"] == "websocket":
        await _websocket_echo(receive, send)
        return
    query = {name: values[0] for name, values in parse_qs(scope["query_string"].decode()).items()}
    tag = query.get("tag", "")
    path = scope["path"]
    _count(tag, path)
    if path == "/hello":
        await _send_body(send, b"hello")
    elif path == "/headers":
        headers = [
            [name.decode("latin-1"), value.decode("latin-1")] for name, value in scope["headers"]
        ]
        payload = {
            "headers": headers,
            "method": scope["method"],
            "path": scope["raw_path"].decode(),
        }
        await _send_body(send, json.dumps(payload).encode(), content_type=b"application/json")
    elif path == "/peer":
        # The instance-side port of the router's connection: equal ports mean a reused connection.
        await _send_body(send, b"%d" % scope["client"][1])
    elif path == "/upload":
        body = await _read_body(receive)
        payload = {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
        await _send_body(send, json.dumps(payload).encode(), content_type=b"application/json")
    elif path == "/echo":
        await _echo(receive, send)
    elif path == "/sse":
        events, interval = int(query.get("events", "3")), float(query.get("interval", "0.2"))
        await _events(receive, send, events, interval)
    elif path == "/big":
        await _big(send, int(query["bytes"]), sized=query.get("sized") == "1")
    elif path == "/slow":
        await _slow(receive, send, float(query.get("seconds", "1")), tag)
    elif path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
        headers = [(b"etag", b'"v1"')] if status == 304 else []
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
    elif path == "/stats":
        await _send_body(send, json.dumps(seen.get(tag, {})).encode())
    else:
        await _send_body(send, b"not found", status=404)


async def _echo(receive: Any, send: Any) -> None:
    """Sends each body piece back as soon as it arrives: full duplex over one request."""
    await send({"type": "http.response.start", "status": 200, "headers": []})
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        if message.get("body"):
            await send({"type": "http.response.body", "body": message["body"], "more_body": True})
        if not message.get("more_body", False):
            break
    await send({"type": "http.response.body", "body": b""})


async def _events(receive: Any, send: Any, count: int, interval: float) -> None:
    """Server-sent events, `interval` apart; stops early when the client goes away."""
    headers = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    disconnected = asyncio.ensure_future(_disconnected(receive))
    try:
        for number in range(count):
            if number:
                await asyncio.wait({disconnected}, timeout=interval)
                if disconnected.done():
                    return
            event = b"data: %d\n\n" % number
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
    finally:
        disconnected.cancel()


async def _disconnected(receive: Any) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _big(send: Any, size: int, *, sized: bool) -> None:
    headers = [(b"content-length", b"%d" % size)] if sized else []
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    piece = b"x" * 65536
    remaining = size
    while remaining > 0:
        chunk = piece[:remaining]
        remaining -= len(chunk)
        await send({"type": "http.response.body", "body": chunk, "more_body": remaining > 0})


async def _slow(receive: Any, send: Any, seconds: float, tag: str) -> None:
    """Answers after `seconds`, unless the connection goes first (counted as a disconnect)."""
    _count(tag, "started")
    waiter = asyncio.ensure_future(_disconnected(receive))
    done, _ = await asyncio.wait({waiter}, timeout=seconds)
    if done:
        _count(tag, "disconnected")
        return
    waiter.cancel()
    await _send_body(send, b"done")


async def _websocket_echo(receive: Any, send: Any) -> None:
    message = await receive()
    assert message["type"] == "websocket.connect"
    await send({"type": "websocket.accept"})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message.get("text") is not None:
            await send({"type": "websocket.send", "text": "echo: " + message["text"]})
        else:
            await send({"type": "websocket.send", "bytes": message["bytes"]})
