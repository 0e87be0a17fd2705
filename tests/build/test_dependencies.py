"""Where dependencies come from, the server a default entrypoint adds, and the cache key."""

from __future__ import annotations

from pathlib import Path

import pytest

from homerun.build.dependencies import InstallPlan, fingerprint, plan_dependencies
from homerun.build.dockerfile import parse
from homerun.build.entrypoint import DefaultApp, detect_default_app
from homerun.build.source import lay_out
from homerun.errors import BuildError

from .helpers import SEED_FASTAPI_MAIN, SEED_FLASK, Output, write_tree

FLASK_MAIN = "from flask import Flask\napp = Flask(__name__)\n"


def _plan(
    tmp_path: Path,
    files: dict[str, str],
    *,
    default: bool = False,
    output: Output | None = None,
    name: str = "src",
) -> InstallPlan:
    source = write_tree(tmp_path / name, files)
    dockerfile = (
        parse(files["Dockerfile"], str(source / "Dockerfile")) if "Dockerfile" in files else None
    )
    layout = lay_out(source, tmp_path / f"{name}-dest", dockerfile, Output())
    default_app: DefaultApp | None = None
    if default:
        default_app, _ = detect_default_app(layout.cwd)
    return plan_dependencies(
        source=source,
        layout=layout,
        dockerfile=dockerfile,
        default_app=default_app,
        output=output or Output(),
    )


def _arguments(plan: InstallPlan) -> list[list[str]]:
    return [
        [Path(arg).name if "/" in arg else arg for arg in step.arguments] for step in plan.steps
    ]


# (files, whether the entrypoint is a default one, origin, pip arguments (file names only))
SOURCES = [
    (
        {"requirements.txt": "flask\ngunicorn\n", "pyproject.toml": "[project]\nname='x'\n"},
        False,
        "requirements.txt",
        [["-r", "requirements.txt"]],
    ),
    (
        {"pyproject.toml": "[project]\nname = 'x'\ndependencies = ['fastapi>=0.110', 'uvicorn']\n"},
        False,
        "pyproject.toml [project].dependencies",
        [["fastapi>=0.110", "uvicorn"]],
    ),
    (
        {"pyproject.toml": "[project]\nname = 'x'\n"},
        False,
        "pyproject.toml [project].dependencies",
        [],
    ),
    (
        {"pyproject.toml": "[tool.poetry]\nname = 'x'\n", "main.py": FLASK_MAIN},
        True,
        "default for Flask + gunicorn (the default entrypoint's server)",
        [["flask", "gunicorn"]],
    ),
    (
        {"main.py": SEED_FASTAPI_MAIN},
        True,
        "default for FastAPI + uvicorn (the default entrypoint's server)",
        [["fastapi", "uvicorn"]],
    ),
    (
        {"main.py": FLASK_MAIN, "requirements.txt": "Flask==3.0.0\n"},
        True,
        "requirements.txt + gunicorn (the default entrypoint's server)",
        [["-r", "requirements.txt", "gunicorn"]],
    ),
    (
        {"main.py": FLASK_MAIN, "requirements.txt": "flask\nGunicorn>=22\n"},
        True,
        "requirements.txt",
        [["-r", "requirements.txt"]],
    ),
    (
        {"main.py": SEED_FASTAPI_MAIN, "requirements.txt": "fastapi\nuvicorn[standard]\n"},
        True,
        "requirements.txt",
        [["-r", "requirements.txt"]],
    ),
    # a server listed in a file that requirements.txt includes counts as listed
    (
        {"main.py": FLASK_MAIN, "requirements.txt": "-r base.txt\n", "base.txt": "gunicorn\n"},
        True,
        "requirements.txt",
        [["-r", "requirements.txt"]],
    ),
    (
        {"main.py": "from mything import make\napp = make()\n"},
        True,
        "nothing to install + gunicorn (the default entrypoint's server)",
        [["gunicorn"]],
    ),
    ({"Procfile": "web: python -m http.server $PORT\n"}, False, "nothing to install", []),
]


@pytest.mark.parametrize(
    ("files", "default", "origin", "arguments"), SOURCES, ids=[case[2] for case in SOURCES]
)
def test_dependency_sources(
    tmp_path: Path, files: dict[str, str], default: bool, origin: str, arguments: list[list[str]]
) -> None:
    plan = _plan(tmp_path, files, default=default)
    assert plan.origin == origin
    assert _arguments(plan) == arguments


def test_the_seed_dockerfile_installs_its_run_line(tmp_path: Path) -> None:
    files = {name: (SEED_FLASK / name).read_text() for name in ("main.py", "Dockerfile")}
    plan = _plan(tmp_path, files)
    assert plan.origin == "Dockerfile RUN pip install (line 10)"
    assert [step.arguments for step in plan.steps] == [("flask", "gunicorn")]
    assert plan.steps[0].cwd == tmp_path / "src-dest" / "rootfs" / "app"
    assert plan.names == {"flask", "gunicorn"}


def test_dockerfile_requirement_files_resolve_in_its_layout(tmp_path: Path) -> None:
    output = Output()
    plan = _plan(
        tmp_path,
        {
            "requirements/prod.txt": "flask\n",
            "requirements.txt": "this-file-is-not-in-the-image\n",
            "Dockerfile": (
                "FROM python:3.12-slim\n"
                "WORKDIR /srv\n"
                "COPY requirements/prod.txt /tmp/reqs.txt\n"
                "RUN pip install --no-cache-dir --upgrade pip\n"
                "RUN pip install --no-cache-dir -r /tmp/reqs.txt && pip install gunicorn\n"
                "COPY . .\n"
                "CMD exec gunicorn --bind :$PORT main:app\n"
            ),
        },
        output=output,
    )
    rootfs = tmp_path / "src-dest" / "rootfs"
    assert plan.origin == "Dockerfile RUN pip install (line 5)"
    assert [(step.arguments, step.cwd) for step in plan.steps] == [
        (("-r", str(rootfs / "tmp" / "reqs.txt")), rootfs / "srv"),
        (("gunicorn",), rootfs / "srv"),
    ]
    assert plan.names == {"flask", "gunicorn"}
    assert "skipping `pip install --no-cache-dir --upgrade pip` (line 4)" in output.text


def test_editable_installs_from_a_dockerfile_become_regular(tmp_path: Path) -> None:
    output = Output()
    plan = _plan(
        tmp_path,
        {
            "pyproject.toml": "[project]\nname='x'\n",
            "Dockerfile": "FROM python:3.12\nWORKDIR /app\nCOPY . .\nRUN pip install -e .\n",
        },
        output=output,
    )
    assert [step.arguments for step in plan.steps] == [(".",)]
    assert "installing . as a regular package" in output.text


def test_dynamic_pyproject_dependencies_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"dynamic.*requirements.txt"):
        _plan(tmp_path, {"pyproject.toml": "[project]\nname='x'\ndynamic=['dependencies']\n"})


def test_invalid_pyproject_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"pyproject.toml: not valid TOML"):
        _plan(tmp_path, {"pyproject.toml": "[project\n"})


def test_same_contents_in_different_folders_share_a_fingerprint(tmp_path: Path) -> None:
    files = {"requirements.txt": "-r base.txt\nflask\n", "base.txt": "gunicorn\n"}
    first = _plan(tmp_path, files, name="a")
    second = _plan(tmp_path, files, name="b")
    assert first.steps[0].cwd != second.steps[0].cwd
    assert fingerprint(first) == fingerprint(second)


@pytest.mark.parametrize(
    "changed",
    [
        {"requirements.txt": "-r base.txt\nflask==3.0.0\n"},
        {"base.txt": "gunicorn==22.0.0\n"},  # an included file is part of the key
    ],
)
def test_changed_contents_change_the_fingerprint(tmp_path: Path, changed: dict[str, str]) -> None:
    files = {"requirements.txt": "-r base.txt\nflask\n", "base.txt": "gunicorn\n"}
    before = fingerprint(_plan(tmp_path, files, name="a"))
    after = fingerprint(_plan(tmp_path, {**files, **changed}, name="b"))
    assert before != after


def test_a_local_package_is_keyed_by_its_contents(tmp_path: Path) -> None:
    files = {"requirements.txt": "./libs/shared\n", "libs/shared/pyproject.toml": "x"}
    one = fingerprint(_plan(tmp_path, files, name="a"))
    same = fingerprint(_plan(tmp_path, files, name="b"))
    other = fingerprint(_plan(tmp_path, {**files, "libs/shared/pyproject.toml": "y"}, name="c"))
    assert one == same != other


def test_an_editable_requirement_keeps_its_virtualenv_to_itself(tmp_path: Path) -> None:
    files = {"requirements.txt": "-e ./libs/shared\n", "libs/shared/pyproject.toml": "x"}
    assert fingerprint(_plan(tmp_path, files, name="a")) != fingerprint(
        _plan(tmp_path, files, name="b")
    )
