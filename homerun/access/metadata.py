"""The metadata server of Compute Engine and Cloud Run, as Google's client libraries read it.

Instances find it by GCE_METADATA_HOST and GCE_METADATA_IP (control/environment.py), on a
loopback port of its own. Every answer carries `Metadata-Flavor: Google` (google-auth pings `/`
and looks for it), and every request under /computeMetadata/v1 must send it, without
X-Forwarded-For (a request a proxy relayed is not the instance's own), as on Google. Those
paths answer for the calling instance: the server looks up which instance holds the other end
of the connection (access/peers.py), so only this platform's instances get answers, each about
itself; the caller proves nothing. The project's entries (project/, the region and zone) are
the same for everyone and no secret: any local process that sends the header gets them.

    project/project-id, project/numeric-project-id      config.yaml's `project`
    instance/id, instance/region, instance/zone
    instance/service-accounts/                          default/ and the account's e-mail/
    instance/service-accounts/default/                  aliases, email, scopes, identity, token
    instance/service-accounts/default/identity?audience=URL     an ID token for URL
    instance/service-accounts/default/token             an access token, for libraries that
                                                        want one: no service here accepts it

A directory lists its entries one a line (`name/` for a directory); with `?recursive=true` it
is JSON with camelCase keys, as on GCE (google-auth reads the account that way). The public
keys that check ID tokens need no header and are anyone's: /.well-known/openid-configuration,
/oauth2/v3/certs (a JWK set) and /oauth2/v1/certs (PEM certificates by key id).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, TypeAlias

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from homerun.access import peers
from homerun.access.discovery import (
    CERTIFICATES_PATH,
    DISCOVERY_PATH,
    JWKS_PATH,
    PublishedKeys,
)
from homerun.access.iam import SERVICE_ACCOUNT_PREFIX
from homerun.access.project import Project
from homerun.access.tokens import ACCESS_TOKEN_PREFIX, LIFETIME_SECONDS
from homerun.runtime.process import process_start_ticks

PREFIX = "/computeMetadata/v1"
CLOUD_PLATFORM_SCOPE = "https://www.googleapis.com/auth/cloud-platform"
UNIVERSE_DOMAIN = "googleapis.com"
_FLAVOR = {"Metadata-Flavor": "Google"}
_MAX_AUDIENCE = 2048
# The keys never change while the daemon runs: clients may keep them an hour.
_KEYS_HEADERS = {**_FLAVOR, "Cache-Control": "public, max-age=3600"}


class _Lazy:
    """A value read only when asked for: the instance's id takes a second look in /proc."""

    def __init__(self, read: Callable[[], Awaitable[str]]) -> None:
        self.read = read


class _Endpoint:
    """identity and token: listed in their directory, answered by their own handlers, and left
    out of recursive answers (as on GCE)."""


_ENDPOINT = _Endpoint()
Node: TypeAlias = str | int | list[str] | _Lazy | _Endpoint | dict[str, "Node"]


def create_metadata_app(
    members: Callable[[], Mapping[int, str]],
    mint: Callable[[str, str], str],
    platform_audience: str,
    *,
    project: Project | None = None,
    email_of: Callable[[str], str] | None = None,
    keys: PublishedKeys | None = None,
) -> Starlette:
    """`members()` maps instance pids to their identity (read on the event loop);
    `mint(member, audience)` returns a signed ID token; `email_of(member)` is the account's
    e-mail as those tokens carry it (TokenAuthority.email_of; by default the name after
    `serviceAccount:`); `keys` are published for anyone to check tokens with."""
    facts = project or Project()
    address_of = email_of or _account_name
    # Instance ids are hashes of (this salt, pid, start time): unique per instance, stable for
    # its life, and they tell nobody its pid.
    salt = secrets.token_bytes(16)

    async def caller(request: Request, *, anyone: bool = False) -> str | Response:
        """The calling instance's member, or the refusal; "" for `anyone` (not looked up)."""
        if request.headers.get("metadata-flavor") != "Google":
            return _text(403, "Missing Metadata-Flavor:Google header.")
        if "x-forwarded-for" in request.headers:
            # A request relayed by a proxy is not the instance's own (Google refuses it too).
            return _text(403, "Requests with X-Forwarded-For are refused.")
        if anyone:
            return ""
        found = await _owner(request, members())
        if found is None:
            return _text(403, "Only homerun instances may ask the metadata server for this.")
        return found

    async def instance_id(request: Request) -> str:
        # The member lookup answers who, not which instance: ask again for the pid.
        pid = await _owner(request, {pid: pid for pid in members()})
        if pid is None:
            return ""
        seed = salt + f"{pid}:{process_start_ticks(pid)}".encode()
        return hashlib.sha256(seed).hexdigest()

    async def metadata(request: Request) -> Response:
        parts = [part for part in request.path_params.get("path", "").split("/") if part]
        member = await caller(request, anyone=_about_the_project(parts))
        if isinstance(member, Response):
            return member
        email = address_of(member) if member else ""
        if (
            len(parts) == 4
            and parts[:2] == ["instance", "service-accounts"]
            and parts[2] in ("default", email)
        ):
            if parts[3] == "identity":
                return identity(request, member)
            if parts[3] == "token":
                return _access_token()
        node: Node = _tree(facts, email, _Lazy(lambda: instance_id(request)))
        for part in parts:
            if not isinstance(node, dict) or part not in node:
                return _text(404, f"{PREFIX}/{'/'.join(parts)} is not a metadata entry.")
            node = node[part]
        as_json = (
            request.query_params.get("recursive", "").lower() == "true"
            or request.query_params.get("alt") == "json"
        )
        if as_json:
            return JSONResponse(await _json(node), headers=_FLAVOR)
        return _text(200, await _plain(node))

    def identity(request: Request, member: str) -> Response:
        # `format` and `licenses` (GCE's extra claims) have nothing to add here.
        audience = request.query_params.get("audience", "")
        if not audience or len(audience) > _MAX_AUDIENCE:
            return _text(400, "audience: required, the URL of the service to call")
        if audience.rstrip("/") == platform_audience.rstrip("/"):
            # That audience opens every service: the CLI's, never an instance's.
            return _text(400, "audience: give the URL of the service to call")
        return _text(200, mint(member, audience))

    async def root(request: Request) -> Response:
        # google-auth pings the server and looks for this header before it asks for anything.
        return _text(200, "computeMetadata/\n")

    def published(make: Callable[[PublishedKeys, Request], Any]) -> Callable[..., Any]:
        async def answer(request: Request) -> Response:
            if keys is None:
                return _text(404, "This homerun signs tokens with a secret: no public key.")
            return JSONResponse(make(keys, request), headers=_KEYS_HEADERS)

        return answer

    return Starlette(
        routes=[
            Route("/", root),
            Route(PREFIX, metadata),
            Route(PREFIX + "/{path:path}", metadata),
            Route(DISCOVERY_PATH, published(lambda k, r: k.discovery(str(r.base_url)))),
            Route(JWKS_PATH, published(lambda k, r: k.jwks)),
            Route(CERTIFICATES_PATH, published(lambda k, r: k.certificates)),
        ]
    )


def _about_the_project(parts: list[str]) -> bool:
    """Entries the same for every instance, and no secret: anyone on this machine may read
    them. A revision's zygote (runtime/zygote.py) is no instance, and it imports the app: an
    app that asks google.auth.default() for the project at import gets it there too."""
    return parts[:1] in (["project"], ["universe"]) or parts in (
        ["instance", "region"],
        ["instance", "zone"],
    )


def _tree(project: Project, email: str, instance_id: _Lazy) -> dict[str, Node]:
    """What the metadata server holds for one instance, as GCE lays it out."""
    account: dict[str, Node] = {
        "aliases": ["default"],
        "email": email,
        "identity": _ENDPOINT,
        "scopes": [CLOUD_PLATFORM_SCOPE],
        "token": _ENDPOINT,
    }
    return {
        "instance": {
            "id": instance_id,
            "region": project.region_path,
            "service-accounts": {"default": account, email: account},
            "zone": project.zone_path,
        },
        "project": {"numeric-project-id": project.number, "project-id": project.id},
        "universe": {"universe-domain": UNIVERSE_DOMAIN},
    }


async def _owner(request: Request, candidates: Mapping[int, Any]) -> Any:
    client, server = request.client, request.scope.get("server")
    if client is None or not server:
        return None
    return await asyncio.to_thread(
        peers.connection_owner, (client.host, client.port), tuple(server), candidates
    )


async def _json(node: Node) -> Any:
    if isinstance(node, dict):
        return {
            _camel(name): await _json(child)
            for name, child in node.items()
            if not isinstance(child, _Endpoint)
        }
    if isinstance(node, _Lazy):
        return await node.read()
    return node


async def _plain(node: Node) -> str:
    if isinstance(node, dict):
        return "".join(
            f"{name}/\n" if isinstance(child, dict) else f"{name}\n" for name, child in node.items()
        )
    if isinstance(node, list):
        return "".join(f"{item}\n" for item in node)
    if isinstance(node, _Lazy):
        return await node.read()
    return str(node)


def _camel(name: str) -> str:
    """GCE's recursive keys: project-id -> projectId; an account's e-mail stays as it is."""
    if "@" in name:
        return name
    head, *rest = name.split("-")
    return head + "".join(word.capitalize() for word in rest)


def _access_token() -> Response:
    # Random, and kept nowhere: nothing here accepts it. Libraries that insist on credentials
    # (clients of emulators, google.auth.default() followed by refresh()) get one; a service
    # sent one answers 401 saying to send an ID token (tokens.TokenAuthority).
    token = f"{ACCESS_TOKEN_PREFIX}homerun.{secrets.token_urlsafe(32)}"
    answer = {"access_token": token, "expires_in": LIFETIME_SECONDS - 1, "token_type": "Bearer"}
    return JSONResponse(answer, headers=_FLAVOR)


def _account_name(member: str) -> str:
    return member.removeprefix(SERVICE_ACCOUNT_PREFIX)


def _text(status: int, body: str) -> Response:
    return PlainTextResponse(body, status_code=status, headers=_FLAVOR)
