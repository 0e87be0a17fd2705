"""Which Python a source folder asks for, and what asks: a Dockerfile's `FROM python:X.Y`,
GOOGLE_PYTHON_VERSION, `.python-version`, `runtime.txt` or pyproject.toml's `requires-python`.

Precedence, first found wins:
1. A Dockerfile in use: its FROM alone, as Cloud Run builds a Dockerfile without buildpacks
   (`FROM python` with no version: any Python will do).
2. GOOGLE_PYTHON_VERSION, then GOOGLE_RUNTIME_VERSION (the deploy's env vars, then a
   buildpacks project.toml), which Google's Python buildpack reads before the file.
3. `.python-version`, the file Google's buildpack and pyenv read.
4. `runtime.txt` (`python-3.12.4`), Heroku's and older buildpacks' file.
5. `requires-python` in pyproject.toml's `[project]`: a range, so it comes last.
(`--base-image python312` is a flag and wins over all of them; the builder applies it.)
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from packaging.specifiers import InvalidSpecifier, SpecifierSet

from homerun.build.dockerfile import Dockerfile
from homerun.build.pythons import requested_version
from homerun.errors import BuildError

VERSION_VARIABLES = ("GOOGLE_PYTHON_VERSION", "GOOGLE_RUNTIME_VERSION")
VERSION_FILE = ".python-version"
RUNTIME_FILE = "runtime.txt"
PYPROJECT = "pyproject.toml"

_VERSION = re.compile(r"^\d+(?:\.\d+){0,2}$")
# GOOGLE_PYTHON_VERSION="3.10.x", as Google's buildpack docs write it.
_WILDCARD_TAIL = re.compile(r"(?:\.[x*])+$")
_RUNTIME = re.compile(r"^python-(?P<version>\d+\.\d+(?:\.\d+)?)$")


@dataclass(frozen=True)
class PythonRequest:
    """One source's ask: a version prefix ("3.12", "3.12.4"), the machine's default
    ("system", pyenv's word), or a range (requires-python)."""

    asked: str  # "3.12", "system", ">=3.10,<3.13"
    where: str  # "/src/.python-version:2", "GOOGLE_PYTHON_VERSION (--set-env-vars)"
    label: str  # for the build output: "FROM python:3.12-slim (line 1)", ".python-version (line 2)"
    said: str = ""  # what the file says when the message should quote it: "FROM python:3.12"
    specifier: SpecifierSet | None = field(default=None, compare=False)
    from_dockerfile: bool = False

    @property
    def any_python(self) -> bool:
        return self.asked in ("", "system")


@dataclass(frozen=True)
class RequestFound:
    """The request that decides (None: nothing asks), and the sources present but not read
    because one before them decides."""

    request: PythonRequest | None
    not_read: tuple[str, ...]


def read_request(
    source: Path,
    dockerfile: Dockerfile | None,
    user_env: Mapping[str, str],
    project_env: Mapping[str, str],
) -> RequestFound:
    """The Python `source` asks for; BuildError naming the file and line when what asks for
    it cannot be read."""
    present = _present(source, user_env, project_env)
    if dockerfile is not None:
        asked = requested_version(dockerfile.base_image)
        from_image = PythonRequest(
            asked=asked or "",
            where=f"{dockerfile.path}:{dockerfile.base_line}",
            label=f"FROM {dockerfile.base_image} (line {dockerfile.base_line})",
            said=f"FROM {dockerfile.base_image}",
            from_dockerfile=True,
        )
        return RequestFound(from_image, tuple(present))
    for index, name in enumerate(present):
        request = _read(source, name, user_env, project_env)
        if request is not None:
            return RequestFound(request, tuple(present[index + 1 :]))
    return RequestFound(None, ())


def _present(
    source: Path, user_env: Mapping[str, str], project_env: Mapping[str, str]
) -> list[str]:
    """The sources of a Python version this build has, in precedence order."""
    found = [
        name for name in VERSION_VARIABLES if (user_env.get(name) or project_env.get(name, ""))
    ]
    found += [name for name in (VERSION_FILE, RUNTIME_FILE) if (source / name).is_file()]
    pyproject = source / PYPROJECT
    # Read as TOML only when nothing before it decides: a pyproject.toml that pip never reads
    # (requirements.txt is there) should not fail the build.
    if pyproject.is_file() and "requires-python" in pyproject.read_bytes().decode(errors="replace"):
        found.append(f"{PYPROJECT} requires-python")
    return found


def _read(
    source: Path, name: str, user_env: Mapping[str, str], project_env: Mapping[str, str]
) -> PythonRequest | None:
    if name in VERSION_VARIABLES:
        return _from_variable(name, user_env, project_env)
    if name == VERSION_FILE:
        return _from_version_file(source / VERSION_FILE)
    if name == RUNTIME_FILE:
        return _from_runtime_file(source / RUNTIME_FILE)
    return _from_pyproject(source / PYPROJECT)


def _from_variable(
    name: str, user_env: Mapping[str, str], project_env: Mapping[str, str]
) -> PythonRequest:
    value = (user_env.get(name) or project_env.get(name, "")).strip()
    where = f"{name} ({'the env vars' if user_env.get(name) else 'project.toml'})"
    version = _WILDCARD_TAIL.sub("", value)
    if not _VERSION.match(version):
        raise BuildError(
            f"{where}: {value!r} is not a Python version; give X.Y or X.Y.Z (3.12, 3.12.4, "
            "or 3.12.x as Google's buildpack writes it)"
        )
    return PythonRequest(asked=version, where=where, label=f"{name}={value}")


def _from_version_file(path: Path) -> PythonRequest:
    """pyenv's reading: the first word of each line, empty lines and `#` comments skipped;
    the first version is the one `python` runs, the others are extra ones pyenv puts on the
    PATH, which a revision does not need."""
    for number, line in enumerate(_lines(path), start=1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        version = words[0]
        if version != "system" and not _VERSION.match(version):
            raise BuildError(
                f"{path}:{number}: {version!r} is not a Python version homerun can run: "
                "write X.Y or X.Y.Z (3.12, 3.12.4) or `system`, one per line; pyenv's "
                "PyPy, conda and virtualenv names have no stand-in here"
            )
        return PythonRequest(
            asked=version, where=f"{path}:{number}", label=f"{path.name} (line {number})"
        )
    raise BuildError(
        f"{path}: names no Python version (only empty or # lines); write one such as 3.12, "
        "or remove the file"
    )


def _from_runtime_file(path: Path) -> PythonRequest:
    for number, line in enumerate(_lines(path), start=1):
        text = line.strip()
        if not text:
            continue
        match = _RUNTIME.match(text)
        if match is None:
            raise BuildError(
                f"{path}:{number}: {text!r} is not a runtime.txt Python version; write "
                "python-X.Y or python-X.Y.Z (python-3.12, python-3.12.4) on the first line"
            )
        return PythonRequest(
            asked=match.group("version"),
            where=f"{path}:{number}",
            label=f"{path.name} (line {number}: {text})",
        )
    raise BuildError(f"{path} is empty; write python-X.Y (python-3.12) in it, or remove it")


def _from_pyproject(path: Path) -> PythonRequest | None:
    project = _project_table(path)
    if "requires-python" not in project:
        return None  # the words were elsewhere: a comment, another table
    value = project["requires-python"]
    number = _requires_python_line(path)
    where = f"{path}:{number}"
    if not isinstance(value, str):
        raise BuildError(f'{where}: [project].requires-python must be a string such as ">=3.10"')
    try:
        specifier = SpecifierSet(value)
    except InvalidSpecifier as error:
        raise BuildError(
            f"{where}: requires-python = {value!r} is not a version specifier ({error}); "
            'write one as PEP 440 does, e.g. ">=3.10,<3.13"'
        ) from None
    return PythonRequest(
        asked=str(value).strip(),
        where=where,
        label=f"{path.name} requires-python (line {number}: {value})",
        specifier=specifier,
    )


def _requires_python_line(path: Path) -> int:
    """The line of [project]'s `requires-python`, for messages."""
    section = ""
    for number, line in enumerate(_lines(path), start=1):
        stripped = line.strip()
        if stripped.startswith("["):
            section = stripped
        elif section == "[project]" and stripped.startswith("requires-python"):
            return number
    return 1  # written as project.requires-python, or in an inline table


def _project_table(path: Path) -> dict[str, object]:
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise BuildError(f"{path}: not valid TOML ({error}); fix it") from None
    project = document.get("project")
    return project if isinstance(project, dict) else {}


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as error:
        raise BuildError(f"{path} is not UTF-8 text ({error}); save it as UTF-8") from None
