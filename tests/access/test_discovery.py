"""The published key: a JWK set and PEM certificates that check the platform's tokens, a key id
that is the key's RFC 7638 thumbprint, and the OpenID Connect discovery document."""

from __future__ import annotations

import datetime

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.api_jwk import PyJWKSet
from jwt.utils import base64url_decode

from homerun.access.discovery import JWKS_PATH, key_id, publish

ISSUER = "http://localhost:8080"
NOW = datetime.datetime(2027, 1, 1, tzinfo=datetime.UTC)


@pytest.fixture(scope="module")
def private_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_the_key_id_is_the_rfc_7638_thumbprint() -> None:
    # RFC 7638, section 3.1: this key's thumbprint is NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs.
    modulus = (
        "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_B"
        "JECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_F"
        "DW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4"
        "vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw"
    )
    n = int.from_bytes(base64url_decode(modulus), "big")
    public_key = rsa.RSAPublicNumbers(65537, n).public_key()
    assert key_id(public_key) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"


def test_the_jwk_set_checks_a_token_signed_with_the_key(private_key: rsa.RSAPrivateKey) -> None:
    kid = key_id(private_key.public_key())
    published = publish(private_key, kid, ISSUER, NOW)
    (jwk,) = published.jwks["keys"]
    assert (jwk["kty"], jwk["alg"], jwk["use"], jwk["kid"], jwk["e"]) == (
        "RSA", "RS256", "sig", kid, "AQAB",
    )  # fmt: skip
    token = jwt.encode({"aud": "x"}, private_key, algorithm="RS256", headers={"kid": kid})
    # What google.oauth2.id_token.verify_token does with a JWK set.
    (key,) = PyJWKSet.from_dict(published.jwks).keys
    assert key.key_id == kid and key.algorithm_name == "RS256"
    assert jwt.decode(token, key.key, algorithms=["RS256"], audience="x") == {"aud": "x"}


def test_the_certificates_hold_the_public_key(private_key: rsa.RSAPrivateKey) -> None:
    kid = key_id(private_key.public_key())
    published = publish(private_key, kid, ISSUER, NOW)
    certificate = x509.load_pem_x509_certificate(published.certificates[kid].encode())
    assert certificate.public_key() == private_key.public_key()
    assert certificate.not_valid_before_utc < NOW < certificate.not_valid_after_utc


def test_the_discovery_document_names_the_key_set_beside_it(
    private_key: rsa.RSAPrivateKey,
) -> None:
    published = publish(private_key, "kid", ISSUER, NOW)
    document = published.discovery("http://127.0.0.1:4000/")
    assert document["issuer"] == ISSUER
    assert document["jwks_uri"] == "http://127.0.0.1:4000" + JWKS_PATH
    assert document["id_token_signing_alg_values_supported"] == ["RS256"]
    assert {"email", "email_verified", "azp"} <= set(document["claims_supported"])
