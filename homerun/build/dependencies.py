"""Decide what pip installs for a revision, and fingerprint it for the virtualenv cache.

Where the dependencies come from, first found wins:

1. the Dockerfile's `RUN pip install …` lines, when the Dockerfile is honoured and has any:
   with a Dockerfile, Cloud Run builds the Dockerfile and nothing else, so a requirements.txt
   it does not mention is not part of the image, and `pip install -r requirements.txt gunicorn`
   must install gunicorn too;
2. requirements.txt;
3. pyproject.toml's [project].dependencies (read with tomllib; the project itself is not
   installed: the app runs from its folder, like a requirements.txt app);
4. with a default entrypoint, the framework that was detected (flask, fastapi, django...).

With a default entrypoint, its server (gunicorn or uvicorn) is added when not listed, as the
buildpack does for gunicorn; a function gets functions-framework when it is not listed, as the
functions buildpack does.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tomllib
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from homerun.build._pip import INSTALL_OPTIONS_WITH_VALUE
from homerun.build.dockerfile import Dockerfile
from homerun.build.entrypoint import DefaultApp
from homerun.build.function import PACKAGE as FUNCTIONS_FRAMEWORK
from homerun.build.reach import (
    LOCATION_OPTIONS,
    REQUIREMENT_FILE_OPTIONS,
    confine,
    refuse_options,
)
from homerun.build.source import SKIPPED_NAMES, Layout
from homerun.errors import BuildError

# Options that matter for an image's size or its build cache, not for a virtualenv: dropped.
# (pip's cache is the build's own: build/venv.py.)
DROPPED_OPTIONS = frozenset({"--no-cache-dir", "--root-user-action", "--cache-dir"})
_FILE_OPTIONS = REQUIREMENT_FILE_OPTIONS
# Options whose value is a path in the image when it starts with /, mapped into the rootfs.
_CONTAINER_PATH_OPTIONS = _FILE_OPTIONS | {"-f", "--find-links"}
_NAME = re.compile(r"^\s*([A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)")


@dataclass(frozen=True)
class PipStep:
    """One `pip install ARGUMENTS`, run with `cwd` as the working directory."""

    arguments: tuple[str, ...]
    cwd: Path
    # The folder the step reads (the copied source, or the Dockerfile's rootfs): everything
    # its arguments and requirement files name is inside (reach.py); None: `cwd`.
    context: Path | None = None
    # Local project folders it builds, in place (reach.py).
    projects: tuple[Path, ...] = ()

    @property
    def reads(self) -> Path:
        return self.context or self.cwd


@dataclass(frozen=True)
class InstallPlan:
    origin: str  # where the list came from, for the build output
    steps: tuple[PipStep, ...]
    names: frozenset[str]  # canonical names of what is listed, where they can be read

    @property
    def empty(self) -> bool:
        return not self.steps


def canonical_name(name: str) -> str:
    """PEP 503 normalization: Flask_Login and flask.login are the same project."""
    return re.sub(r"[-_.]+", "-", name).lower()


def plan_dependencies(
    *,
    source: Path,
    layout: Layout,
    dockerfile: Dockerfile | None,
    default_app: DefaultApp | None,
    output: Callable[[str], None],
    function: bool = False,
) -> InstallPlan:
    plan = (
        _from_dockerfile(dockerfile, layout, output)
        or _from_requirements(source, layout)
        or _from_pyproject(source, layout)
        or _from_default_app(default_app, layout)
        or InstallPlan(origin="nothing to install", steps=(), names=frozenset())
    )
    if default_app is not None and canonical_name(default_app.server) not in plan.names:
        plan = _with_package(plan, default_app.server, "the default entrypoint's server", layout)
    if function and FUNCTIONS_FRAMEWORK not in plan.names:
        plan = _with_package(plan, FUNCTIONS_FRAMEWORK, "it serves the function", layout)
    return plan


def _with_package(plan: InstallPlan, package: str, why: str, layout: Layout) -> InstallPlan:
    if not plan.steps:
        steps: tuple[PipStep, ...] = (PipStep((package,), layout.cwd, _context(layout)),)
    else:
        # Into the last pip run, so pip resolves it together with everything else.
        last = plan.steps[-1]
        steps = (*plan.steps[:-1], replace(last, arguments=(*last.arguments, package)))
    return InstallPlan(
        origin=f"{plan.origin} + {package} ({why})",
        steps=steps,
        names=plan.names | {package},
    )


def _from_dockerfile(
    dockerfile: Dockerfile | None, layout: Layout, output: Callable[[str], None]
) -> InstallPlan | None:
    if dockerfile is None or not dockerfile.pip_installs:
        return None
    steps: list[PipStep] = []
    names: set[str] = set()
    lines: list[str] = []
    for install in dockerfile.pip_installs:
        cwd = layout.container_path(install.workdir)
        arguments = _localize(install.arguments, cwd, layout, output, install.line)
        requirements = _requirements(arguments)
        if requirements == ["pip"] and not _has_files(arguments):
            output(
                f"skipping `pip install {' '.join(install.arguments)}` (line "
                f"{install.line}): the virtualenv comes with its own pip"
            )
            continue
        context = _context(layout)
        reach = confine(
            arguments, cwd=cwd, context=context, where=f"{dockerfile.path}:{install.line}"
        )
        steps.append(PipStep(tuple(arguments), cwd, context, reach.projects))
        names.update(_names_of(arguments, cwd))
        lines.append(str(install.line))
    if not steps:
        return None
    plural = "s" if len(set(lines)) > 1 else ""
    origin = f"Dockerfile RUN pip install (line{plural} {', '.join(dict.fromkeys(lines))})"
    return InstallPlan(origin=origin, steps=tuple(steps), names=frozenset(names))


def _localize(
    arguments: Sequence[str], cwd: Path, layout: Layout, output: Callable[[str], None], line: int
) -> list[str]:
    """pip arguments as they run on the host: container paths mapped into the rootfs,
    image-only options dropped, editable installs made regular (a cached virtualenv is
    shared by revisions, so it must not point into one revision's folder)."""
    localized: list[str] = []
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        option, has_inline, inline = argument.partition("=")
        if option in DROPPED_OPTIONS:
            if option in INSTALL_OPTIONS_WITH_VALUE and not has_inline:
                index += 1
            index += 1
            continue
        if option in ("-e", "--editable"):
            target = inline if has_inline else " ".join(arguments[index + 1 : index + 2])
            output(
                f"line {line}: installing {target} as a regular package (-e dropped: "
                "cached virtualenvs are shared by revisions)"
            )
            if has_inline:
                localized.append(_container_path(inline, layout))
            index += 1
            continue
        if argument.startswith("-"):
            takes_value = option in INSTALL_OPTIONS_WITH_VALUE and not has_inline
            if takes_value and index + 1 < len(arguments):
                value = arguments[index + 1]
                if option in _CONTAINER_PATH_OPTIONS:
                    value = _container_path(value, layout)
                localized.extend((argument, value))
                index += 2
                continue
            if has_inline and option in _CONTAINER_PATH_OPTIONS:
                argument = f"{option}={_container_path(inline, layout)}"
            localized.append(argument)
        else:
            localized.append(_container_path(argument, layout))
        index += 1
    return localized


def _container_path(value: str, layout: Layout) -> str:
    """/app/requirements.txt -> <rootfs>/app/requirements.txt, when the rootfs has it."""
    if value.startswith("/") and layout.rootfs is not None:
        mapped = layout.container_path(value)
        if mapped.exists():
            return str(mapped)
    return value


def _context(layout: Layout) -> Path:
    """The folder a step run in the layout reads: the image's rootfs, or the copied source."""
    return layout.rootfs or layout.cwd


def _from_requirements(source: Path, layout: Layout) -> InstallPlan | None:
    for folder in dict.fromkeys((layout.cwd, source)):
        path = folder / "requirements.txt"
        if path.is_file():
            arguments = ("-r", str(path))
            context = _context(layout) if folder == layout.cwd else source
            reach = confine(arguments, cwd=folder, context=context, where=str(path))
            return InstallPlan(
                origin="requirements.txt",
                steps=(PipStep(arguments, folder, context, reach.projects),),
                names=frozenset(_names_of(arguments, folder)),
            )
    return None


def _from_pyproject(source: Path, layout: Layout) -> InstallPlan | None:
    for folder in dict.fromkeys((layout.cwd, source)):
        path = folder / "pyproject.toml"
        if not path.is_file():
            continue
        try:
            document = tomllib.loads(path.read_text())
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
            raise BuildError(
                f"{path}: not valid TOML ({error}); fix it, or list the "
                "dependencies in requirements.txt"
            ) from error
        project = document.get("project")
        if not isinstance(project, dict):
            return None
        if "dependencies" in project.get("dynamic", []):
            raise BuildError(
                f"{path}: [project].dependencies is dynamic, so homerun cannot "
                "read it without building the project; list the dependencies in "
                "requirements.txt or in [project].dependencies"
            )
        dependencies = project.get("dependencies", [])
        if not isinstance(dependencies, list) or not all(
            isinstance(item, str) for item in dependencies
        ):
            raise BuildError(f"{path}: [project].dependencies must be a list of strings")
        context = _context(layout) if folder == layout.cwd else source
        origins = _origins(path, dependencies)
        refuse_options(dependencies, origins)
        projects: list[Path] = []
        for dependency, origin in zip(dependencies, origins, strict=True):
            reach = confine((dependency,), cwd=folder, context=context, where=origin)
            projects.extend(reach.projects)
        steps = (
            (PipStep(tuple(dependencies), folder, context, tuple(projects)),)
            if dependencies
            else ()
        )
        return InstallPlan(
            origin="pyproject.toml [project].dependencies",
            steps=steps,
            names=frozenset(_names_of(dependencies, folder)),
        )
    return None


def _origins(path: Path, dependencies: Sequence[str]) -> list[str]:
    """`pyproject.toml:LINE` of each dependency: the first line holding it as a string."""
    lines = path.read_text().splitlines()
    origins = []
    for dependency in dependencies:
        quoted = (f'"{dependency}"', f"'{dependency}'")
        number = next(
            (
                index
                for index, line in enumerate(lines, start=1)
                if any(text in line for text in quoted)
            ),
            None,
        )
        origins.append(
            f"{path}:{number}" if number else f"{path}: [project].dependencies {dependency!r}"
        )
    return origins


def _from_default_app(default_app: DefaultApp | None, layout: Layout) -> InstallPlan | None:
    if default_app is None or not default_app.packages:
        return None
    return InstallPlan(
        origin=f"default for {default_app.framework.name if default_app.framework else 'app'}",
        steps=(PipStep(default_app.packages, layout.cwd, _context(layout)),),
        names=frozenset(canonical_name(name) for name in default_app.packages),
    )


# Reading requirement names


def _requirements(arguments: Sequence[str]) -> list[str]:
    """The requirement specifiers among pip arguments (not options, not option values)."""
    found: list[str] = []
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        if argument.startswith("-"):
            if argument in INSTALL_OPTIONS_WITH_VALUE:
                index += 1
        else:
            found.append(argument)
        index += 1
    return found


def _has_files(arguments: Sequence[str]) -> bool:
    return any(
        argument.partition("=")[0] in _FILE_OPTIONS | {"-e", "--editable"} for argument in arguments
    )


def _names_of(arguments: Iterable[str], cwd: Path) -> set[str]:
    """Canonical project names listed by pip arguments and the files they point at."""
    names: set[str] = set()
    arguments = list(arguments)
    for requirement in _requirements(arguments):
        name = _name_of(requirement)
        if name:
            names.add(name)
    for path in _requirement_files(arguments, cwd):
        names |= _names_in_file(path, set())
    return names


def _name_of(requirement: str) -> str | None:
    if requirement.startswith((".", "/")) or "://" in requirement.split("@")[0]:
        return None
    match = _NAME.match(requirement)
    return canonical_name(match.group(1)) if match else None


def _requirement_files(arguments: Sequence[str], cwd: Path) -> list[Path]:
    files: list[Path] = []
    for index, argument in enumerate(arguments):
        option, has_inline, inline = argument.partition("=")
        if option in ("-r", "--requirement"):
            value = (
                inline
                if has_inline
                else (arguments[index + 1] if index + 1 < len(arguments) else "")
            )
            if value:
                files.append(cwd / value)
    return files


def _names_in_file(path: Path, seen: set[Path]) -> set[str]:
    if path in seen or not path.is_file():
        return set()
    seen.add(path)
    names: set[str] = set()
    for line in _logical_lines(path):
        words = line.split()
        option, has_inline, inline = words[0].partition("=")
        if option in ("-r", "--requirement"):
            value = inline if has_inline else (words[1] if len(words) > 1 else "")
            names |= _names_in_file(path.parent / value, seen)
        elif option.startswith("-r") and len(option) > 2:  # -rother.txt
            names |= _names_in_file(path.parent / words[0][2:], seen)
        elif not line.startswith("-"):
            name = _name_of(line)
            if name:
                names.add(name)
    return names


def _logical_lines(path: Path) -> list[str]:
    """A requirements file's lines without comments, continuations joined."""
    text = path.read_text(errors="replace").replace("\\\n", "")
    lines = []
    for line in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        if line:
            lines.append(line)
    return lines


# Fingerprint


def fingerprint(plan: InstallPlan) -> str:
    """Everything the plan installs, as text: arguments and the contents of the files and
    folders they name. Two plans with the same fingerprint build the same virtualenv."""
    described = []
    for step in plan.steps:
        arguments: list[str] = []
        editable = False
        for index, argument in enumerate(step.arguments):
            option, has_inline, inline = argument.partition("=")
            previous = step.arguments[index - 1] if index else ""
            if option in ("-e", "--editable") or previous in ("-e", "--editable"):
                editable = True
            # Paths differ from one artifact to the next; contents are what counts.
            # A requirement file pip fetches (`-r https://…`) by its URL: two URLs never
            # share a virtualenv.
            if previous in _FILE_OPTIONS and "://" not in argument:
                arguments.append(f"file:{_file_digest(step.cwd / argument, set(), step.cwd)}")
            elif option in _FILE_OPTIONS and has_inline and "://" not in inline:
                digest = _file_digest(step.cwd / inline, set(), step.cwd)
                arguments.append(f"{option}=file:{digest}")
            elif previous in LOCATION_OPTIONS:
                arguments.append(_location_digest(argument, step.cwd))
            elif option in LOCATION_OPTIONS and has_inline:
                arguments.append(f"{option}={_location_digest(inline, step.cwd)}")
            elif (
                not argument.startswith("-")
                and _looks_local(argument)
                and (step.cwd / argument).exists()
            ):
                arguments.append(f"path:{_tree_digest(step.cwd / argument)}")
            else:
                arguments.append(argument)
        if editable or any(
            _mentions_editable(path) for path in _requirement_files(step.arguments, step.cwd)
        ):
            # An editable install points into a folder: only that folder's revision may use it.
            arguments.append(f"editable-in:{step.cwd}")
        described.append(arguments)
    return json.dumps(described)


def _looks_local(argument: str) -> bool:
    return argument.startswith((".", "/")) or argument.endswith((".whl", ".tar.gz", ".zip"))


def _mentions_editable(path: Path) -> bool:
    try:
        return any(line.startswith(("-e", "--editable")) for line in _logical_lines(path))
    except OSError:
        return False


def _file_digest(path: Path, seen: set[Path], cwd: Path) -> str:
    """A requirement file's digest, covering the files it includes (-r, -c) and the local
    folders it installs from."""
    if path in seen:
        return "cycle"
    seen.add(path)
    try:
        content = path.read_bytes()
    except OSError:
        return "missing"  # pip will say so, with its own message
    digest = hashlib.sha256(content)
    for line in _logical_lines(path):
        words = line.split()
        option, has_inline, inline = words[0].partition("=")
        value = inline if has_inline else (words[1] if len(words) > 1 else "")
        if option in _FILE_OPTIONS:
            digest.update(_file_digest(path.parent / value, seen, cwd).encode())
        elif option in LOCATION_OPTIONS:
            # A relative --find-links is read next to the file when it is there (pip).
            beside = path.parent if (path.parent / value).exists() else cwd
            digest.update(_location_digest(value, beside).encode())
        else:
            candidate = words[-1] if option in ("-e", "--editable") else words[0]
            if _looks_local(candidate) and (cwd / candidate).exists():
                digest.update(_tree_digest(cwd / candidate).encode())
    return digest.hexdigest()


def _location_digest(value: str, cwd: Path) -> str:
    """Where packages come from: a URL as it is, a local folder or file (--find-links ./wheels,
    file:///…/simple) by its contents, or a deploy that brings other wheels under the same
    name would get the virtualenv built from the first one's."""
    path = value
    if value.startswith("file:"):
        path = urllib.parse.unquote(urllib.parse.urlsplit(value).path)
    elif "://" in value:
        return value
    local = cwd / path
    if not local.exists():
        return value
    return f"local:{_tree_digest(local)}"


def _tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
        return digest.hexdigest()
    for folder, subfolders, files in os.walk(path):
        subfolders[:] = sorted(
            name
            for name in subfolders
            if name not in SKIPPED_NAMES and not name.endswith(".egg-info")
        )
        for name in sorted(files):
            if name.endswith((".pyc", ".pyo")):
                continue
            file = Path(folder) / name
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
            try:
                digest.update(file.read_bytes())
            except OSError:
                continue
    return digest.hexdigest()
