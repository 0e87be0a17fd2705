"""The dashboard: one page of live charts over the platform's overview, and its /metrics.

Its routes: `GET /` the page; `GET /api/overview?window=300|3600` what the page shows, as JSON
(the page fetches it every 2 s and links to it; README.md documents it); `GET /metrics`
Prometheus' exposition; `/static/...` the page's script, style and icon."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from homerun.admin.bearer import RequireToken

STATIC = Path(__file__).with_name("static")
# The page's toggle: the last 5 minutes or the last hour, in seconds.
WINDOWS = (300, 3600)
# The names a browser on this machine reaches a loopback dashboard by (any port).
LOOPBACK_HOSTS = ("localhost", "*.localhost", "127.0.0.1", "[::1]")

# The page loads its script, style and data from this listener only, and the browser enforces
# it: a dashboard that reached out (a CDN, a font host) would fail here instead of leaking.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


def create_dashboard_app(
    overview: Callable[[int], dict[str, Any]],
    metrics: Callable[[], tuple[bytes, str]],
    token: str | None = None,
    hosts: Sequence[str] | None = None,
) -> Starlette:
    """The dashboard's ASGI app.

    `overview(window_seconds)` returns the page's JSON (services, series over the window,
    revisions, instances, decisions, logs); `metrics()` returns the Prometheus exposition as
    (body, content type). Both are called on the event loop, so they must not block: the
    daemon's state lives on that loop and is not safe to read from a worker thread.

    With a `token` (the admin token), every request must carry it (admin/bearer.py): the
    daemon passes one when the dashboard listens beyond loopback.

    With `hosts`, a request whose Host header names another host gets 400: on loopback, with
    no token, that stops a web page from reading the dashboard through a name of its own
    pointed at 127.0.0.1 (DNS rebinding).
    """

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def overview_json(request: Request) -> Response:
        raw = request.query_params.get("window", str(WINDOWS[0]))
        window = next((seconds for seconds in WINDOWS if raw == str(seconds)), None)
        if window is None:
            allowed = " or ".join(str(seconds) for seconds in WINDOWS)
            return JSONResponse(
                {"error": f"window: expected {allowed} (seconds), got {raw!r}"}, status_code=400
            )
        return JSONResponse(overview(window), headers={"Cache-Control": "no-store"})

    async def metrics_text(request: Request) -> Response:
        body, content_type = metrics()
        return Response(body, headers={"Content-Type": content_type, "Cache-Control": "no-store"})

    app = Starlette(
        routes=[
            Route("/", page),
            Route("/api/overview", overview_json),
            Route("/metrics", metrics_text),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ]
    )
    app.add_middleware(_SecurityHeaders)
    if hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(hosts))
    if token is not None:
        app.add_middleware(RequireToken, token=token, browser=True)
    return app


class _SecurityHeaders:
    """Adds the content security policy and no-sniff to every response of the dashboard."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.append((b"content-security-policy", CONTENT_SECURITY_POLICY.encode()))
                headers.append((b"x-content-type-options", b"nosniff"))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
