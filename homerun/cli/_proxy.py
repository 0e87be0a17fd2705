"""What `homerun services proxy` runs: a local HTTP server that sends every request on to one
service through the router, with the caller's ID token added, as `gcloud run services proxy`
does, so that a browser or a tool that cannot add a header reaches a private service."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx

# Minted tokens live an hour; a new one is asked for well before.
TOKEN_REFRESH_SECONDS = 50 * 60
# Headers of one connection (RFC 9110 section 7.6.1), not passed on either way; Host is set to
# the service's, and the token travels in X-Serverless-Authorization, which the router reads
# before Authorization, so that an app's own Authorization scheme passes through unchanged.
_HOP_BY_HOP = frozenset(
    {
        b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
        b"transfer-encoding", b"upgrade", b"host", b"x-serverless-authorization",
    }
)  # fmt: skip
_TIMEOUT = httpx.Timeout(connect=10.0, read=3600.0, write=3600.0, pool=10.0)


class TokenSource:
    """The caller's token for the service, minted again once it is TOKEN_REFRESH_SECONDS old."""

    def __init__(self, mint: Callable[[], str], clock: Callable[[], float] = time.monotonic):
        self._mint = mint
        self._clock = clock
        self._token = ""
        self._minted_at = 0.0

    def __call__(self) -> str:
        now = self._clock()
        if not self._token or now - self._minted_at >= TOKEN_REFRESH_SECONDS:
            self._token = self._mint()
            self._minted_at = now
        return self._token


class ServiceProxy:
    """An ASGI app: HTTP requests go to `router` with Host `host` and the token added; bodies
    stream both ways. WebSocket upgrades are refused (403) by the server running it."""

    def __init__(self, router: str, host: str, token: Callable[[], str]) -> None:
        self._router = router.rstrip("/")
        self._host = host
        self._token = token
        self._client = httpx.AsyncClient(trust_env=False, timeout=_TIMEOUT, follow_redirects=False)

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # a WebSocket: uvicorn answers 403 when the app does not accept it
        headers = [
            (name, value) for name, value in scope["headers"] if name.lower() not in _HOP_BY_HOP
        ]
        headers += [
            (b"host", self._host.encode()),
            (b"x-serverless-authorization", b"Bearer " + self._token().encode()),
        ]
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        request = self._client.build_request(
            scope["method"],
            self._router + target.decode("latin-1"),
            headers=headers,
            content=_body(receive) if _has_body(scope["headers"]) else None,
        )
        try:
            response = await self._client.send(request, stream=True)
        except httpx.HTTPError as error:
            await _answer(send, 502, f"homerun's router did not answer: {error}\n")
            return
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (name, value)
                        for name, value in response.headers.raw
                        if name.lower() not in _HOP_BY_HOP
                    ],
                }
            )
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})
        finally:
            await response.aclose()

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self._client.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _has_body(headers: list[tuple[bytes, bytes]]) -> bool:
    return any(name.lower() in (b"content-length", b"transfer-encoding") for name, _ in headers)


async def _body(receive: Any) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return
        yield message.get("body", b"")
        if not message.get("more_body"):
            return


async def _answer(send: Any, status: int, text: str) -> None:
    body = text.encode()
    headers = [
        (b"content-type", b"text/plain; charset=utf-8"),
        (b"content-length", b"%d" % len(body)),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
