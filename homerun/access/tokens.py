"""ID tokens: JWTs minted for a member and an audience with the platform's key, and checked by
the router with a cache, so that a token seen before costs a dict lookup.

The daemon signs with an RSA key (RS256, as Google signs its ID tokens) whose public half it
publishes (access/discovery.py), so an app can check who called it with google-auth or any JWT
library. An authority built on a byte string signs HS256 with it instead: nobody else can check
those tokens, and the tests that need no published key skip making an RSA key.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import time
from collections.abc import Callable
from typing import NamedTuple

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

from homerun.access.discovery import PublishedKeys, key_id, publish
from homerun.access.iam import SERVICE_ACCOUNT_PREFIX, canonical_member
from homerun.access.project import Project
from homerun.errors import HomerunError

SigningKey = rsa.RSAPrivateKey | bytes
LIFETIME_SECONDS = 3600  # as gcloud's and the metadata server's ID tokens
# Google's OAuth access tokens start so, and so do the metadata server's (access/metadata.py):
# a caller that sends one to a service is told to send an ID token instead.
ACCESS_TOKEN_PREFIX = "ya29."
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
    # The member IAM bindings are matched with: a service account by its e-mail, so that
    # `serviceAccount:api` and `serviceAccount:api@PROJECT.iam.gserviceaccount.com` are one.
    principal: str = ""
    not_before: float = 0.0  # nbf, when the token has one


class TokenRejected(HomerunError):
    """A token that is malformed, not signed by this platform, expired or not valid yet."""


class TokenAuthority:
    """Mints and verifies the platform's ID tokens.

    `verify` keeps what it verified: token -> Claims, bounded, the oldest forgotten first.
    Expiry and `nbf` are checked on every use against `clock` (wall time: they are epoch times).
    """

    def __init__(
        self,
        key: SigningKey,
        issuer: str,
        *,
        project: Project | None = None,
        clock: Callable[[], float] = time.time,
        cache_size: int = CACHE_SIZE,
    ) -> None:
        self.issuer = issuer
        self.project = project or Project()
        self._private_key: rsa.RSAPrivateKey | None = None
        self._signing: rsa.RSAPrivateKey | bytes
        self._verifying: rsa.RSAPublicKey | bytes
        if isinstance(key, rsa.RSAPrivateKey):
            self.algorithm = "RS256"
            self._private_key = self._signing = key
            self._verifying = key.public_key()
            self.key_id = key_id(self._verifying)
        else:
            self.algorithm = "HS256"
            self._signing = self._verifying = key
            self.key_id = hashlib.sha256(key).hexdigest()[:16]
        self._clock = clock
        self._cache_size = cache_size
        self._verified: dict[bytes, Claims] = {}
        # Every token of this platform starts with the same encoded header (PyJWT sorts its
        # keys): a prefix compare tells ours from any other bearer token.
        header = self.mint("user:probe", issuer).split(".", 1)[0]
        self._header_prefix = header.encode() + b"."

    def email_of(self, member: str) -> str:
        """The `email` claim of a member's tokens: a service account's address (a bare name is
        NAME@PROJECT.iam.gserviceaccount.com), a user's name as given."""
        name = member.partition(":")[2]
        if member.startswith(SERVICE_ACCOUNT_PREFIX):
            return self.project.account_email(name)
        return name

    def mint(self, member: str, audience: str, lifetime: float = LIFETIME_SECONDS) -> str:
        """The claims of Google's ID tokens. `sub` is the member as IAM names it here (Google
        puts an account's numeric id there); `azp` is the same, as for a service account's
        token from the metadata server."""
        now = self._clock()
        email = self.email_of(member)
        claims = {
            "iss": self.issuer,
            "sub": member,
            "azp": member,
            "aud": audience,
            "email": email,
            # The platform vouches for its accounts; a user name that is no address is not an
            # e-mail anyone verified.
            "email_verified": "@" in email,
            "iat": int(now),
            "exp": int(now + lifetime),
        }
        return jwt.encode(
            claims, self._signing, algorithm=self.algorithm, headers={"kid": self.key_id}
        )

    def verify(self, token: bytes) -> Claims:
        """The claims of a valid, current token of this platform; TokenRejected otherwise."""
        claims = self._verified.get(token)
        if claims is None:
            claims = self._decode(token)
            verified = self._verified
            if len(verified) >= self._cache_size:
                del verified[next(iter(verified))]
            verified[token] = claims
        now = self._clock()
        if claims.expires_at <= now:
            self._verified.pop(token, None)
            raise TokenRejected(
                "the token expired; get a new one (`homerun auth print-identity-token`)"
            )
        if claims.not_before > now:
            raise TokenRejected(
                f"the token is not valid yet (nbf is {claims.not_before - now:.0f} s from now)"
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

    def published(self) -> PublishedKeys | None:
        """The public key for others to check tokens with; None when signing with a secret."""
        return self._published

    @functools.cached_property
    def _published(self) -> PublishedKeys | None:
        if self._private_key is None:
            return None
        now = datetime.datetime.fromtimestamp(self._clock(), datetime.UTC)
        return publish(self._private_key, self.key_id, self.issuer, now)

    def _decode(self, token: bytes) -> Claims:
        if token.startswith(ACCESS_TOKEN_PREFIX.encode()):
            raise TokenRejected(
                "that is an OAuth access token, and services take ID tokens: ask the metadata "
                "server's …/identity?audience=URL (google.oauth2.id_token.fetch_id_token), or "
                "run `homerun auth print-identity-token`"
            )
        try:
            decoded = jwt.decode(
                token,
                self._verifying,
                algorithms=[self.algorithm],
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
        member, audience = decoded["sub"], decoded["aud"]
        if not isinstance(member, str) or not isinstance(audience, str):
            raise TokenRejected("the token's sub and aud must be strings")
        expires, not_before = decoded["exp"], decoded.get("nbf", 0)
        for name, value in (("exp", expires), ("nbf", not_before)):
            if not isinstance(value, int | float) or isinstance(value, bool):
                raise TokenRejected(f"the token's {name} must be a number")
        principal = canonical_member(member, self.project)
        return Claims(member, audience, float(expires), principal, float(not_before))
