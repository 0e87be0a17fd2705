"""The metadata server laid out as GCE's and Cloud Run's, as google-auth and Google's other
clients read it: the project, the instance, its service account (recursively, as JSON), access
and ID tokens, the Metadata-Flavor contract both ways, and the published keys. (Who is calling
is decided here; the real lookup is in test_peers and the e2e tests.)"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.api_jwk import PyJWKSet

from homerun.access import metadata
from homerun.access.metadata import create_metadata_app
from homerun.access.project import Project
from homerun.access.tokens import TokenAuthority

Serve = Callable[[Any], str]  # the `serve` fixture (tests/conftest.py)

PLATFORM = "http://localhost:8080"
V1 = "/computeMetadata/v1"
ACCOUNT = f"{V1}/instance/service-accounts/default"
FLAVOR = {"Metadata-Flavor": "Google"}
PROJECT = Project("my-project")
EMAIL = "editor@my-project.iam.gserviceaccount.com"
# The instance calling: this test process's pid stands in for it (its start time is real).
PID = os.getpid()


@pytest.fixture(scope="module")
def authority() -> TokenAuthority:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return TokenAuthority(key, PLATFORM, project=PROJECT)


@contextlib.contextmanager
def client(
    authority: TokenAuthority,
    monkeypatch: pytest.MonkeyPatch,
    serve: Serve,
    *,
    instance: bool = True,
) -> Iterator[httpx.Client]:
    def owner(peer: object, server: object, candidates: Mapping[int, Any]) -> Any:
        # Asked for the member, or (for instance/id) for the pid: the same lookup either way.
        return candidates.get(PID) if instance else None

    monkeypatch.setattr(metadata.peers, "connection_owner", owner)
    app = create_metadata_app(
        lambda: {PID: "serviceAccount:editor"},
        authority.mint,
        PLATFORM,
        project=authority.project,
        email_of=authority.email_of,
        keys=authority.published(),
    )
    with httpx.Client(base_url=serve(app), trust_env=False, timeout=10) as http:
        yield http


def get(http: httpx.Client, path: str, **params: str) -> httpx.Response:
    response = http.get(path, params=params, headers=FLAVOR)
    assert response.headers["metadata-flavor"] == "Google"
    return response


def test_the_project_and_the_instance(
    authority: TokenAuthority, monkeypatch: pytest.MonkeyPatch, serve: Serve
) -> None:
    with client(authority, monkeypatch, serve) as http:
        assert get(http, f"{V1}/project/project-id").text == "my-project"
        assert get(http, f"{V1}/project/numeric-project-id").text == str(PROJECT.number)
        assert get(http, f"{V1}/instance/region").text == PROJECT.region_path
        assert get(http, f"{V1}/instance/zone").text == PROJECT.zone_path
        instance_id = get(http, f"{V1}/instance/id").text
        assert len(instance_id) == 64 and get(http, f"{V1}/instance/id").text == instance_id
        assert get(http, f"{V1}/universe/universe-domain").text == "googleapis.com"
        assert get(http, f"{V1}/project/", recursive="true").json() == {
            "numericProjectId": PROJECT.number,
            "projectId": "my-project",
        }
        assert get(http, f"{V1}/instance/").text.splitlines() == [
            "id", "region", "service-accounts/", "zone",
        ]  # fmt: skip


def test_the_service_account_as_google_auth_reads_it(
    authority: TokenAuthority, monkeypatch: pytest.MonkeyPatch, serve: Serve
) -> None:
    with client(authority, monkeypatch, serve) as http:
        # compute_engine.Credentials and IDTokenCredentials ask exactly this.
        info = get(http, f"{ACCOUNT}/", recursive="true")
        assert info.headers["content-type"] == "application/json"
        assert info.json() == {
            "aliases": ["default"],
            "email": EMAIL,
            "scopes": ["https://www.googleapis.com/auth/cloud-platform"],
        }
        assert get(http, f"{ACCOUNT}/email").text == EMAIL
        assert get(http, f"{ACCOUNT}/scopes").text == (
            "https://www.googleapis.com/auth/cloud-platform\n"
        )
        assert get(http, f"{ACCOUNT}/").text.splitlines() == [
            "aliases", "email", "identity", "scopes", "token",
        ]  # fmt: skip
        listing = get(http, f"{V1}/instance/service-accounts/").text
        assert listing == f"default/\n{EMAIL}/\n"
        # The account by its e-mail is the same account (google-auth asks so after the first
        # answer).
        by_email = f"{V1}/instance/service-accounts/{EMAIL}/"
        assert get(http, by_email, recursive="true").json() == info.json()


def test_tokens(authority: TokenAuthority, monkeypatch: pytest.MonkeyPatch, serve: Serve) -> None:
    with client(authority, monkeypatch, serve) as http:
        access = get(http, f"{ACCOUNT}/token", scopes="a,b")
        assert access.headers["content-type"] == "application/json"
        answer = access.json()
        assert answer["token_type"] == "Bearer" and answer["expires_in"] == 3599
        assert answer["access_token"].startswith("ya29.")
        assert get(http, f"{ACCOUNT}/token").json()["access_token"] != answer["access_token"]

        audience = "http://renderer.localhost:8080"
        token = get(http, f"{ACCOUNT}/identity", audience=audience, format="full").text
        claims = authority.verify(token.encode())
        assert (claims.member, claims.audience) == ("serviceAccount:editor", audience)
        by_email = f"{V1}/instance/service-accounts/{EMAIL}/identity"
        assert get(http, by_email, audience=audience).status_code == 200


@pytest.mark.parametrize(
    "path",
    [f"{V1}/project/project-id", f"{ACCOUNT}/", f"{ACCOUNT}/token", f"{V1}/instance/id", V1],
)
def test_every_entry_wants_the_flavor_header(
    authority: TokenAuthority, monkeypatch: pytest.MonkeyPatch, serve: Serve, path: str
) -> None:
    with client(authority, monkeypatch, serve) as http:
        response = http.get(path)
        assert response.status_code == 403 and "Metadata-Flavor" in response.text
        assert response.headers["metadata-flavor"] == "Google"


def test_what_is_not_there_and_who_gets_nothing(
    authority: TokenAuthority, monkeypatch: pytest.MonkeyPatch, serve: Serve
) -> None:
    with client(authority, monkeypatch, serve) as http:
        assert get(http, f"{V1}/instance/hostname").status_code == 404
        assert get(http, f"{V1}/instance/service-accounts/other@x.com/token").status_code == 404
        assert get(http, f"{V1}/project/project-id/more").status_code == 404
    with client(authority, monkeypatch, serve, instance=False) as http:
        for path in (f"{ACCOUNT}/token", f"{ACCOUNT}/", f"{V1}/instance/id", f"{V1}/"):
            response = get(http, path, recursive="true")
            assert response.status_code == 403 and "Only homerun instances" in response.text
        # The project's entries are anyone's: a revision's zygote, which is no instance, imports
        # apps that ask for the project at import.
        assert get(http, f"{V1}/project/project-id").text == "my-project"
        assert get(http, f"{V1}/instance/region").text == PROJECT.region_path


def test_the_keys_are_anyones_without_a_header(
    authority: TokenAuthority, monkeypatch: pytest.MonkeyPatch, serve: Serve
) -> None:
    with client(authority, monkeypatch, serve, instance=False) as http:
        discovery = http.get("/.well-known/openid-configuration").json()
        assert discovery["issuer"] == PLATFORM
        assert discovery["jwks_uri"] == f"{http.base_url}/oauth2/v3/certs"
        jwks = http.get("/oauth2/v3/certs").json()
        token = authority.mint("serviceAccount:editor", "http://x")
        (key,) = PyJWKSet.from_dict(jwks).keys
        decoded = jwt.decode(
            token, key.key, algorithms=["RS256"], audience="http://x", options={"verify_exp": False}
        )
        assert decoded["email"] == EMAIL
        certificates = http.get("/oauth2/v1/certs").json()
        assert list(certificates) == [authority.key_id]


def test_a_platform_signing_with_a_secret_publishes_nothing(
    monkeypatch: pytest.MonkeyPatch, serve: Serve
) -> None:
    secret = TokenAuthority(b"k" * 32, PLATFORM)
    app = create_metadata_app(lambda: {}, secret.mint, PLATFORM, keys=secret.published())
    with httpx.Client(base_url=serve(app), trust_env=False, timeout=10) as http:
        assert http.get("/oauth2/v3/certs").status_code == 404
