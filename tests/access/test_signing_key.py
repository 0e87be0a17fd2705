"""The key that signs ID tokens is an RSA key (RS256); a home from before holds an HMAC secret
in its place, which is replaced."""

from __future__ import annotations

import stat
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from homerun.access import keys


def test_the_signing_key_is_an_rsa_key_of_2048_bits(tmp_path: Path) -> None:
    pem = keys.signing_key(tmp_path / "signing-key")
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    key = keys.private_key(pem)
    assert isinstance(key, rsa.RSAPrivateKey) and key.key_size == 2048


def test_an_hmac_secret_from_before_is_replaced_privately(tmp_path: Path) -> None:
    path = tmp_path / "signing-key"
    path.write_text("ab" * 32 + "\n")
    path.chmod(0o600)
    pem = keys.signing_key(path)
    assert keys.private_key(pem).key_size == 2048
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keys.signing_key(path) == pem
    assert [entry.name for entry in tmp_path.iterdir()] == ["signing-key"]
