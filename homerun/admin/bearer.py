"""Middleware that lets through only requests carrying the admin token.

The TCP admin listener takes `Authorization: Bearer TOKEN`. The dashboard, when it listens
beyond loopback, takes the same, or (for a browser) the token once in `?token=`, which it
turns into an HttpOnly cookie and a redirect to the same page without it.
"""

from __future__ import annotations

import hmac
from http.cookies import CookieError, SimpleCookie
from urllib.parse import parse_qsl, urlencode

from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "homerun_admin_token"


class RequireToken:
    def __init__(self, app: ASGIApp, token: str, *, browser: bool = False) -> None:
        self.app = app
        self._token = token.encode()
        self._browser = browser

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self._presented(scope):
            await self.app(scope, receive, send)
            return
        if self._browser and scope["type"] == "http":
            query = parse_qsl(scope.get("query_string", b"").decode("latin-1"))
            given = [value for name, value in query if name == "token"]
            if given and self._matches(given[-1].encode()):
                await self._set_cookie(scope, send, [(k, v) for k, v in query if k != "token"])
                return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        await _refuse(send)

    def _presented(self, scope: Scope) -> bool:
        for name, value in scope.get("headers", []):
            if name == b"authorization":
                scheme, _, credentials = value.partition(b" ")
                if scheme.lower() == b"bearer" and self._matches(credentials.strip()):
                    return True
            elif name == b"cookie" and self._browser:
                cookies: SimpleCookie = SimpleCookie()
                try:
                    cookies.load(value.decode("latin-1"))
                except CookieError:
                    continue
                morsel = cookies.get(COOKIE)
                if morsel is not None and self._matches(morsel.value.encode()):
                    return True
        return False

    def _matches(self, candidate: bytes) -> bool:
        return hmac.compare_digest(candidate, self._token)

    async def _set_cookie(self, scope: Scope, send: Send, rest: list[tuple[str, str]]) -> None:
        location = scope.get("path", "/") + (f"?{urlencode(rest)}" if rest else "")
        cookie = f"{COOKIE}={self._token.decode()}; Path=/; HttpOnly; SameSite=Strict"
        await send(
            {
                "type": "http.response.start",
                "status": 303,
                "headers": [
                    (b"location", location.encode()),
                    (b"set-cookie", cookie.encode()),
                    (b"content-length", b"0"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": b""})


async def _refuse(send: Send) -> None:
    body = (
        b'{"error": "this listener needs the admin token: send Authorization: Bearer TOKEN, '
        b'where TOKEN is the content of HOMERUN_HOME/admin-token"}'
    )
    await send(
        {
            "type": "http.response.start",
            "status": 401,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"www-authenticate", b"Bearer"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
