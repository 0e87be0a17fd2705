"""Turn a source folder into an immutable revision artifact: code, virtualenv, what to run."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from homerun.build.artifact import Artifact
from homerun.build.dependencies import plan_dependencies
from homerun.build.dockerfile import HOW_TO_PROCEED, Dockerfile, parse
from homerun.build.engine_build import engine_build
from homerun.build.entrypoint import DEFAULT_THREADS, guess_server, resolve_entrypoint
from homerun.build.function import Function, build_env, find_function
from homerun.build.interpreter import Interpreter, probe_interpreter, python_for_base_image
from homerun.build.python_choice import PythonMissing, choose_python
from homerun.build.python_request import read_request
from homerun.build.pythons import pythons_on_machine
from homerun.build.source import (
    DEFAULT_MAX_SOURCE_BYTES,
    Layout,
    check_source,
    lay_out,
    scan_source,
)
from homerun.build.venv import ensure_venv
from homerun.errors import BuildError, DockerfileError
from homerun.model.engine import Engine
from homerun.readable import share_read

# Set by the platform for every instance; an image cannot choose them (Cloud Run's contract).
RESERVED_ENV = ("PORT",)
RESERVED_ENV_PREFIX = "K_"


def build(
    source: Path,
    dest: Path,
    *,
    command: list[str] | None,
    args: list[str] | None,
    user_env: dict[str, str],
    venv_cache: Path,
    output: Callable[[str], None],
    python: str | None = None,
    max_source_bytes: int = DEFAULT_MAX_SOURCE_BYTES,
    function: str | None = None,
    base_image: str | None = None,
    concurrency: int = DEFAULT_THREADS,
    engine: Engine | None = None,
) -> Artifact:
    """Build `source` into `dest` (which must not exist, or be empty). Blocking.

    `function` is `--function`'s target; `base_image` (`python312`) chooses the interpreter.
    Every line of progress, pip's output included, goes to `output` as it happens. On any
    failure `dest` is left as it was found and BuildError (or DockerfileError) says why.
    `concurrency` is the revision's --concurrency, the threads of a default gunicorn command.
    A Dockerfile outside the engine-less subset is built by `engine` when there is one.
    `base_image` wins over the Dockerfile's `FROM python:X.Y`.
    """
    source = check_source(Path(source))
    scan_source(source, max_source_bytes)
    refusal = _outside_subset(source)
    if engine is not None and refusal is not None:
        # "…/Dockerfile:4: `RUN apt-get install -y curl` is outside the Dockerfile subset…"
        why = str(refusal).replace(f"; {HOW_TO_PROCEED}", "")
        return _engine_build_into(engine, source, Path(dest), why, output)
    if base_image and python is None:
        python = python_for_base_image(base_image)
        output(f"--base-image {base_image}: {python} (the flag wins over any file)")
    dockerfile = _read_dockerfile(source, bypass=bool(command), output=output)
    interpreter = probe_interpreter(python)
    if python is None:
        found = read_request(
            source,
            dockerfile,
            user_env,
            build_env(_read_optional(source / "project.toml"), str(source / "project.toml")),
        )
        request = found.request
        if request is not None:
            for name in found.not_read:
                output(f"{name} is not read: {request.label} chooses the Python")
            try:
                interpreter = choose_python(
                    request,
                    interpreter,
                    pythons_on_machine(os.environ),
                    older_on_default=engine is None or not request.from_dockerfile,
                    output=output,
                )
            except PythonMissing:
                if engine is None or not request.from_dockerfile:
                    raise
                why = (
                    f"{request.said} asks for Python {request.asked}, which this machine "
                    "does not have"
                )
                return _engine_build_into(engine, source, Path(dest), why, output)
    output(f"building {source} with Python {interpreter.version} ({interpreter.executable})")
    if dockerfile is not None and dockerfile.exposed_ports:
        output(
            f"EXPOSE {' '.join(dockerfile.exposed_ports)}: informational; instances listen on $PORT"
        )
    dest = Path(dest).absolute()
    created = _claim(dest)
    try:
        return _build_into(
            source,
            dest,
            dockerfile,
            interpreter,
            command=command,
            args=args,
            user_env=user_env,
            venv_cache=Path(venv_cache),
            output=output,
            function_flag=function,
            concurrency=concurrency,
        )
    except BaseException:
        _discard(dest, created)
        raise


def _build_into(
    source: Path,
    dest: Path,
    dockerfile: Dockerfile | None,
    interpreter: Interpreter,
    *,
    command: Sequence[str] | None,
    args: Sequence[str] | None,
    user_env: Mapping[str, str],
    venv_cache: Path,
    output: Callable[[str], None],
    function_flag: str | None = None,
    concurrency: int,
) -> Artifact:
    layout = lay_out(source, dest, dockerfile, output)
    function = None
    if not command:
        function = find_function(
            flag=function_flag,
            user_env=user_env,
            project_env=build_env(
                _read_optional(source / "project.toml"), str(source / "project.toml")
            ),
            app_dir=layout.cwd,
        )
    entrypoint = resolve_entrypoint(
        command=command,
        args=args,
        user_env=user_env,
        procfile=_read_optional(source / "Procfile"),
        dockerfile=dockerfile,
        app_dir=layout.cwd,
        shown_as=source,
        function=function,
        concurrency=concurrency,
    )
    for note in entrypoint.notes:
        output(note)
    argv = _container_paths(list(entrypoint.argv), layout, output)
    output(f"entrypoint: {shlex.join(argv)} ({entrypoint.origin})")

    plan = plan_dependencies(
        source=source,
        layout=layout,
        dockerfile=dockerfile,
        default_app=entrypoint.default,
        output=output,
        function=function is not None,
    )
    output(f"dependencies: {plan.origin}")
    venv = ensure_venv(plan=plan, interpreter=interpreter, cache=venv_cache, output=output)

    artifact = Artifact(
        root=dest,
        cwd=layout.cwd,
        argv=argv,
        env=_environment(dockerfile, venv, output, function),
        venv=venv,
        entrypoint_origin=entrypoint.origin,
        server=guess_server(argv),
    )
    share_read(dest)  # the revision's own user reads it (readable.py)
    artifact.save()
    output(f"artifact ready: {dest}")
    return artifact


def _engine_build_into(
    engine: Engine, source: Path, dest: Path, why: str, output: Callable[[str], None]
) -> Artifact:
    dest = dest.absolute()
    created = _claim(dest)
    try:
        return engine_build(
            engine, source, dest, dockerfile=source / "Dockerfile", output=output, why=why
        )
    except BaseException:
        _discard(dest, created)
        raise


def _outside_subset(source: Path) -> DockerfileError | None:
    """Why the source's Dockerfile needs an engine; None when it has none or needs none."""
    path = source / "Dockerfile"
    if not path.is_file():
        return None
    try:
        parse(_read_text(path), str(path))
    except DockerfileError as error:
        return error
    return None


def _read_dockerfile(
    source: Path, *, bypass: bool, output: Callable[[str], None]
) -> Dockerfile | None:
    path = source / "Dockerfile"
    if not path.is_file():
        return None
    try:
        dockerfile = parse(_read_text(path), str(path))
    except DockerfileError as error:
        if not bypass:
            raise
        output(f"ignoring the Dockerfile because --command was given: {error}")
        return None
    return dockerfile


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise BuildError(f"{path} is not UTF-8 text ({error}); save it as UTF-8") from error


def _read_optional(path: Path) -> str | None:
    return _read_text(path) if path.is_file() else None


def _claim(dest: Path) -> bool:
    """Make sure dest can receive a build; True when this build created it."""
    if dest.exists():
        if not dest.is_dir() or any(dest.iterdir()):
            raise BuildError(
                f"artifact folder {dest} already exists and is not empty: "
                "every build needs a new folder (revisions are immutable)"
            )
        return False
    dest.mkdir(parents=True)
    return True


def _discard(dest: Path, created: bool) -> None:
    if created:
        shutil.rmtree(dest, ignore_errors=True)
        return
    for child in dest.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)


def _container_paths(argv: list[str], layout: Layout, output: Callable[[str], None]) -> list[str]:
    """`CMD ["python", "/app/main.py"]` names a file in the image: point at its copy."""
    if layout.rootfs is None:
        return argv
    mapped = []
    for argument in argv:
        if argument.startswith("/") and " " not in argument:
            copy = layout.container_path(argument)
            if copy.is_file():
                output(f"{argument} is {copy} here")
                argument = str(copy)
        mapped.append(argument)
    return mapped


def _environment(
    dockerfile: Dockerfile | None,
    venv: Path,
    output: Callable[[str], None],
    function: Function | None = None,
) -> dict[str, str]:
    # A function's FUNCTION_* variables are defaults, as the buildpack's launch env: the
    # user's env vars (applied later, over these) win.
    env: dict[str, str] = function.environment() if function else {}
    for name, value in dockerfile.env.items() if dockerfile else ():
        if name in RESERVED_ENV or name.startswith(RESERVED_ENV_PREFIX):
            output(f"ENV {name} ignored: PORT and K_* are set by the platform")
            continue
        env[name] = value
    rest = env.get("PATH") or _host_path()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{rest}"
    env["VIRTUAL_ENV"] = str(venv)
    return env


def _host_path() -> str:
    """This machine's PATH without homerun's own virtualenv, whose uvicorn or python must
    never stand in for the app's."""
    own = set()
    if sys.prefix != sys.base_prefix:
        own.add(str(Path(sys.prefix) / "bin"))
    if os.environ.get("VIRTUAL_ENV"):
        own.add(str(Path(os.environ["VIRTUAL_ENV"]) / "bin"))
    folders = [
        folder
        for folder in os.environ.get("PATH", os.defpath).split(os.pathsep)
        if folder and folder.rstrip("/") not in own
    ]
    return os.pathsep.join(folders) or os.defpath
