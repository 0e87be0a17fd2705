"""The Python a Dockerfile asks for (`FROM python:3.12-slim`), and the interpreters on this
machine that can stand in for it: the default one, pyenv's, and pythonX.Y on the PATH."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

# python:3.12-slim, python:3.12.4-bookworm, python:3-alpine, docker.io/library/python:3.8
_VERSION_TAG = re.compile(r"^(?P<version>\d+(?:\.\d+){0,2})(?:[-.].*)?$")
_PYTHON_BINARY = re.compile(r"^python(?P<version>\d+\.\d+)$")
_PYENV_VERSION = re.compile(r"^(?P<version>\d+\.\d+\.\d+)$")


@dataclass(frozen=True)
class PythonOnMachine:
    executable: str
    version: str  # "3.12" or "3.12.1" when known
    where: str  # "pyenv", "PATH"


def requested_version(base_image: str) -> str | None:
    """ "3.12" for python:3.12-slim, "3" for python:3, None for python or python:latest (any
    Python will do)."""
    name = base_image.split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    if ":" not in last:
        return None
    match = _VERSION_TAG.match(last.split(":", 1)[1])
    return match.group("version") if match else None


def matches(version: str, requested: str) -> bool:
    """3.12.1 is a 3.12 and a 3; 3.1 is no 3.12."""
    have, want = version.split("."), requested.split(".")
    return have[: len(want)] == want


def pythons_on_machine(environ: Mapping[str, str]) -> list[PythonOnMachine]:
    """pyenv's versions (PYENV_ROOT, else ~/.pyenv), then pythonX.Y on the PATH."""
    found: list[PythonOnMachine] = []
    roots = [environ.get("PYENV_ROOT", ""), str(Path(environ.get("HOME", "~")) / ".pyenv")]
    for root in dict.fromkeys(root for root in roots if root):
        versions = Path(root) / "versions"
        if not versions.is_dir():
            continue
        for folder in sorted(versions.iterdir(), key=lambda p: _numbers(p.name)):
            match = _PYENV_VERSION.match(folder.name)
            if match is None:
                continue
            short = ".".join(folder.name.split(".")[:2])
            executable = folder / "bin" / f"python{short}"
            if os.access(executable, os.X_OK):
                found.append(PythonOnMachine(str(executable), folder.name, "pyenv"))
    for entry in environ.get("PATH", "").split(os.pathsep):
        if not entry or "/.pyenv/shims" in entry:
            continue  # pyenv's shims pick a version by the folder they run in
        for path, version in _binaries(Path(entry)):
            found.append(PythonOnMachine(str(path), version, "PATH"))
    return found


def pick(
    requested: str, default_version: str, machine: Iterable[PythonOnMachine]
) -> PythonOnMachine | None:
    """The interpreter for `requested`: None when the default one matches (it is used, as
    always), else the newest matching one found."""
    if matches(default_version, requested):
        return None
    candidates = [python for python in machine if matches(python.version, requested)]
    if not candidates:
        raise LookupError(requested)
    return max(candidates, key=lambda python: _numbers(python.version))


def pick_in_range(
    specifier: SpecifierSet, default_version: str, machine: Iterable[PythonOnMachine]
) -> PythonOnMachine | None:
    """The newest Python of the machine in `specifier` (requires-python): None when it is
    the default one; LookupError when none is."""
    default = PythonOnMachine("", default_version, "default")
    candidates = [python for python in [default, *machine] if _contains(specifier, python.version)]
    if not candidates:
        raise LookupError(str(specifier))
    newest = max(candidates, key=lambda python: _numbers(python.version))
    if _numbers(newest.version) == _numbers(default_version):
        return None
    return newest


def range_is_older(specifier: SpecifierSet, version: str) -> bool:
    """Whether every Python in `specifier` is older than `version`'s X.Y (<3.9 against 3.11),
    judged on the X.Y releases there are or may be (2.7, 3.0 ... 3.40)."""
    releases = ["2.7", *(f"3.{minor}" for minor in range(41))]
    inside = [release for release in releases if _contains(specifier, release)]
    current = _numbers(version)[:2]
    return bool(inside) and all(_numbers(release) < current for release in inside)


def releases_in_range(specifier: SpecifierSet) -> list[str]:
    """The X.Y releases (3.0 ... 3.40) inside `specifier`, for advice on what to install."""
    return [f"3.{minor}" for minor in range(41) if _contains(specifier, f"3.{minor}")]


def _contains(specifier: SpecifierSet, version: str) -> bool:
    """A full version (3.12.1) is tested as it is; an X.Y (python3.9 on the PATH, a release)
    stands for its patch releases, so 3.9 is in >=3.9.2 (tested as 3.9.0 and 3.9.99)."""
    exact = [version] if version.count(".") >= 2 else [f"{version}.0", f"{version}.99"]
    try:
        return any(specifier.contains(Version(each), prereleases=True) for each in exact)
    except InvalidVersion:
        return False


def older(asked: str, version: str) -> bool:
    """Whether `asked` (3.8) names an older Python than `version` (3.11.7)."""
    asked_numbers = _numbers(asked)
    return _numbers(version)[: len(asked_numbers)] > asked_numbers


def _binaries(folder: Path) -> list[tuple[Path, str]]:
    """pythonX.Y executables in `folder`, with their X.Y."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    found = []
    for entry in entries:
        match = _PYTHON_BINARY.match(entry.name)
        if match and entry.is_file() and os.access(entry, os.X_OK):
            found.append((entry, match.group("version")))
    return found


def _numbers(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))
