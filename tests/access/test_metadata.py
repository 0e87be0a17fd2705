"""The metadata server: a token for the calling instance's own identity, for an audience it
names; nobody else gets one. (The real lookup of the caller is in test_peers and e2e.)"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import pytest

from homerun.access import metadata
from homerun.access.metadata import create_metadata_app
from homerun.access.tokens import TokenAuthority

Serve = Callable[[Any], str]  # the `serve` fixture (tests/conftest.py)

PLATFORM = "http://localhost:8080"
IDENTITY = "/computeMetadata/v1/instance/service-accounts/default/identity"
FLAVOR = {"Metadata-Flavor": "Google"}


@pytest.fixture
def authority() -> TokenAuthority:
    return TokenAuthority(b"k" * 32, PLATFORM)


@contextlib.contextmanager
def client(
    authority: TokenAuthority,
    monkeypatch: pytest.MonkeyPatch,
    serve: Serve,
    *,
    caller: str | None,
) -> Iterator[httpx.Client]:
    """The metadata app on a real server, and a client of it. Who is calling is decided
    here: the test process is no instance."""

    def owner(peer: object, server: object, members: Mapping[int, str]) -> str | None:
        assert members == {4242: "serviceAccount:svc"}
        return caller

    monkeypatch.setattr(metadata.peers, "connection_owner", owner)
    app = create_metadata_app(lambda: {4242: "serviceAccount:svc"}, authority.mint, PLATFORM)
    with httpx.Client(base_url=serve(app), trust_env=False, timeout=10) as http:
        yield http


def test_an_instance_gets_a_token_for_its_identity(
    authority: TokenAuthority, monkeypatch: pytest.MonkeyPatch, serve: Serve
) -> None:
    with client(authority, monkeypatch, serve, caller="serviceAccount:svc") as http:
        audience = {"audience": "http://b.localhost:8080"}
        response = http.get(IDENTITY, params=audience, headers=FLAVOR)
        assert response.status_code == 200, response.text
        assert response.headers["metadata-flavor"] == "Google"
        claims = authority.verify(response.text.encode())
        assert claims.member == "serviceAccount:svc"
        assert claims.audience == "http://b.localhost:8080"
        email = http.get(IDENTITY.replace("identity", "email"), headers=FLAVOR)
        assert email.text == "svc"
        assert http.get("/", headers=FLAVOR).headers["metadata-flavor"] == "Google"


@pytest.mark.parametrize(
    ("params", "headers", "status", "says"),
    [
        ({"audience": "http://b"}, {}, 403, "Metadata-Flavor"),
        ({"audience": "http://b"}, {**FLAVOR, "X-Forwarded-For": "1.2.3.4"}, 403, "Forwarded"),
        ({}, FLAVOR, 400, "audience"),
        ({"audience": PLATFORM}, FLAVOR, 400, "audience"),
        ({"audience": PLATFORM + "/"}, FLAVOR, 400, "audience"),
        ({"audience": "x" * 3000}, FLAVOR, 400, "audience"),
    ],
)
def test_requests_it_refuses(
    authority: TokenAuthority,
    monkeypatch: pytest.MonkeyPatch,
    serve: Serve,
    params: dict[str, str],
    headers: dict[str, str],
    status: int,
    says: str,
) -> None:
    with client(authority, monkeypatch, serve, caller="serviceAccount:svc") as http:
        response = http.get(IDENTITY, params=params, headers=headers)
        assert response.status_code == status
        assert says in response.text


def test_a_process_that_is_no_instance_gets_nothing(
    authority: TokenAuthority, monkeypatch: pytest.MonkeyPatch, serve: Serve
) -> None:
    with client(authority, monkeypatch, serve, caller=None) as http:
        response = http.get(IDENTITY, params={"audience": "http://b"}, headers=FLAVOR)
        assert response.status_code == 403
        assert "Only homerun instances" in response.text
