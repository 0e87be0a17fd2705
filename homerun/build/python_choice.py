"""The interpreter a build runs on, for the Python its source asks for (python_request.py):
the default one when it matches, else a matching one of the machine; never another version
in silence."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from homerun.build.interpreter import Interpreter, default_python, probe_interpreter
from homerun.build.python_request import PythonRequest
from homerun.build.pythons import (
    PythonOnMachine,
    older,
    pick,
    pick_in_range,
    range_is_older,
    releases_in_range,
)
from homerun.errors import BuildError


class PythonMissing(BuildError):
    """The Python asked for is not on this machine, and the default one cannot stand in."""


def choose_python(
    request: PythonRequest,
    default: Interpreter,
    machine: Sequence[PythonOnMachine],
    *,
    older_on_default: bool,
    output: Callable[[str], None],
) -> Interpreter:
    """The interpreter for `request`. A version this machine lacks that is older than the
    default one builds on the default when `older_on_default` (saying so: refusing would stop
    the seed's FROM python:3.8-slim on a machine with one Python); any other is
    PythonMissing, naming what there is and how to get the one asked for."""
    try:
        chosen = _matching(request, default, machine)
    except LookupError:
        if older_on_default and _is_older(request, default):
            output(_older_note(request, default))
            chosen = default
        else:
            raise PythonMissing(_refusal(request, default, machine)) from None
    where = "this machine's default" if chosen.executable == default_python() else ""
    output(
        f"{request.label}: Python {chosen.version} ({where or chosen.executable})"
        + (": it names no version, so any Python will do" if request.any_python else "")
    )
    return chosen


def _matching(
    request: PythonRequest, default: Interpreter, machine: Sequence[PythonOnMachine]
) -> Interpreter:
    if request.any_python:
        return default
    if request.specifier is not None:
        found = pick_in_range(request.specifier, default.version, machine)
    else:
        found = pick(request.asked, default.version, machine)
    return default if found is None else probe_interpreter(found.executable)


def _is_older(request: PythonRequest, default: Interpreter) -> bool:
    if request.specifier is not None:
        return range_is_older(request.specifier, default.version)
    return older(request.asked, default.version)


def _to_install(request: PythonRequest, default: Interpreter) -> str:
    """A version to name in `pyenv install X.Y`: the asked one, or for a range the release
    in it nearest the default Python."""
    if request.specifier is None:
        return request.asked
    releases = releases_in_range(request.specifier)
    if not releases:
        return "X.Y"
    newer = [release for release in releases if not older(release, default.version)]
    return newer[0] if newer else releases[-1]


def _asks(request: PythonRequest) -> str:
    """ "…/Dockerfile:1: FROM python:3.14-slim asks for Python 3.14" """
    said = f"{request.said} " if request.said else ""
    return f"{request.where}: {said}asks for Python {request.asked}"


def _container_way(request: PythonRequest, version: str) -> str:
    """How the container path gets this Python; true advice for a Dockerfile and without."""
    if request.from_dockerfile:
        return (
            "install podman and restart homerun (`homerun down`): it then builds the image "
            f"with podman, which needs {request.said.removeprefix('FROM ')} from a registry "
            "it can reach"
        )
    return (
        f"build an image instead: a Dockerfile with `FROM python:{version}-slim`, with podman "
        "installed (`scripts/setup containers`), is built by podman"
    )


def _older_note(request: PythonRequest, default: Interpreter) -> str:
    version = _to_install(request, default)
    if request.from_dockerfile:
        container = (
            "install podman (`scripts/setup containers`) and restart homerun (`homerun down`) "
            "to build the image with it"
        )
    else:
        container = _container_way(request, version)
    return (
        f"{_asks(request)}, which this machine does not have: building with its Python "
        f"{default.version} ({default.executable}), which is newer; pip may pick newer "
        f"releases of packages the requirements do not pin. For Python {version} itself: "
        f"`pyenv install {version}`, or {container}"
    )


def _refusal(
    request: PythonRequest, default: Interpreter, machine: Sequence[PythonOnMachine]
) -> str:
    versions = sorted(
        {python.version for python in machine} | {default.version},
        key=lambda version: tuple(int(part) for part in version.split(".") if part.isdigit()),
    )
    version = _to_install(request, default)
    change = "change FROM" if request.from_dockerfile else f"change {request.where}"
    return (
        f"{_asks(request)}, and this machine has none (it has {', '.join(versions)}); homerun "
        f"does not run it on another Python, where pip would pick other packages. Install "
        f"Python {version} (`pyenv install {version}`), or {change} to one of those "
        f"versions, or {_container_way(request, version)}"
    )
