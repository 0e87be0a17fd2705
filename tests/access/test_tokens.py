"""ID tokens: minted and verified with the platform key; a verified token is cached, and its
expiry is checked on every use against the injected clock."""

from __future__ import annotations

from typing import Any

import jwt
import pytest
from fakes import Clock

from homerun.access import tokens
from homerun.access.tokens import SIGNATURE_REMOVED, TokenAuthority, TokenRejected

KEY = b"k" * 32
NOW = 1_800_000_000.0  # a wall-clock time, as the authority reads time.time()
ISSUER = "http://localhost:8080"
CLAIMS = {"sub": "user:a", "aud": "x", "exp": 2e9, "iss": ISSUER}


def test_a_token_carries_member_audience_issuer_and_an_hour() -> None:
    clock = Clock(NOW)
    authority = TokenAuthority(KEY, ISSUER, clock=clock)
    token = authority.mint("user:alice", "http://svc.localhost:8080")
    claims = authority.verify(token.encode())
    assert claims.member == "user:alice"
    assert claims.audience == "http://svc.localhost:8080"
    assert claims.expires_at == clock.now + 3600
    decoded = jwt.decode(
        token,
        KEY,
        algorithms=["HS256"],
        options={"verify_aud": False, "verify_exp": False, "verify_iat": False},
    )
    assert decoded["iss"] == ISSUER
    assert jwt.get_unverified_header(token)["kid"] == authority.key_id


def test_expired_tokens_are_refused_even_from_the_cache() -> None:
    clock = Clock(NOW)
    authority = TokenAuthority(KEY, ISSUER, clock=clock)
    token = authority.mint("user:alice", "aud").encode()
    authority.verify(token)
    clock.now += 3599
    authority.verify(token)
    clock.now += 1
    with pytest.raises(TokenRejected, match="expired"):
        authority.verify(token)


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (jwt.encode(dict(CLAIMS), b"o" * 32), "signature"),
        (jwt.encode(dict(CLAIMS, iss="other"), KEY), "not issued"),
        (jwt.encode({"sub": "user:a", "aud": "x", "iss": ISSUER}, KEY), "exp"),
        (jwt.encode(dict(CLAIMS), KEY * 2, algorithm="HS512"), "not a valid"),
        ("not.a.token", "not a valid"),
        ("", "not a valid"),
    ],
)
def test_tokens_not_ours_are_refused_with_a_reason(token: str, reason: str) -> None:
    with pytest.raises(TokenRejected, match=reason):
        TokenAuthority(KEY, ISSUER, clock=Clock(NOW)).verify(token.encode())


def test_the_none_algorithm_is_refused() -> None:
    forged = jwt.encode(dict(CLAIMS), "", algorithm="none")
    with pytest.raises(TokenRejected):
        TokenAuthority(KEY, ISSUER, clock=Clock(NOW)).verify(forged.encode())


def test_a_repeated_token_is_not_verified_again(monkeypatch: pytest.MonkeyPatch) -> None:
    authority = TokenAuthority(KEY, ISSUER, clock=Clock(NOW))
    token = authority.mint("user:alice", "aud").encode()
    decodes = []
    real_decode = jwt.decode

    def counted(*args: Any, **options: Any) -> Any:
        decodes.append(1)
        return real_decode(*args, **options)

    monkeypatch.setattr(tokens.jwt, "decode", counted)
    for _ in range(100):
        authority.verify(token)
    assert len(decodes) == 1


def test_the_cache_is_bounded_and_forgets_the_oldest_first() -> None:
    authority = TokenAuthority(KEY, ISSUER, clock=Clock(NOW), cache_size=3)
    minted = [authority.mint(f"user:u{index}", "aud").encode() for index in range(5)]
    for token in minted:
        authority.verify(token)
    assert list(authority._verified) == minted[2:]


def test_the_app_gets_our_tokens_without_their_signature() -> None:
    authority = TokenAuthority(KEY, ISSUER, clock=Clock(NOW))
    token = authority.mint("user:alice", "aud")
    forwarded = authority.forwarded_authorization(b"Bearer " + token.encode())
    head, claims, _ = token.split(".")
    assert forwarded == f"Bearer {head}.{claims}.".encode() + SIGNATURE_REMOVED
    with pytest.raises(TokenRejected):
        authority.verify(forwarded.split(b" ", 1)[1])
    # Anything else passes as it is: the app's own schemes, other issuers' tokens.
    for other in (b"Basic dXNlcjpwYXNz", b"Bearer abc.def.ghi", b"Bearer", b""):
        assert authority.forwarded_authorization(other) == other
    other_platform = TokenAuthority(b"o" * 32, ISSUER, clock=Clock(NOW)).mint("user:a", "aud")
    assert authority.forwarded_authorization(b"Bearer " + other_platform.encode()).endswith(
        other_platform.encode()
    )
