"""Decide what an instance executes, in the order Google's Python buildpack does.

--command/--args, then GOOGLE_ENTRYPOINT, then a function (`--function`, GOOGLE_FUNCTION_TARGET:
build/function.py), then a Procfile `web:` line, then the Dockerfile's ENTRYPOINT/CMD, then a
default read (with `ast`, never by importing user code) from main.py,
app.py or a Django project. Unlike the buildpack, an ASGI app (FastAPI, Starlette...) gets
uvicorn by default: under gunicorn's sync workers it would not answer at all.
"""

from __future__ import annotations

import ast
import posixpath
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from homerun.build.dockerfile import Dockerfile
from homerun.build.function import Function
from homerun.build.source import SKIPPED_NAMES
from homerun.errors import BuildError
from homerun.shellwords import WordError, split_words

SHELL = ("/bin/sh", "-c")
APP_FILES = ("main.py", "app.py")
SERVERS = ("gunicorn", "uvicorn")
# Cloud Run's own default --concurrency, for callers that have no revision (jobs).
DEFAULT_THREADS = 80
# The --threads of homerun's default gunicorn command, found again to fit a new concurrency.
_DEFAULT_THREADS_FLAG = re.compile(r"(?<= --workers 1 --threads )\d+(?= --timeout 0 )")


@dataclass(frozen=True)
class Framework:
    name: str  # as people write it: "FastAPI"
    interface: str  # "wsgi" | "asgi"
    package: str  # what pip installs when nothing lists it


FLASK = Framework("Flask", "wsgi", "flask")
BOTTLE = Framework("Bottle", "wsgi", "bottle")
FALCON = Framework("Falcon", "wsgi", "falcon")
FALCON_ASGI = Framework("Falcon", "asgi", "falcon")
PYRAMID = Framework("Pyramid", "wsgi", "pyramid")
DJANGO = Framework("Django", "wsgi", "django")
DJANGO_ASGI = Framework("Django", "asgi", "django")
FASTAPI = Framework("FastAPI", "asgi", "fastapi")
STARLETTE = Framework("Starlette", "asgi", "starlette")
QUART = Framework("Quart", "asgi", "quart")
LITESTAR = Framework("Litestar", "asgi", "litestar")
SANIC = Framework("Sanic", "asgi", "sanic")
BLACKSHEEP = Framework("BlackSheep", "asgi", "blacksheep")

# Qualified names of the callables that make an application object.
APP_CONSTRUCTORS: Mapping[str, Framework] = {
    "flask.Flask": FLASK,
    "flask.app.Flask": FLASK,
    "bottle.Bottle": BOTTLE,
    "bottle.default_app": BOTTLE,
    "falcon.App": FALCON,
    "falcon.API": FALCON,
    "falcon.app.App": FALCON,
    "falcon.asgi.App": FALCON_ASGI,
    "django.core.wsgi.get_wsgi_application": DJANGO,
    "django.core.asgi.get_asgi_application": DJANGO_ASGI,
    "fastapi.FastAPI": FASTAPI,
    "fastapi.applications.FastAPI": FASTAPI,
    "starlette.applications.Starlette": STARLETTE,
    "quart.Quart": QUART,
    "quart.app.Quart": QUART,
    "litestar.Litestar": LITESTAR,
    "litestar.app.Litestar": LITESTAR,
    "starlite.Starlite": Framework("Starlite", "asgi", "starlite"),
    "sanic.Sanic": SANIC,
    "blacksheep.Application": BLACKSHEEP,
    "blacksheep.server.Application": BLACKSHEEP,
}
# When `app` comes from a factory we cannot follow, the framework the file imports decides.
FRAMEWORK_MODULES: Mapping[str, Framework] = {
    "flask": FLASK,
    "bottle": BOTTLE,
    "falcon": FALCON,
    "pyramid": PYRAMID,
    "django": DJANGO,
    "fastapi": FASTAPI,
    "starlette": STARLETTE,
    "quart": QUART,
    "litestar": LITESTAR,
    "sanic": SANIC,
    "blacksheep": BLACKSHEEP,
}


@dataclass(frozen=True)
class DefaultApp:
    """An app found by reading the source, and how the platform would serve it."""

    interface: str  # "wsgi" | "asgi"
    framework: Framework | None  # None: an `app` we could not place (served as WSGI)
    module: str  # "main", "mysite.wsgi"
    attribute: str  # "app", "application"
    filename: str  # where it was found, relative to the app folder
    chdir: str = ""  # a Django project one folder deep: gunicorn --chdir mysite
    how: str = ""  # how it was recognised, for the origin text

    @property
    def target(self) -> str:
        return f"{self.module}:{self.attribute}"

    @property
    def server(self) -> str:
        return "uvicorn" if self.interface == "asgi" else "gunicorn"

    @property
    def packages(self) -> tuple[str, ...]:
        return (self.framework.package,) if self.framework else ()

    def command(self, threads: int = DEFAULT_THREADS) -> str:
        """Shell form, so $PORT expands when the instance starts; exec so signals reach it.

        `threads` is the revision's --concurrency: gunicorn takes one request per thread, so
        with Cloud Run's sample flags (1 worker x 8 threads) behind a concurrency of 80, up to
        72 requests would wait inside gunicorn while the router and the autoscaler count them
        as served (2 s requests took 4 s at p50 and no instance was added). gthread makes its
        threads as requests need them, so a high number costs nothing until used.
        """
        if self.server == "uvicorn":
            app_dir = f" --app-dir {shlex.quote(self.chdir)}" if self.chdir else ""
            return f"exec uvicorn {self.target}{app_dir} --host 127.0.0.1 --port $PORT"
        chdir = f" --chdir {shlex.quote(self.chdir)}" if self.chdir else ""
        # One worker (one CPU by default), a thread per request the router may send, and no
        # worker timeout (the platform's request timeout applies instead).
        return (
            f"exec gunicorn{chdir} --bind 127.0.0.1:$PORT --workers 1 --threads {threads} "
            f"--timeout 0 {self.target}"
        )

    def describe(self) -> str:
        what = self.how or (
            f"{self.interface.upper()} app ({self.framework.name})"
            if self.framework
            else f"`{self.attribute}` of unknown kind"
        )
        return f"default: {what} in {self.filename} -> {self.server}"


@dataclass(frozen=True)
class Entrypoint:
    argv: tuple[str, ...]
    origin: str  # human text: "Dockerfile CMD (line 14)", "Procfile web:", "--command"
    default: DefaultApp | None = None
    notes: tuple[str, ...] = field(default=())  # things worth printing (ignored --args...)


def shell(command: str) -> tuple[str, ...]:
    return (*SHELL, command)


def fit_default_threads(argv: Sequence[str], origin: str, concurrency: int) -> list[str]:
    """argv with homerun's default gunicorn command given `concurrency` threads; any other
    command (the user's own, a Dockerfile's CMD) unchanged: homerun never rewrites those.

    A revision made from another's artifact (`services update --concurrency 20`) runs the same
    code with a new concurrency, so the default command's thread count follows it.
    """
    words = list(argv)
    if not origin.startswith("default:") or len(words) != 3 or tuple(words[:2]) != SHELL:
        return words
    words[2] = _DEFAULT_THREADS_FLAG.sub(str(concurrency), words[2], count=1)
    return words


def resolve_entrypoint(
    *,
    command: Sequence[str] | None,
    args: Sequence[str] | None,
    user_env: Mapping[str, str],
    procfile: str | None,
    dockerfile: Dockerfile | None,
    app_dir: Path,
    shown_as: Path | None = None,
    function: Function | None = None,
    concurrency: int = DEFAULT_THREADS,
) -> Entrypoint:
    """The first entrypoint found, by the buildpack's precedence; BuildError if none.

    `shown_as` is the folder the user gave, named in errors instead of homerun's copy of it;
    `concurrency` is the revision's, which a default gunicorn command takes as its threads.
    """
    # Kubernetes semantics: command replaces ENTRYPOINT (and drops CMD unless args are given);
    # args replace CMD.
    if command:
        process = _process_type(command, args, procfile)
        if process is not None:
            return process
        origin = "--command and --args" if args else "--command"
        return Entrypoint(argv=(*command, *(args or ())), origin=origin)
    if args:
        return _args_only(args, dockerfile)

    looked: list[str] = []
    google_entrypoint = user_env.get("GOOGLE_ENTRYPOINT", "").strip()
    if google_entrypoint:
        return Entrypoint(argv=shell(google_entrypoint), origin="GOOGLE_ENTRYPOINT")
    if function is not None:
        # The functions buildpack's web process: a Procfile or Dockerfile CMD does not apply.
        return Entrypoint(argv=shell(function.command()), origin=function.describe())

    if procfile is None:
        looked.append("no Procfile")
    else:
        web = parse_procfile(procfile).get("web", "").strip()
        if web:
            return Entrypoint(argv=shell(web), origin="Procfile web:")
        looked.append("the Procfile has no `web:` line")

    if dockerfile is None:
        looked.append("no Dockerfile")
    else:
        from_dockerfile = _dockerfile_entrypoint(dockerfile)
        if from_dockerfile is not None:
            return from_dockerfile
        looked.append("the Dockerfile has no CMD or ENTRYPOINT")

    default, notes = detect_default_app(app_dir)
    if default is not None:
        return Entrypoint(
            argv=shell(default.command(threads=concurrency)),
            origin=default.describe(),
            default=default,
        )
    looked.extend(notes)
    raise BuildError(
        f"no entrypoint found in {shown_as or app_dir}: homerun looked for --command, "
        "GOOGLE_ENTRYPOINT in the environment, a Procfile `web:` line, a Dockerfile CMD or "
        "ENTRYPOINT, a module-level `app` in main.py or app.py, and a Django manage.py "
        f"({'; '.join(looked)}). Add a Procfile (web: gunicorn --bind :$PORT main:app), "
        "a main.py that defines `app`, or pass --command."
    )


def _process_type(
    command: Sequence[str], args: Sequence[str] | None, procfile: str | None
) -> Entrypoint | None:
    """`--command migrate` with a Procfile `migrate:` line runs that line, as a buildpacks
    image does (each process type is a command of the image: Google's Django sample runs its
    migrations with `gcloud run jobs create migrate --command migrate`); --args follow it."""
    if len(command) != 1 or procfile is None:
        return None
    name = command[0]
    script = parse_procfile(procfile).get(name, "").strip()
    if not script:
        return None
    if args:
        script = f"{script} {shlex.join(args)}"
    return Entrypoint(argv=shell(script), origin=f"Procfile {name}: (--command {name})")


def _args_only(args: Sequence[str], dockerfile: Dockerfile | None) -> Entrypoint:
    entrypoint = dockerfile.entrypoint if dockerfile else None
    if entrypoint is None:
        # No ENTRYPOINT in the image: the arguments replace CMD, so they are the command.
        return Entrypoint(argv=tuple(args), origin="--args (no ENTRYPOINT: they are the command)")
    if entrypoint.shell_form:
        note = (
            f"--args ignored: a shell-form ENTRYPOINT (line {entrypoint.line}) takes no "
            "arguments; write it in exec form to pass them"
        )
        return Entrypoint(argv=entrypoint.argv, origin=entrypoint.describe(), notes=(note,))
    return Entrypoint(argv=(*entrypoint.argv, *args), origin=f"{entrypoint.describe()} with --args")


def _dockerfile_entrypoint(dockerfile: Dockerfile) -> Entrypoint | None:
    entrypoint, cmd = dockerfile.entrypoint, dockerfile.cmd
    if entrypoint is not None:
        if entrypoint.shell_form or cmd is None:
            # Docker: a shell-form ENTRYPOINT ignores CMD.
            argv, origin = entrypoint.argv, entrypoint.describe()
        else:
            argv = (*entrypoint.argv, *cmd.argv)
            origin = f"{entrypoint.describe()} + CMD (line {cmd.line})"
    elif cmd is not None:
        argv, origin = cmd.argv, cmd.describe()
    else:
        return None
    if not argv:
        keyword = entrypoint or cmd
        line = keyword.line if keyword else 0
        raise BuildError(
            f"{dockerfile.path}:{line}: the Dockerfile's CMD/ENTRYPOINT is empty; "
            "give it a command, or pass --command"
        )
    return Entrypoint(argv=argv, origin=origin)


def parse_procfile(text: str) -> dict[str, str]:
    """`name: command` lines of a Procfile."""
    processes: dict[str, str] = {}
    for line in text.splitlines():
        match = re.match(r"^\s*([A-Za-z0-9_-]+)\s*:(.*)$", line)
        if match and not line.lstrip().startswith("#"):
            processes[match.group(1)] = match.group(2).strip()
    return processes


def guess_server(argv: Sequence[str]) -> str:
    """ "gunicorn", "uvicorn" or "other": the first server named in command position."""
    words = list(argv)
    if (
        len(words) >= 3
        and posixpath.basename(words[0]) in ("sh", "bash", "dash")
        and words[1] == "-c"
    ):
        try:
            words = [word.text for word in split_words(words[2], {}, substitute=False)]
        except WordError:
            words = words[2].split()
    for index, word in enumerate(words):
        if word.startswith("-") or "=" in word:
            if word == "-m" and index + 1 < len(words) and words[index + 1] in SERVERS:
                return words[index + 1]
            continue
        if posixpath.basename(word) in SERVERS:
            return posixpath.basename(word)
    return "other"


# Default detection


def detect_default_app(app_dir: Path) -> tuple[DefaultApp | None, list[str]]:
    """An app in main.py / app.py, else a Django project; otherwise notes on what was seen."""
    notes: list[str] = []
    for filename in APP_FILES:
        path = app_dir / filename
        if not path.is_file():
            continue
        app = _app_in_module(path, filename)
        if app is not None:
            return app, notes
        notes.append(f"{filename} defines no module-level `app`")
    if not notes:
        notes.append("no main.py or app.py")
    django = _django_project(app_dir, notes)
    return django, notes


def _app_in_module(path: Path, filename: str) -> DefaultApp | None:
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as error:
        raise BuildError(
            f"{filename}:{error.lineno}: {error.msg}; homerun reads this file to "
            "find your app, and Python could not either. Fix it and deploy "
            "again"
        ) from error
    aliases = _import_aliases(tree)
    definitions = _module_definitions(tree.body)
    module = filename[: -len(".py")]
    found = definitions.get("app")
    if found is None:
        return None
    if isinstance(found, ast.FunctionDef | ast.AsyncFunctionDef):
        # A bare callable: app(environ, start_response) is WSGI; async app(scope, receive,
        # send) is ASGI.
        interface = "asgi" if isinstance(found, ast.AsyncFunctionDef) else "wsgi"
        return DefaultApp(
            interface=interface,
            framework=None,
            module=module,
            attribute="app",
            filename=filename,
            how=f"plain {interface.upper()} callable `app`",
        )
    framework = _framework_of(found, aliases, definitions, depth=0)
    how = ""
    if framework is None:
        framework = _framework_by_imports(aliases)
        if framework is None:
            how = "`app` of a framework homerun does not know (assuming WSGI)"
    interface = framework.interface if framework else "wsgi"
    return DefaultApp(
        interface=interface,
        framework=framework,
        module=module,
        attribute="app",
        filename=filename,
        how=how,
    )


Definition = ast.expr | ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef


def _module_definitions(body: list[ast.stmt]) -> dict[str, Definition]:
    """Names bound at module level (also under if/try/with), the last binding winning."""
    definitions: dict[str, Definition] = {}
    for statement in body:
        if isinstance(statement, ast.Assign):
            for target in statement.targets:
                if isinstance(target, ast.Name):
                    definitions[target.id] = statement.value
        elif isinstance(statement, ast.AnnAssign) and statement.value is not None:
            if isinstance(statement.target, ast.Name):
                definitions[statement.target.id] = statement.value
        elif isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            definitions[statement.name] = statement
        elif isinstance(statement, ast.If | ast.With | ast.For | ast.While):
            definitions.update(_module_definitions(statement.body))
            definitions.update(_module_definitions(getattr(statement, "orelse", [])))
        elif isinstance(statement, ast.Try):
            for block in (
                statement.body,
                statement.orelse,
                statement.finalbody,
                *(handler.body for handler in statement.handlers),
            ):
                definitions.update(_module_definitions(block))
    return definitions


def _import_aliases(tree: ast.Module) -> dict[str, str]:
    """Local name -> qualified name, for every import in the file."""
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for name in node.names:
                if name.asname:
                    aliases[name.asname] = name.name
                else:
                    top = name.name.split(".")[0]
                    aliases[top] = top
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for name in node.names:
                aliases[name.asname or name.name] = f"{node.module}.{name.name}"
    return aliases


def _qualified(node: ast.expr, aliases: Mapping[str, str]) -> str | None:
    if isinstance(node, ast.Name):
        return aliases.get(node.id, node.id)
    if isinstance(node, ast.Attribute):
        owner = _qualified(node.value, aliases)
        return f"{owner}.{node.attr}" if owner else None
    return None


def _framework_of(
    node: Definition, aliases: Mapping[str, str], definitions: Mapping[str, Definition], depth: int
) -> Framework | None:
    if depth > 5:
        return None
    if isinstance(node, ast.Call):
        name = _qualified(node.func, aliases)
        if name is not None and name in APP_CONSTRUCTORS:
            return APP_CONSTRUCTORS[name]
        if isinstance(node.func, ast.Attribute) and node.func.attr == "make_wsgi_app":
            return PYRAMID  # Configurator(...).make_wsgi_app()
        if isinstance(node.func, ast.Name) and node.func.id in definitions:
            # app = create_app(): a factory in this file; what does it construct?
            return _framework_of(definitions[node.func.id], aliases, definitions, depth + 1)
        return None
    if isinstance(node, ast.Name) and node.id in definitions:
        return _framework_of(definitions[node.id], aliases, definitions, depth + 1)
    if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
        for inner in ast.walk(node):
            if isinstance(inner, ast.Call):
                name = _qualified(inner.func, aliases)
                if name is not None and name in APP_CONSTRUCTORS:
                    return APP_CONSTRUCTORS[name]
    return None


def _framework_by_imports(aliases: Mapping[str, str]) -> Framework | None:
    imported = [
        FRAMEWORK_MODULES[qualified.split(".")[0]]
        for qualified in aliases.values()
        if qualified.split(".")[0] in FRAMEWORK_MODULES
    ]
    if not imported:
        return None
    # An ASGI app often wraps a WSGI one (WSGIMiddleware(flask_app)), rarely the reverse.
    asgi = [framework for framework in imported if framework.interface == "asgi"]
    return (asgi or imported)[0]


_SETTINGS = re.compile(r"""DJANGO_SETTINGS_MODULE['"]\s*,\s*['"]([\w.]+)['"]""")


def _django_project(app_dir: Path, notes: list[str]) -> DefaultApp | None:
    """A project as `django-admin startproject mysite [.]` lays it out (manage.py at the top
    or one folder deep, next to the package holding settings.py and wsgi.py)."""
    if (app_dir / "manage.py").is_file():
        candidates = [app_dir / "manage.py"]
    else:
        candidates = sorted(
            path for path in app_dir.glob("*/manage.py") if path.parent.name not in SKIPPED_NAMES
        )
    if not candidates:
        notes.append("no manage.py (Django)")
        return None
    if len(candidates) > 1:
        folders = ", ".join(path.parent.name for path in candidates)
        notes.append(f"manage.py in several folders ({folders}): cannot tell which to run")
        return None
    manage = candidates[0]
    match = _SETTINGS.search(manage.read_text(errors="replace"))
    package_names = [match.group(1).split(".")[0]] if match else []
    package_names += sorted(path.parent.name for path in manage.parent.glob("*/wsgi.py"))
    for package in package_names:
        wsgi = manage.parent / package / "wsgi.py"
        if wsgi.is_file() and "application" in wsgi.read_text(errors="replace"):
            base = manage.parent
            chdir = "" if base == app_dir else base.relative_to(app_dir).as_posix()
            filename = f"{chdir}/{package}/wsgi.py" if chdir else f"{package}/wsgi.py"
            return DefaultApp(
                interface="wsgi",
                framework=DJANGO,
                module=f"{package}.wsgi",
                attribute="application",
                filename=filename,
                chdir=chdir,
                how="Django project",
            )
    notes.append(
        f"{manage.relative_to(app_dir)} found, but no <project>/wsgi.py "
        "defining `application` next to it"
    )
    return None
