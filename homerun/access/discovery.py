"""What the platform publishes so that anyone can check its ID tokens: the public key as a JWK
set (as Google's oauth2/v3/certs), as X.509 certificates by key id (as oauth2/v1/certs, which
google-auth reads without PyJWT), and an OpenID Connect discovery document naming both."""

from __future__ import annotations

import datetime
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from jwt.utils import base64url_encode, to_base64url_uint

DISCOVERY_PATH = "/.well-known/openid-configuration"
JWKS_PATH = "/oauth2/v3/certs"
CERTIFICATES_PATH = "/oauth2/v1/certs"
# The claims every token carries (tokens.TokenAuthority.mint).
CLAIMS = ("aud", "azp", "email", "email_verified", "exp", "iat", "iss", "sub")
# Nobody checks these dates (google-auth takes the key from the certificate); they only have to
# make a well-formed certificate. The key itself does not rotate.
_CERTIFICATE_DAYS = 3650


def key_id(public_key: rsa.RSAPublicKey) -> str:
    """The key's RFC 7638 thumbprint: the same key always has the same `kid`."""
    members = _jwk_members(public_key)
    canonical = json.dumps(members, separators=(",", ":"), sort_keys=True).encode()
    return base64url_encode(hashlib.sha256(canonical).digest()).decode()


@dataclass(frozen=True)
class PublishedKeys:
    issuer: str
    algorithm: str
    jwks: dict[str, Any]  # {"keys": [JWK]}
    certificates: dict[str, str] = field(default_factory=dict)  # kid -> PEM certificate

    def discovery(self, base_url: str) -> dict[str, Any]:
        """The OpenID Connect discovery document, its URLs under `base_url` (where it was
        asked for: the key set is served beside it)."""
        base = base_url.rstrip("/")
        return {
            "issuer": self.issuer,
            "jwks_uri": base + JWKS_PATH,
            "id_token_signing_alg_values_supported": [self.algorithm],
            "response_types_supported": ["id_token"],
            "subject_types_supported": ["public"],
            "claims_supported": list(CLAIMS),
        }


def publish(
    private_key: rsa.RSAPrivateKey, kid: str, issuer: str, now: datetime.datetime
) -> PublishedKeys:
    public_key = private_key.public_key()
    jwk = {**_jwk_members(public_key), "alg": "RS256", "use": "sig", "kid": kid}
    return PublishedKeys(
        issuer=issuer,
        algorithm="RS256",
        jwks={"keys": [jwk]},
        certificates={kid: _certificate(private_key, issuer, now)},
    )


def _jwk_members(public_key: rsa.RSAPublicKey) -> dict[str, str]:
    numbers = public_key.public_numbers()
    return {
        "kty": "RSA",
        "n": to_base64url_uint(numbers.n).decode(),
        "e": to_base64url_uint(numbers.e).decode(),
    }


def _certificate(private_key: rsa.RSAPrivateKey, issuer: str, now: datetime.datetime) -> str:
    """A self-signed certificate of the public key, the form Google's v1 certs take."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer[:64])])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=_CERTIFICATE_DAYS))
        .sign(private_key, hashes.SHA256())
    )
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def issuer_documents(keys: PublishedKeys) -> dict[bytes, bytes]:
    """The three documents as the router serves them at the issuer itself (path -> JSON), where
    an OpenID Connect client looks: ISSUER/.well-known/openid-configuration."""
    return {
        DISCOVERY_PATH.encode(): json.dumps(keys.discovery(keys.issuer)).encode(),
        JWKS_PATH.encode(): json.dumps(keys.jwks).encode(),
        CERTIFICATES_PATH.encode(): json.dumps(keys.certificates).encode(),
    }
