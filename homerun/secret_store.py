"""Secrets and their numbered versions, as files of mode 0600 under HOMERUN_HOME/secrets.

`secrets/NAME/N` holds version N of secret NAME, byte for byte as it was given (a trailing
newline in a data file is part of the secret, as in Secret Manager). Versions are never
rewritten: a new value is a new version, and `latest` is the highest one.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from homerun.errors import InvalidSpec, NotFound
from homerun.model.suggest import did_you_mean
from homerun.spec import LATEST_VERSION, SecretRef, check_secret_version, validate_secret_name

# Environment values cannot hold NUL, and a secret read into one must be text.
MAX_SECRET_BYTES = 64 * 1024  # Secret Manager's limit per version


@dataclass(frozen=True)
class SecretVersion:
    secret: str
    version: int
    created_at: float
    size: int


class SecretStore:
    def __init__(self, root: Path) -> None:
        self._root = root

    # -- writing ---------------------------------------------------------------------------

    def create(self, name: str, data: str) -> SecretVersion:
        validate_secret_name(name)
        check_secret_data(name, data)  # before anything exists: a refused create leaves none
        folder = self._root / name
        if folder.exists():
            raise InvalidSpec(
                f"secret {name!r} already exists; add a version with "
                f"`homerun secrets versions add {name} --data-file FILE`"
            )
        self._root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self._root, 0o700)
        folder.mkdir(mode=0o700)
        return self._write(name, 1, data)

    def add_version(self, name: str, data: str) -> SecretVersion:
        versions = self.versions(name)
        return self._write(name, versions[-1].version + 1 if versions else 1, data)

    def delete(self, name: str) -> None:
        folder = self._folder(name)
        shutil.rmtree(folder)

    # -- reading ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        if not self._root.is_dir():
            return []
        return sorted(entry.name for entry in self._root.iterdir() if entry.is_dir())

    def versions(self, name: str) -> list[SecretVersion]:
        folder = self._folder(name)
        found = []
        for entry in folder.iterdir():
            if entry.name.isdigit():
                stat = entry.stat()
                found.append(SecretVersion(name, int(entry.name), stat.st_mtime, stat.st_size))
        return sorted(found, key=lambda version: version.version)

    def exists(self, ref: SecretRef) -> bool:
        try:
            self._path(ref)
        except NotFound:
            return False
        return True

    def resolve(self, ref: SecretRef) -> str:
        """The value of a secret version; NotFound names what is missing, never a value."""
        return self._path(ref).read_text(encoding="utf-8")

    def version_of(self, ref: SecretRef) -> int:
        return int(self._path(ref).name)

    # -- internals -------------------------------------------------------------------------

    def _folder(self, name: str) -> Path:
        validate_secret_name(name)
        folder = self._root / name
        if not folder.is_dir():
            raise NotFound(
                f"secret {name!r} not found{did_you_mean(name, self.names())} "
                "(`homerun secrets list` shows them)"
            )
        return folder

    def _path(self, ref: SecretRef) -> Path:
        version = check_secret_version(ref.version, f"secret {ref.secret}")
        if version == LATEST_VERSION:
            versions = self.versions(ref.secret)
            if not versions:
                raise NotFound(f"secret {ref.secret!r} has no version")
            version = str(versions[-1].version)
        path = self._folder(ref.secret) / version
        if not path.is_file():
            raise NotFound(
                f"secret {ref.secret!r} has no version {version}; "
                f"`homerun secrets versions list {ref.secret}` shows them"
            )
        return path

    def _write(self, name: str, version: int, data: str) -> SecretVersion:
        check_secret_data(name, data)
        folder = self._folder(name)
        path = folder / str(version)
        partial = folder / f".{version}.partial"
        # O_EXCL and 0600 from the start: the value is never readable by others, not even
        # for the moment between creating the file and a chmod.
        descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.fchmod(descriptor, 0o600)
            os.write(descriptor, data.encode("utf-8"))
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
        os.rename(partial, path)
        stat = path.stat()
        return SecretVersion(name, version, stat.st_mtime, stat.st_size)


def check_secret_data(name: str, data: str) -> None:
    if not data:
        raise InvalidSpec(f"secret {name}: the data is empty")
    if "\0" in data:
        raise InvalidSpec(f"secret {name}: the data holds a NUL byte, which no env var can")
    if len(data.encode("utf-8")) > MAX_SECRET_BYTES:
        raise InvalidSpec(f"secret {name}: the data is over {MAX_SECRET_BYTES // 1024} KiB")
