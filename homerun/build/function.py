"""Cloud Run functions: which function a source folder serves, and how functions-framework
serves it, as Google's Python functions buildpack decides.

The target comes from `--function` (`gcloud run deploy --function`), else
GOOGLE_FUNCTION_TARGET in the environment or in a buildpacks `project.toml`
(`[[build.env]]`); GOOGLE_FUNCTION_SIGNATURE_TYPE and GOOGLE_FUNCTION_SOURCE come from the same
places. The buildpack runs `functions-framework` with FUNCTION_TARGET, FUNCTION_SIGNATURE_TYPE
and FUNCTION_SOURCE set; homerun sets the same variables and, for a WSGI function, runs the app
that command would build (`functions_framework:create_app()`, read from those variables) under
gunicorn with the options functions-framework gives it, so a zygote can fork its instances.
An `@functions_framework.aio` function runs under the `functions-framework` command itself.
"""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from homerun.errors import BuildError

PACKAGE = "functions-framework"
SIGNATURE_TYPES = ("http", "event", "cloudevent", "typed")
DEFAULT_SOURCE = "main.py"
TARGET_VARIABLE = "GOOGLE_FUNCTION_TARGET"
SIGNATURE_VARIABLE = "GOOGLE_FUNCTION_SIGNATURE_TYPE"
SOURCE_VARIABLE = "GOOGLE_FUNCTION_SOURCE"
_BUILD_VARIABLES = (TARGET_VARIABLE, SIGNATURE_VARIABLE, SOURCE_VARIABLE)
# functions-framework's decorators, by the signature type they register.
_DECORATORS = {
    "functions_framework.http": "http",
    "functions_framework.cloud_event": "cloudevent",
    "functions_framework.typed": "typed",
    "functions_framework.aio.http": "http",
    "functions_framework.aio.cloud_event": "cloudevent",
}
_TARGET = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Function:
    """A function to serve: its name, signature type and file, and where they came from."""

    target: str
    signature_type: str  # "http" | "event" | "cloudevent" | "typed"
    source: str  # the file, relative to the app folder
    origin: str  # "--function", "GOOGLE_FUNCTION_TARGET", "project.toml"
    asgi: bool  # decorated with functions_framework.aio: served by Starlette under uvicorn

    def command(self) -> str:
        """Shell form, so $PORT expands when the instance starts; exec so signals reach it."""
        if self.asgi:
            return "exec functions-framework --host 127.0.0.1"
        # The options functions-framework's GunicornApplication sets: one worker, no worker
        # timeout (the platform's request timeout applies), errors-only logging, no request
        # line limit; 8 threads, its default (4 per CPU) on 2 CPUs.
        return (
            "exec gunicorn --bind 127.0.0.1:$PORT --workers 1 --threads 8 --timeout 0 "
            "--log-level error --limit-request-line 0 'functions_framework:create_app()'"
        )

    def environment(self) -> dict[str, str]:
        """What the buildpack sets for `functions-framework` at launch."""
        return {
            "FUNCTION_TARGET": self.target,
            "FUNCTION_SIGNATURE_TYPE": self.signature_type,
            "FUNCTION_SOURCE": self.source,
        }

    def describe(self) -> str:
        server = "functions-framework (async)" if self.asgi else "functions-framework on gunicorn"
        where = f"{self.target} in {self.source} ({self.origin})"
        return f"{self.signature_type} function {where} -> {server}"


def build_env(project_toml: str | None, shown_as: str = "project.toml") -> dict[str, str]:
    """The `[[build.env]]` entries of a buildpacks project descriptor (schema 0.1's
    `[[build.env]]` and 0.2's `[[io.buildpacks.build.env]]`)."""
    if project_toml is None:
        return {}
    try:
        document = tomllib.loads(project_toml)
    except tomllib.TOMLDecodeError as error:
        raise BuildError(f"{shown_as}: not valid TOML ({error}); fix it or remove it") from None
    found: dict[str, str] = {}
    for table in (document.get("build"), document.get("io", {}).get("buildpacks", {}).get("build")):
        entries = table.get("env", []) if isinstance(table, dict) else []
        for index, entry in enumerate(entries if isinstance(entries, list) else []):
            if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
                raise BuildError(
                    f'{shown_as}: build.env entry {index + 1} needs name = "..." and value = "..."'
                )
            found[entry["name"]] = str(entry.get("value", ""))
    return found


def find_function(
    *,
    flag: str | None,
    user_env: Mapping[str, str],
    project_env: Mapping[str, str],
    app_dir: Path,
) -> Function | None:
    """The function this build serves, or None when it is not a function; BuildError when the
    target is not in the source file, or the settings are wrong."""
    settings = {**project_env, **{k: v for k, v in user_env.items() if k in _BUILD_VARIABLES}}
    if flag:
        target, origin = flag, "--function"
    elif settings.get(TARGET_VARIABLE, "").strip():
        target = settings[TARGET_VARIABLE].strip()
        origin = TARGET_VARIABLE if TARGET_VARIABLE in user_env else "project.toml"
    else:
        return None
    if not _TARGET.match(target):
        raise BuildError(
            f"{origin}: {target!r} is not a function name; give the name of a function "
            "defined in main.py, e.g. --function hello_http"
        )
    source = settings.get(SOURCE_VARIABLE, "").strip() or DEFAULT_SOURCE
    path = app_dir / source
    if not path.resolve().is_relative_to(app_dir.resolve()):
        raise BuildError(
            f"{SOURCE_VARIABLE}={source!r}: the function's file must be in the app's folder; "
            "give its path relative to the folder, e.g. main.py or functions/hello.py"
        )
    if not path.is_file():
        raise BuildError(
            f"missing {source}: a function's code goes in main.py, or set {SOURCE_VARIABLE} "
            "to the file that defines it"
        )
    declared = settings.get(SIGNATURE_VARIABLE, "").strip()
    if declared and declared not in SIGNATURE_TYPES:
        raise BuildError(
            f"{SIGNATURE_VARIABLE}={declared!r}: must be one of {', '.join(SIGNATURE_TYPES)}"
        )
    decorated, asgi = _definition(path, source, target)
    return Function(
        target=target,
        # As functions-framework decides: its decorator, else the declared type, else http.
        signature_type=decorated or declared or "http",
        source=source,
        origin=origin,
        asgi=asgi,
    )


def _definition(path: Path, shown: str, target: str) -> tuple[str | None, bool]:
    """(the signature type its decorator registers, whether it is an aio function) of the
    target in the file; BuildError naming the functions there when it is not defined."""
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except SyntaxError as error:
        raise BuildError(
            f"{shown}:{error.lineno}: {error.msg}; functions-framework would fail to import "
            "it too. Fix it and deploy again"
        ) from error
    aliases = _aliases(tree)
    functions: dict[str, ast.FunctionDef | ast.AsyncFunctionDef] = {}
    others: set[str] = set()
    for statement in tree.body:
        if isinstance(statement, ast.FunctionDef | ast.AsyncFunctionDef):
            functions[statement.name] = statement
        elif isinstance(statement, ast.Assign):
            others.update(t.id for t in statement.targets if isinstance(t, ast.Name))
        elif isinstance(statement, ast.ImportFrom | ast.Import):
            others.update((name.asname or name.name).split(".")[0] for name in statement.names)
    definition = functions.get(target)
    if definition is None:
        if target in others:
            return None, False  # bound another way (imported, assigned): trust it
        defined = ", ".join(sorted(functions)) or "none"
        raise BuildError(
            f"function {target} is not defined in {shown} (functions there: {defined}); "
            f"give --function the name of one of them"
        )
    for decorator in definition.decorator_list:
        called = decorator.func if isinstance(decorator, ast.Call) else decorator
        name = _qualified(called, aliases)
        if name in _DECORATORS:
            return _DECORATORS[name], name.startswith("functions_framework.aio.")
    return None, False


def _aliases(tree: ast.Module) -> dict[str, str]:
    aliases: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for name in node.names:
                aliases[name.asname or name.name.split(".")[0]] = (
                    name.name if name.asname else name.name.split(".")[0]
                )
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
