"""Volumes as Cloud Run mounts them: secret versions as read-only files, in-memory volumes.

A revision's spec names them (`secret_files`: a file path -> SECRET:VERSION, `volumes` and
`volume_mounts`); an instance gets `Mounts`, the same with the secrets' values read when it
starts, which the runtime makes visible to that instance only (runtime/sandbox.py, podman).
The standard library only: runtime/base.py imports this, and homerun.runtime must import in
any interpreter.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import PurePosixPath

# Cloud Run refuses volumes there ("Disallowed paths").
DISALLOWED = (PurePosixPath("/dev"), PurePosixPath("/proc"), PurePosixPath("/sys"))


def mount_path(path: str) -> str:
    """An absolute path to mount at, as written (`/secrets/`) -> `/secrets`; ValueError
    saying what is wrong otherwise."""
    if not path.startswith("/"):
        raise ValueError(f"{path!r} is not an absolute path; write e.g. /secrets/api-key")
    if "," in path or "\0" in path:
        raise ValueError(f"{path!r}: a mount path may not hold ',' (it separates list items)")
    parts = path.split("/")
    if any(part in (".", "..") for part in parts):
        raise ValueError(f"{path!r}: '.' and '..' are not allowed in a mount path")
    clean = PurePosixPath(path)
    if clean == PurePosixPath("/"):
        raise ValueError("a volume cannot be mounted at / (it would hide the whole system)")
    for forbidden in DISALLOWED:
        if clean == forbidden or forbidden in clean.parents:
            raise ValueError(
                f"{path}: Cloud Run does not mount volumes at /dev, /proc, /sys or under them"
            )
    return str(clean)


def secret_folder(file_path: str) -> str:
    """The folder a secret file's volume is mounted at: `/secrets/api-key` -> `/secrets`."""
    folder = PurePosixPath(file_path).parent
    if folder == PurePosixPath("/"):
        raise ValueError(
            f"{file_path}: a secret file is mounted with its folder, which cannot be /; "
            f"put it in a folder of its own, e.g. /secrets{file_path}"
        )
    return str(folder)


def check_mount_points(points: Iterable[tuple[str, str]]) -> None:
    """(mount point, what is mounted there): ValueError when one is inside another (the outer
    volume would hide the inner one's folder)."""
    listed = sorted(points)
    for index, (outer, outer_what) in enumerate(listed):
        for inner, inner_what in listed[index + 1 :]:
            if inner == outer:
                raise ValueError(
                    f"{outer_what} and {inner_what} are both mounted at {outer}; give each a "
                    "path of its own"
                )
            if PurePosixPath(outer) in PurePosixPath(inner).parents:
                raise ValueError(
                    f"{inner_what} at {inner} is inside {outer_what} at {outer}: mount points "
                    "cannot nest; choose another path for one of them"
                )


def secrets_by_folder(files: Mapping[str, str]) -> dict[str, dict[str, str]]:
    """file path -> secret name, grouped: folder -> {file name: secret}."""
    folders: dict[str, dict[str, str]] = {}
    for path, secret in files.items():
        pure = PurePosixPath(path)
        folders.setdefault(str(pure.parent), {})[pure.name] = secret
    return folders


@dataclass(frozen=True)
class SecretFile:
    """A secret version's value as a read-only file at `path` (its folder holds only such
    files)."""

    path: str
    data: bytes = b""

    def __repr__(self) -> str:  # never the value, in a traceback or a log
        return f"SecretFile({self.path!r}, {len(self.data)} bytes)"


@dataclass(frozen=True)
class MemoryMount:
    """An empty in-memory filesystem at `path`, at most `size_bytes` (None: no limit of its
    own; the instance's memory limit holds)."""

    path: str
    size_bytes: int | None = None


@dataclass(frozen=True)
class Mounts:
    """What an instance sees besides the revision's files: secret files and in-memory volumes."""

    secret_files: tuple[SecretFile, ...] = ()
    memory: tuple[MemoryMount, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.secret_files or self.memory)

    def secret_folders(self) -> dict[str, list[SecretFile]]:
        """folder -> the secret files in it, each folder one mount."""
        folders: dict[str, list[SecretFile]] = {}
        for file in self.secret_files:
            folders.setdefault(str(PurePosixPath(file.path).parent), []).append(file)
        return folders

    def with_secret_values(self, values: Mapping[str, bytes]) -> Mounts:
        """The same mounts with some files' contents replaced (a new `latest` version)."""
        return replace(
            self,
            secret_files=tuple(
                SecretFile(file.path, values.get(file.path, file.data))
                for file in self.secret_files
            ),
        )

    def describe(self) -> str:
        """For errors and describe, never with a value."""
        pieces = [f"secret file {file.path}" for file in self.secret_files]
        pieces += [f"in-memory volume at {mount.path}" for mount in self.memory]
        return ", ".join(pieces)


NO_MOUNTS = Mounts()


def sandbox_needed(why_not: str) -> str:
    """The error of a deploy whose process instances would have mounts and no sandbox."""
    return (
        "secret files and volumes are mounted in each instance's own view of the filesystem, "
        f"which needs the sandbox, and {why_not}. Turn it on (`sandbox: on` in "
        "HOMERUN_HOME/config.yaml, bubblewrap installed, then restart `homerun up`), or read "
        "the secret as an env var instead (--set-secrets ENV=SECRET:VERSION)"
    )
