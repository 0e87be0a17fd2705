"""ID tokens as the daemon signs them: RS256 with its RSA key, the claims of Google's ID tokens
(iss, aud, sub, azp, email, email_verified, iat, exp), checkable by anyone with the published
key; `nbf` is honoured, and an access token sent in their place is named for what it is."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from fakes import Clock
from jwt.api_jwk import PyJWKSet
from jwt.utils import base64url_encode

from homerun.access.project import Project
from homerun.access.tokens import TokenAuthority, TokenRejected

ISSUER = "http://localhost:8080"
SERVICE = "http://renderer.localhost:8080"
NOW = 1_800_000_000.0


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture
def clock() -> Clock:
    return Clock(NOW)


@pytest.fixture
def authority(private_key: rsa.RSAPrivateKey, clock: Clock) -> TokenAuthority:
    return TokenAuthority(private_key, ISSUER, project=Project("my-project"), clock=clock)


def claims_of(authority: TokenAuthority, token: str, audience: str = SERVICE) -> dict[str, Any]:
    """As an app checks a caller's token: with the published JWK set only (what
    google.oauth2.id_token.verify_token does), at the authority's time."""
    published = authority.published()
    assert published is not None
    (key,) = PyJWKSet.from_dict(published.jwks).keys
    assert jwt.get_unverified_header(token)["kid"] == key.key_id
    decoded: dict[str, Any] = jwt.decode(
        token,
        key.key,
        algorithms=["RS256"],
        audience=audience,
        issuer=ISSUER,
        options={"verify_exp": False, "verify_iat": False},
    )
    return decoded


def test_a_service_accounts_token_carries_the_claims_google_puts_in_one(
    authority: TokenAuthority,
) -> None:
    token = authority.mint("serviceAccount:editor", SERVICE)
    assert jwt.get_unverified_header(token)["alg"] == "RS256"
    assert claims_of(authority, token) == {
        "iss": ISSUER,
        "aud": SERVICE,
        "sub": "serviceAccount:editor",
        "azp": "serviceAccount:editor",
        "email": "editor@my-project.iam.gserviceaccount.com",
        "email_verified": True,
        "iat": int(NOW),
        "exp": int(NOW) + 3600,
    }


@pytest.mark.parametrize(
    ("member", "email", "verified"),
    [
        ("serviceAccount:run@other.iam.gserviceaccount.com", "run@other.iam.gserviceaccount.com",
         True),
        ("user:alice@example.com", "alice@example.com", True),
        ("user:alice", "alice", False),  # an OS user name: no address anyone verified
    ],
)  # fmt: skip
def test_the_email_claim(
    authority: TokenAuthority, member: str, email: str, verified: bool
) -> None:
    claims = claims_of(authority, authority.mint(member, SERVICE))
    assert (claims["email"], claims["email_verified"]) == (email, verified)


def test_the_router_reads_them_and_names_accounts_by_email(authority: TokenAuthority) -> None:
    claims = authority.verify(authority.mint("serviceAccount:editor", SERVICE).encode())
    assert claims.member == "serviceAccount:editor"
    assert claims.principal == "serviceAccount:editor@my-project.iam.gserviceaccount.com"
    user = authority.verify(authority.mint("user:alice", SERVICE).encode())
    assert user.principal == "user:alice"


def sign(private_key: rsa.RSAPrivateKey, authority: TokenAuthority, **changes: Any) -> bytes:
    claims = {"iss": ISSUER, "sub": "user:a", "aud": SERVICE, "exp": int(NOW) + 60, **changes}
    headers = {"kid": authority.key_id}
    return jwt.encode(claims, private_key, algorithm="RS256", headers=headers).encode()


def test_a_token_whose_nbf_is_ahead_is_refused_until_then(
    private_key: rsa.RSAPrivateKey, authority: TokenAuthority, clock: Clock
) -> None:
    early = sign(private_key, authority, nbf=int(NOW) + 30)
    with pytest.raises(TokenRejected, match="not valid yet"):
        authority.verify(early)
    clock.advance(30)
    assert authority.verify(early).member == "user:a"
    with pytest.raises(TokenRejected, match="nbf must be a number"):
        authority.verify(sign(private_key, authority, nbf="soon"))


def test_tokens_signed_otherwise_are_refused(
    private_key: rsa.RSAPrivateKey, authority: TokenAuthority
) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with pytest.raises(TokenRejected, match="signature"):
        authority.verify(sign(other, authority))
    # The public key used as an HMAC secret (the algorithm-confusion forgery).
    public_pem = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = {"alg": "HS256", "kid": authority.key_id, "typ": "JWT"}
    claims = {"iss": ISSUER, "sub": "user:a", "aud": SERVICE, "exp": int(NOW) + 60}
    signed = b".".join(base64url_encode(json.dumps(part).encode()) for part in (header, claims))
    signature = hmac.new(public_pem, signed, hashlib.sha256).digest()
    forged = signed + b"." + base64url_encode(signature)
    with pytest.raises(TokenRejected, match="not a valid ID token"):
        authority.verify(forged)


def test_an_access_token_is_named_for_what_it_is(authority: TokenAuthority) -> None:
    with pytest.raises(TokenRejected, match="access token.*fetch_id_token"):
        authority.verify(b"ya29.homerun.abc")


def test_the_app_still_gets_the_token_without_its_signature(authority: TokenAuthority) -> None:
    token = authority.mint("serviceAccount:editor", SERVICE)
    forwarded = authority.forwarded_authorization(b"Bearer " + token.encode())
    assert forwarded.endswith(b".SIGNATURE_REMOVED_BY_HOMERUN")
    assert forwarded.startswith(b"Bearer " + token.rsplit(".", 1)[0].encode())


def test_an_authority_with_a_secret_publishes_no_key() -> None:
    authority = TokenAuthority(b"k" * 32, ISSUER)
    assert authority.algorithm == "HS256" and authority.published() is None
