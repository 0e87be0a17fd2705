"""The metadata server instances ask for ID tokens, as on Cloud Run.

    GET $HOMERUN_METADATA_URL/instance/service-accounts/default/identity?audience=URL
    Metadata-Flavor: Google

answers with a token whose subject is the calling instance's identity
(`serviceAccount:SERVICE`). The caller proves nothing itself: the server looks up which
instance holds the other end of the connection (access/peers.py), so only this platform's
instances get tokens, each for its own identity. It listens on loopback, on a port of its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from homerun.access import peers
from homerun.access.iam import SERVICE_ACCOUNT_PREFIX

PREFIX = "/computeMetadata/v1"
_FLAVOR = {"Metadata-Flavor": "Google"}
_MAX_AUDIENCE = 2048


def create_metadata_app(
    members: Callable[[], Mapping[int, str]],
    mint: Callable[[str, str], str],
    platform_audience: str,
) -> Starlette:
    """`members()` maps instance pids to their identity (read on the event loop);
    `mint(member, audience)` returns a signed ID token."""

    async def caller(request: Request) -> str | Response:
        if request.headers.get("metadata-flavor") != "Google":
            return _text(403, "Missing Metadata-Flavor:Google header.")
        if "x-forwarded-for" in request.headers:
            # A request relayed by a proxy is not the instance's own (Google refuses it too).
            return _text(403, "Requests with X-Forwarded-For are refused.")
        client, server = request.client, request.scope.get("server")
        if client is None or not server:
            return _text(403, "Only homerun instances may ask for tokens.")
        member = await asyncio.to_thread(
            peers.connection_owner, (client.host, client.port), tuple(server), members()
        )
        if member is None:
            return _text(403, "Only homerun instances may ask for tokens.")
        return member

    async def identity(request: Request) -> Response:
        member = await caller(request)
        if isinstance(member, Response):
            return member
        audience = request.query_params.get("audience", "")
        if not audience or len(audience) > _MAX_AUDIENCE:
            return _text(400, "audience: required, the URL of the service to call")
        if audience.rstrip("/") == platform_audience.rstrip("/"):
            # That audience opens every service: the CLI's, never an instance's.
            return _text(400, "audience: give the URL of the service to call")
        return _text(200, mint(member, audience))

    async def email(request: Request) -> Response:
        member = await caller(request)
        if isinstance(member, Response):
            return member
        return _text(200, member.removeprefix(SERVICE_ACCOUNT_PREFIX))

    async def root(request: Request) -> Response:
        # google-auth pings the server and looks for this header before it asks for tokens.
        return _text(200, "computeMetadata/\n")

    account = f"{PREFIX}/instance/service-accounts/default"
    return Starlette(
        routes=[
            Route("/", root),
            Route(f"{account}/identity", identity),
            Route(f"{account}/email", email),
        ]
    )


def _text(status: int, body: str) -> Response:
    return PlainTextResponse(body, status_code=status, headers=_FLAVOR)
