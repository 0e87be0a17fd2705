"""ID tokens: JWTs minted for a member and an audience with the platform's signing key, and
checked by the router with a cache, so that a token seen before costs a dict lookup."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import NamedTuple

import jwt

from homerun.errors import HomerunError

ALGORITHM = "HS256"  # PyJWT without `cryptography`: HMAC, the key never leaves the daemon
LIFETIME_SECONDS = 3600  # as gcloud's and the metadata server's ID tokens
# What an app behind the router sees in place of the signature of a token the router read:
# the claims stay readable (who called), the token cannot be replayed.
SIGNATURE_REMOVED = b"SIGNATURE_REMOVED_BY_HOMERUN"
# Verified tokens kept. A client that reuses its token (as google-auth does for an hour) costs
# one signature check; 4096 distinct live tokens is far more than one machine's callers.
CACHE_SIZE = 4096


class Claims(NamedTuple):
    member: str  # sub
    audience: str  # aud
    expires_at: float  # exp, seconds since the epoch


class TokenRejected(HomerunError):
    """A token that is malformed, not signed by this platform, or expired."""


class TokenAuthority:
    """Mints and verifies the platform's ID tokens.

    `verify` keeps what it verified: token -> Claims, bounded, the oldest forgotten first.
    Expiry is checked on every use against `clock` (wall time: `exp` is an epoch time).
    """

    def __init__(
        self,
        key: bytes,
        issuer: str,
        *,
        clock: Callable[[], float] = time.time,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.issuer = issuer
        self.key_id = hashlib.sha256(key).hexdigest()[:16]
        self._key = key
        self._clock = clock
        self._cache_size = cache_size
        self._verified: dict[bytes, Claims] = {}
        # Every token of this platform starts with the same encoded header (PyJWT sorts its
        # keys): a prefix compare tells ours from any other bearer token.
        header = self.mint("user:probe", issuer).split(".", 1)[0]
        self._header_prefix = header.encode() + b"."

    def mint(self, member: str, audience: str, lifetime: float = LIFETIME_SECONDS) -> str:
        now = self._clock()
        claims = {
            "iss": self.issuer,
            "sub": member,
            "aud": audience,
            "iat": int(now),
            "exp": int(now + lifetime),
        }
        return jwt.encode(claims, self._key, algorithm=ALGORITHM, headers={"kid": self.key_id})

    def verify(self, token: bytes) -> Claims:
        """The claims of a valid, unexpired token of this platform; TokenRejected otherwise."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self._decode(token)
            verified = self._verified
            if len(verified) >= self._cache_size:
                del verified[next(iter(verified))]
            verified[token] = claims
        if claims.expires_at <= self._clock():
            self._verified.pop(token, None)
            raise TokenRejected(
                "the token expired; get a new one (`homerun auth print-identity-token`)"
            )
        return claims

    def is_ours(self, token: bytes) -> bool:
        return token.startswith(self._header_prefix)

    def forwarded_authorization(self, value: bytes) -> bytes:
        """What the app gets of an Authorization header: a token of this platform without its
        signature (`header.claims.SIGNATURE_REMOVED_BY_HOMERUN`), so that the app can read who
        called but cannot replay the token to another service; anything else unchanged."""
        scheme, space, token = value.strip().partition(b" ")
        token = token.strip()
        if not space or scheme.lower() != b"bearer" or not self.is_ours(token):
            return value
        head, dot, _ = token.rpartition(b".")
        return b"Bearer " + head + dot + SIGNATURE_REMOVED

    def _decode(self, token: bytes) -> Claims:
        try:
            decoded = jwt.decode(
                token,
                self._key,
                algorithms=[ALGORITHM],
                issuer=self.issuer,
                # Times against our clock, audience against the route: both below.
                options={
                    "require": ["iss", "sub", "aud", "exp"],
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_aud": False,
                },
            )
        except jwt.InvalidIssuerError:
            raise TokenRejected(
                f"the token was not issued by this homerun ({self.issuer})"
            ) from None
        except jwt.InvalidSignatureError:
            raise TokenRejected("the token's signature is not this homerun's") from None
        except jwt.PyJWTError as error:
            raise TokenRejected(f"the token is not a valid ID token: {error}") from None
        member, audience, expires = decoded["sub"], decoded["aud"], decoded["exp"]
        if not isinstance(member, str) or not isinstance(audience, str):
            raise TokenRejected("the token's sub and aud must be strings")
        if not isinstance(expires, int | float) or isinstance(expires, bool):
            raise TokenRejected("the token's exp must be a number")
        return Claims(member, audience, float(expires))
