"""Which function a folder serves (--function, GOOGLE_FUNCTION_TARGET, project.toml), its
signature type, how it is run, and the interpreter a `--base-image` stands for."""

from __future__ import annotations

from pathlib import Path

import pytest

from homerun.build.function import Function, build_env, find_function
from homerun.build.interpreter import python_for_base_image
from homerun.errors import BuildError

SOURCE = """
import functions_framework
from functions_framework import aio as ff_aio
from helpers import imported_target

@functions_framework.http
def hello_http(request):
    return "hi"

@functions_framework.cloud_event
def on_event(cloud_event):
    pass

@ff_aio.http
async def hello_async(request):
    return "hi"

def plain(request):
    return "plain"
"""


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    (tmp_path / "main.py").write_text(SOURCE)
    return tmp_path


def find(folder: Path, flag: str | None = None, **env: str) -> Function | None:
    return find_function(flag=flag, user_env=env, project_env={}, app_dir=folder)


def test_not_a_function_without_a_target(folder: Path) -> None:
    assert find(folder) is None
    assert find(folder, GOOGLE_FUNCTION_TARGET="  ") is None


def test_the_decorator_decides_the_signature_type_and_the_server(folder: Path) -> None:
    http = find(folder, "hello_http")
    assert http is not None and (http.signature_type, http.asgi) == ("http", False)
    assert "'functions_framework:create_app()'" in http.command()
    assert "127.0.0.1:$PORT" in http.command()
    assert http.environment() == {
        "FUNCTION_TARGET": "hello_http",
        "FUNCTION_SIGNATURE_TYPE": "http",
        "FUNCTION_SOURCE": "main.py",
    }
    event = find(folder, "on_event")
    assert event is not None and event.signature_type == "cloudevent"
    aio = find(folder, "hello_async")
    assert aio is not None and aio.asgi
    assert aio.command() == "exec functions-framework --host 127.0.0.1"


def test_an_undecorated_function_takes_the_declared_type_else_http(folder: Path) -> None:
    plain = find(folder, "plain")
    assert plain is not None and plain.signature_type == "http"
    declared = find(folder, "plain", GOOGLE_FUNCTION_SIGNATURE_TYPE="cloudevent")
    assert declared is not None and declared.signature_type == "cloudevent"
    with pytest.raises(BuildError, match="must be one of http, event, cloudevent, typed"):
        find(folder, "plain", GOOGLE_FUNCTION_SIGNATURE_TYPE="pubsub")


def test_the_flag_wins_over_the_env_and_the_env_over_project_toml(folder: Path) -> None:
    flagged = find(folder, "hello_http", GOOGLE_FUNCTION_TARGET="plain")
    assert flagged is not None and (flagged.target, flagged.origin) == ("hello_http", "--function")
    from_env = find_function(
        flag=None,
        user_env={"GOOGLE_FUNCTION_TARGET": "plain"},
        project_env={"GOOGLE_FUNCTION_TARGET": "on_event"},
        app_dir=folder,
    )
    assert from_env is not None and from_env.target == "plain"
    from_toml = find_function(
        flag=None, user_env={}, project_env={"GOOGLE_FUNCTION_TARGET": "on_event"}, app_dir=folder
    )
    assert from_toml is not None and from_toml.origin == "project.toml"


def test_a_missing_target_names_the_functions_in_the_file(folder: Path) -> None:
    with pytest.raises(BuildError) as raised:
        find(folder, "hello_wrld")
    assert str(raised.value).startswith(
        "function hello_wrld is not defined in main.py (functions there: hello_async, "
        "hello_http, on_event, plain)"
    )
    imported = find(folder, "imported_target")  # bound by an import: functions-framework finds it
    assert imported is not None and imported.signature_type == "http"


def test_the_source_file_can_be_another_and_must_exist(folder: Path) -> None:
    (folder / "fn.py").write_text("def other(request):\n    return 'x'\n")
    other = find(folder, "other", GOOGLE_FUNCTION_SOURCE="fn.py")
    assert other is not None and other.source == "fn.py"
    with pytest.raises(BuildError, match="missing nope.py: a function's code goes in main.py"):
        find(folder, "other", GOOGLE_FUNCTION_SOURCE="nope.py")
    for outside in ("../main.py", "/etc/hostname"):
        with pytest.raises(BuildError, match="the function's file must be in the app's folder"):
            find(folder, "other", GOOGLE_FUNCTION_SOURCE=outside)
    (folder / "broken.py").write_text("def f(:\n")
    with pytest.raises(BuildError, match=r"^broken.py:1: "):
        find(folder, "f", GOOGLE_FUNCTION_SOURCE="broken.py")


def test_project_toml_build_env_in_both_schemas() -> None:
    assert build_env(None) == {}
    old = '[[build.env]]\nname = "GOOGLE_FUNCTION_TARGET"\nvalue = "hello"\n'
    assert build_env(old) == {"GOOGLE_FUNCTION_TARGET": "hello"}
    new = (
        '[_]\nschema-version = "0.2"\n[[io.buildpacks.build.env]]\n'
        'name = "GOOGLE_FUNCTION_SIGNATURE_TYPE"\nvalue = "cloudevent"\n'
    )
    assert build_env(new) == {"GOOGLE_FUNCTION_SIGNATURE_TYPE": "cloudevent"}
    with pytest.raises(BuildError, match="project.toml: not valid TOML"):
        build_env("[[build.env]\n")
    with pytest.raises(BuildError, match='build.env entry 1 needs name = "..."'):
        build_env("[[build.env]]\nvalue = 1\n")


def test_a_base_image_is_a_python_version_found_in_pyenv(tmp_path: Path) -> None:
    for version in ("3.12.1", "3.12.10", "3.13.0"):
        binary = tmp_path / "versions" / version / "bin" / f"python{version[:4]}"
        binary.parent.mkdir(parents=True)
        binary.write_text("")
    newest = str(tmp_path / "versions" / "3.12.10" / "bin" / "python3.12")
    assert python_for_base_image("python312", tmp_path) == newest
    full = "us-central1-docker.pkg.dev/serverless-runtimes/google-22-full/runtimes/python312"
    assert python_for_base_image(full, tmp_path) == newest
    with pytest.raises(BuildError, match="homerun runs Python base images"):
        python_for_base_image("nodejs22", tmp_path)
    with pytest.raises(BuildError, match="Python 3.4 is not installed on this machine"):
        python_for_base_image("python34", tmp_path)
