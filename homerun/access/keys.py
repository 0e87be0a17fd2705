"""Secret files under HOMERUN_HOME, made at first start with mode 0600: the key that signs ID
tokens and the admin token of the TCP admin listener."""

from __future__ import annotations

import os
import secrets
import stat
from collections.abc import Callable
from pathlib import Path

from homerun.errors import HomerunError

_SECRET_BYTES = 32


def signing_key(path: Path) -> bytes:
    """32 random bytes, kept as hex."""
    _create(path, lambda: secrets.token_hex(_SECRET_BYTES))
    text = _read(path, "signing key")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise HomerunError(f"the signing key {path} is damaged; delete it to make a new one")
    return key


def admin_token(path: Path) -> str:
    _create(path, lambda: secrets.token_urlsafe(_SECRET_BYTES))
    token = _read(path, "admin token")
    if len(token) < 16 or any(char.isspace() for char in token):
        raise HomerunError(f"the admin token {path} is damaged; delete it to make a new one")
    return token


def _create(path: Path, make: Callable[[], str]) -> None:
    try:
        # O_EXCL: two daemons starting at once never overwrite each other's secret.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    with os.fdopen(fd, "w") as file:
        file.write(f"{make()}\n")


def _read(path: Path, what: str) -> str:
    info = path.stat()
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise HomerunError(
            f"the {what} {path} can be read by other users (mode "
            f"{stat.filemode(info.st_mode)}); run `chmod 600 {path}`, or delete it to make a "
            "new one"
        )
    return path.read_text().strip()
