"""The admin token on the TCP admin listener and on a dashboard beyond loopback."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from homerun.admin.bearer import COOKIE, RequireToken
from homerun.admin.dashboard import create_dashboard_app

TOKEN = "s3cret-admin-token-0123456789"
Serve = Callable[[Any], str]  # the `serve` fixture (tests/conftest.py): real uvicorn, loopback


def client(base_url: str, **options: Any) -> httpx.Client:
    return httpx.Client(base_url=base_url, trust_env=False, timeout=10, **options)


async def hello(request: Request) -> PlainTextResponse:
    return PlainTextResponse("hello")


def app(browser: bool = False) -> RequireToken:
    return RequireToken(Starlette(routes=[Route("/", hello)]), TOKEN, browser=browser)


def test_the_admin_listener_wants_the_bearer_token(serve: Serve) -> None:
    with client(serve(app())) as http:
        refused = http.get("/")
        assert refused.status_code == 401
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "admin-token" in refused.json()["error"]
        assert http.get("/", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.get("/", headers={"Authorization": f"Basic {TOKEN}"}).status_code == 401
        assert http.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).text == "hello"
        # A token in the query or a cookie does not open the API.
        assert http.get("/", params={"token": TOKEN}).status_code == 401
        assert http.get("/", headers={"Cookie": f"{COOKIE}={TOKEN}"}).status_code == 401


def test_a_browser_trades_the_token_in_the_url_for_a_cookie(serve: Serve) -> None:
    url = serve(app(browser=True))
    with client(url, follow_redirects=False) as http:
        assert http.get("/").status_code == 401
        assert http.get("/", params={"token": "wrong"}).status_code == 401
        trade = http.get("/", params={"token": TOKEN, "window": "300"})
        assert trade.status_code == 303
        assert trade.headers["location"] == "/?window=300"
        assert "HttpOnly" in trade.headers["set-cookie"]
        assert "SameSite=Strict" in trade.headers["set-cookie"]
        assert http.get("/").text == "hello"  # the client kept the cookie
    with client(url) as fresh:
        assert fresh.get("/", headers={"Cookie": f"{COOKIE}=wrong"}).status_code == 401
        assert fresh.get("/", headers={"Cookie": "bad cookie;;="}).status_code == 401


def test_the_dashboard_takes_the_token_only_when_given_one(serve: Serve) -> None:
    def overview(window: int) -> dict[str, object]:
        return {"services": []}

    def metrics() -> tuple[bytes, str]:
        return b"", "text/plain"

    with client(serve(create_dashboard_app(overview, metrics))) as open_dashboard:
        assert open_dashboard.get("/api/overview").status_code == 200
    with client(serve(create_dashboard_app(overview, metrics, token=TOKEN))) as guarded:
        assert guarded.get("/api/overview").status_code == 401
        assert guarded.get("/metrics").status_code == 401
        authorized = {"Authorization": f"Bearer {TOKEN}"}
        assert guarded.get("/api/overview", headers=authorized).status_code == 200
        assert guarded.get("/metrics", headers=authorized).status_code == 200
