"""Secret files under HOMERUN_HOME, made at first start with mode 0600: the private key that
signs ID tokens and the admin token of the TCP admin listener."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from homerun.errors import HomerunError

_SECRET_BYTES = 32
# 2048 bits, as Google's own ID-token keys: every JWT library verifies RS256 with them.
_RSA_BITS = 2048
_PUBLIC_EXPONENT = 65537


def signing_key(path: Path) -> bytes:
    """The RSA private key that signs ID tokens, as PKCS#8 PEM. A home made before tokens were
    RS256 holds 32 hex bytes there (an HMAC secret): that file is replaced by a new key; tokens
    it signed were good for an hour only."""
    _create(path, _new_private_key)
    text = _read(path, "signing key")
    if _is_old_secret(text):
        _replace(path, _new_private_key())
        text = _read(path, "signing key")
    pem = text.encode()
    try:
        # Parsed only: private_key() checks the key's numbers (some 30 ms), once, when used.
        private_key(pem, check=False)
    except (ValueError, TypeError, UnsupportedAlgorithm):  # TypeError: it wants a password
        raise HomerunError(
            f"the signing key {path} is damaged; delete it to make a new one"
        ) from None
    return pem


def private_key(pem: bytes, *, check: bool = True) -> rsa.RSAPrivateKey:
    """The key of `signing_key()`'s PEM; ValueError when it is not an RSA private key."""
    key = serialization.load_pem_private_key(
        pem, password=None, unsafe_skip_rsa_key_validation=not check
    )
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("not an RSA private key")
    return key


def admin_token(path: Path) -> str:
    _create(path, lambda: secrets.token_urlsafe(_SECRET_BYTES))
    token = _read(path, "admin token")
    if len(token) < 16 or any(char.isspace() for char in token):
        raise HomerunError(f"the admin token {path} is damaged; delete it to make a new one")
    return token


def _new_private_key() -> str:
    key = rsa.generate_private_key(public_exponent=_PUBLIC_EXPONENT, key_size=_RSA_BITS)
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _is_old_secret(text: str) -> bool:
    try:
        return len(bytes.fromhex(text)) >= 16
    except ValueError:
        return False


def _create(path: Path, make: Callable[[], str]) -> None:
    try:
        # O_EXCL: two daemons starting at once never overwrite each other's secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as file:
        file.write(f"{make().strip()}\n")


def _replace(path: Path, text: str) -> None:
    """Write a new secret beside the old one (mode 0600 from the start), then rename it over:
    a reader sees the old file or the new one, never half of one."""
    fresh = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
    fd = os.open(fresh, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(f"{text.strip()}\n")
    os.replace(fresh, path)


def _read(path: Path, what: str) -> str:
    info = path.stat()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise HomerunError(
            f"the {what} {path} can be read by other users (mode "
            f"{stat.filemode(info.st_mode)}); run `chmod 600 {path}`, or delete it to make a "
            "new one"
        )
    return path.read_text().strip()
