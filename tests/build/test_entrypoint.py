"""Entrypoint precedence, default app detection (Flask, FastAPI, Django...), server guess."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from homerun.build.dockerfile import parse
from homerun.build.entrypoint import (
    detect_default_app,
    fit_default_threads,
    guess_server,
    parse_procfile,
    resolve_entrypoint,
)
from homerun.errors import BuildError

from .helpers import SEED_FASTAPI_MAIN, SEED_FLASK, write_tree

FLASK_MAIN = "from flask import Flask\n\napp = Flask(__name__)\n"
GUNICORN_DEFAULT = (
    "exec gunicorn --bind 127.0.0.1:$PORT --workers 1 --threads 80 --timeout 0 main:app"
)
UVICORN_DEFAULT = "exec uvicorn main:app --host 127.0.0.1 --port $PORT"


def _resolve(
    app_dir: Path,
    *,
    command: list[str] | None = None,
    args: list[str] | None = None,
    env: dict[str, str] | None = None,
    procfile: str | None = None,
    dockerfile: str | None = None,
) -> tuple[list[str], str]:
    entrypoint = resolve_entrypoint(
        command=command,
        args=args,
        user_env=env or {},
        procfile=procfile,
        dockerfile=parse(dockerfile) if dockerfile else None,
        app_dir=app_dir,
    )
    return list(entrypoint.argv), entrypoint.origin


# Each level of the precedence, with every lower level present too.
PRECEDENCE = [
    (
        {"command": ["python", "serve.py"], "args": ["--fast"]},
        ["python", "serve.py", "--fast"],
        "--command and --args",
    ),
    ({"command": ["python", "serve.py"]}, ["python", "serve.py"], "--command"),
    (
        {"env": {"GOOGLE_ENTRYPOINT": "gunicorn -b :$PORT main:app"}},
        ["/bin/sh", "-c", "gunicorn -b :$PORT main:app"],
        "GOOGLE_ENTRYPOINT",
    ),
    ({}, ["/bin/sh", "-c", "uvicorn main:app --port $PORT"], "Procfile web:"),
    (
        {"procfile": "worker: celery -A tasks worker\n"},
        ["/bin/sh", "-c", "exec gunicorn --bind :$PORT main:app"],
        "Dockerfile CMD (line 2)",
    ),
    (
        {"procfile": None, "dockerfile": "FROM python:3.12\n"},
        ["/bin/sh", "-c", GUNICORN_DEFAULT],
        "default: WSGI app (Flask) in main.py -> gunicorn",
    ),
]


@pytest.mark.parametrize(
    ("given", "argv", "origin"), PRECEDENCE, ids=[case[2] for case in PRECEDENCE]
)
def test_precedence(tmp_path: Path, given: dict, argv: list[str], origin: str) -> None:
    app_dir = write_tree(tmp_path, {"main.py": FLASK_MAIN})
    levels = {
        "procfile": "web: uvicorn main:app --port $PORT\nworker: celery worker\n",
        "dockerfile": "FROM python:3.12\nCMD exec gunicorn --bind :$PORT main:app\n",
        **given,
    }
    assert _resolve(app_dir, **levels) == (argv, origin)


DOCKERFILE_SEMANTICS = [
    # (Dockerfile lines, command, args, argv, origin)
    (
        'ENTRYPOINT ["gunicorn"]\nCMD ["main:app"]',
        None,
        None,
        ["gunicorn", "main:app"],
        "Dockerfile ENTRYPOINT (line 2) + CMD (line 3)",
    ),
    (
        'ENTRYPOINT gunicorn main:app\nCMD ["ignored"]',
        None,
        None,
        ["/bin/sh", "-c", "gunicorn main:app"],
        "Dockerfile ENTRYPOINT (line 2)",
    ),
    (
        'ENTRYPOINT ["gunicorn"]\nCMD ["main:app"]',
        None,
        ["-w", "2", "main:app"],
        ["gunicorn", "-w", "2", "main:app"],
        "Dockerfile ENTRYPOINT (line 2) with --args",
    ),
    # Kubernetes: command without args drops the image's CMD too
    (
        'ENTRYPOINT ["gunicorn"]\nCMD ["main:app"]',
        ["python", "main.py"],
        None,
        ["python", "main.py"],
        "--command",
    ),
    # args with no ENTRYPOINT replace CMD: they are the command
    (
        'CMD ["gunicorn", "main:app"]',
        None,
        ["python", "main.py"],
        ["python", "main.py"],
        "--args (no ENTRYPOINT: they are the command)",
    ),
    (
        "ENTRYPOINT exec gunicorn main:app",
        None,
        ["--reload"],
        ["/bin/sh", "-c", "exec gunicorn main:app"],
        "Dockerfile ENTRYPOINT (line 2)",
    ),
]


@pytest.mark.parametrize(("lines", "command", "args", "argv", "origin"), DOCKERFILE_SEMANTICS)
def test_command_and_args_follow_kubernetes_and_docker(
    tmp_path: Path,
    lines: str,
    command: list[str] | None,
    args: list[str] | None,
    argv: list[str],
    origin: str,
) -> None:
    dockerfile = f"FROM python:3.12\n{lines}\n"
    assert _resolve(tmp_path, command=command, args=args, dockerfile=dockerfile) == (argv, origin)


def test_the_seed_flask_folder_runs_its_dockerfile_cmd() -> None:
    argv, origin = _resolve(SEED_FLASK, dockerfile=(SEED_FLASK / "Dockerfile").read_text())
    assert argv == [
        "/bin/sh",
        "-c",
        "exec gunicorn --bind :$PORT --workers 1 --threads 8 --timeout 0 main:app",
    ]
    assert origin == "Dockerfile CMD (line 13)"


def test_an_empty_procfile_web_line_falls_through(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.py": FLASK_MAIN})
    assert _resolve(tmp_path, procfile="web:\n")[1].startswith("default:")
    assert parse_procfile("# comment\nweb: gunicorn main:app\nworker:celery\n") == {
        "web": "gunicorn main:app",
        "worker": "celery",
    }


DJANGO_PROCFILE = (
    "web: gunicorn --bind 0.0.0.0:$PORT --workers 1 --threads 8 --timeout 0 "
    "mysite.wsgi:application\n"
    "migrate: python manage.py migrate && python manage.py collectstatic --no-input\n"
)


def test_command_naming_a_procfile_process_type_runs_its_line(tmp_path: Path) -> None:
    """Google's Django sample: `gcloud run jobs create migrate --command migrate`."""
    argv, origin = _resolve(tmp_path, command=["migrate"], procfile=DJANGO_PROCFILE)
    assert argv == [
        "/bin/sh",
        "-c",
        "python manage.py migrate && python manage.py collectstatic --no-input",
    ]
    assert origin == "Procfile migrate: (--command migrate)"
    with_args, _ = _resolve(
        tmp_path, command=["migrate"], args=["--verbosity", "2 3"], procfile=DJANGO_PROCFILE
    )
    assert with_args[2].endswith("--no-input --verbosity '2 3'")
    # Not a process type (or no Procfile): the command is the program, as before.
    assert _resolve(tmp_path, command=["python"], procfile=DJANGO_PROCFILE)[0] == ["python"]
    assert _resolve(tmp_path, command=["migrate"])[0] == ["migrate"]
    assert _resolve(tmp_path, command=["migrate", "x"], procfile=DJANGO_PROCFILE)[0] == [
        "migrate",
        "x",
    ]


# main.py sources, and the (interface, framework, origin) found in them
APPS = [
    (FLASK_MAIN, "wsgi", "Flask"),
    ("import flask\napp = flask.Flask(__name__)\n", "wsgi", "Flask"),
    (SEED_FASTAPI_MAIN, "asgi", "FastAPI"),
    ("from fastapi import FastAPI as API\napp: API = API(title='x')\n", "asgi", "FastAPI"),
    (
        "from starlette.applications import Starlette\napp = Starlette(routes=[])\n",
        "asgi",
        "Starlette",
    ),
    ("from quart import Quart\napp = Quart(__name__)\n", "asgi", "Quart"),
    ("from litestar import Litestar\napp = Litestar(route_handlers=[])\n", "asgi", "Litestar"),
    ("import bottle\napp = bottle.Bottle()\n", "wsgi", "Bottle"),
    ("import falcon\napp = falcon.App()\n", "wsgi", "Falcon"),
    ("import falcon.asgi\napp = falcon.asgi.App()\n", "asgi", "Falcon"),
    (
        "from pyramid.config import Configurator\n"
        "with Configurator() as config:\n    app = config.make_wsgi_app()\n",
        "wsgi",
        "Pyramid",
    ),
    (
        "from django.core.wsgi import get_wsgi_application\napp = get_wsgi_application()\n",
        "wsgi",
        "Django",
    ),
    # a factory in the same file
    (
        "from fastapi import FastAPI\n\ndef create_app():\n    api = FastAPI()\n    return api\n\n"
        "app = create_app()\n",
        "asgi",
        "FastAPI",
    ),
    # a factory elsewhere: the framework imported decides
    (
        "from flask import Flask\nfrom myapp import create_app\napp = create_app()\n",
        "wsgi",
        "Flask",
    ),
    (
        "from flask import Flask\nfrom starlette.middleware.wsgi import WSGIMiddleware\n"
        "flask_app = Flask(__name__)\napp = WSGIMiddleware(flask_app)\n",
        "asgi",
        "Starlette",
    ),
    # bound under if/try at module level
    (
        "try:\n    from fastapi import FastAPI\nexcept ImportError:\n    raise\n"
        "if True:\n    app = FastAPI()\n",
        "asgi",
        "FastAPI",
    ),
]


@pytest.mark.parametrize(
    ("source", "interface", "framework"),
    APPS,
    ids=[f"{case[2]}-{index}" for index, case in enumerate(APPS)],
)
def test_default_app_detection(tmp_path: Path, source: str, interface: str, framework: str) -> None:
    write_tree(tmp_path, {"main.py": source})
    app, _ = detect_default_app(tmp_path)
    assert app is not None
    assert (app.interface, app.framework.name if app.framework else None) == (interface, framework)
    assert app.target == "main:app"
    server = "uvicorn" if interface == "asgi" else "gunicorn"
    assert app.server == server
    assert app.describe() == (
        f"default: {interface.upper()} app ({framework}) in main.py -> {server}"
    )


def test_fastapi_defaults_to_uvicorn_not_gunicorn(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.py": SEED_FASTAPI_MAIN})
    argv, origin = _resolve(tmp_path)
    assert argv == ["/bin/sh", "-c", UVICORN_DEFAULT]
    assert origin == "default: ASGI app (FastAPI) in main.py -> uvicorn"


def test_plain_callables(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.py": "def app(environ, start_response):\n    pass\n"})
    app, _ = detect_default_app(tmp_path)
    assert app is not None and (app.interface, app.framework) == ("wsgi", None)
    write_tree(tmp_path, {"main.py": "async def app(scope, receive, send):\n    pass\n"})
    app, _ = detect_default_app(tmp_path)
    assert app is not None and app.server == "uvicorn"
    assert app.describe() == "default: plain ASGI callable `app` in main.py -> uvicorn"


def test_an_unknown_app_is_served_as_wsgi(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.py": "from mything import make\napp = make()\n"})
    app, _ = detect_default_app(tmp_path)
    assert app is not None and app.server == "gunicorn" and app.packages == ()
    assert "assuming WSGI" in app.describe()


def test_app_py_when_main_py_has_no_app(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "main.py": "print('helper')\n",
            "app.py": "from fastapi import FastAPI\napp = FastAPI()\n",
        },
    )
    app, _ = detect_default_app(tmp_path)
    assert app is not None and app.target == "app:app" and app.filename == "app.py"
    assert app.command() == "exec uvicorn app:app --host 127.0.0.1 --port $PORT"


def test_user_code_is_read_not_imported(tmp_path: Path) -> None:
    marker = tmp_path / "imported"
    write_tree(tmp_path, {"main.py": f"open({str(marker)!r}, 'w').close()\n{FLASK_MAIN}"})
    assert detect_default_app(tmp_path)[0] is not None
    assert not marker.exists()


def test_a_syntax_error_names_the_file_and_line(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.py": "from flask import Flask\napp = Flask(\n"})
    with pytest.raises(BuildError, match=r"main.py:2: "):
        detect_default_app(tmp_path)


def _startproject(folder: Path, *extra: str) -> None:
    django_admin = Path(sys.executable).with_name("django-admin")
    command = [str(django_admin)] if django_admin.exists() else [sys.executable, "-m", "django"]
    subprocess.run(
        [*command, "startproject", "mysite", *extra],
        cwd=folder,
        check=True,
        timeout=60,
        capture_output=True,
    )


def test_django_startproject_in_the_current_folder(tmp_path: Path) -> None:
    _startproject(tmp_path, ".")  # manage.py and mysite/ at the top
    argv, origin = _resolve(tmp_path)
    assert argv == [
        "/bin/sh",
        "-c",
        "exec gunicorn --bind 127.0.0.1:$PORT --workers 1 "
        "--threads 80 --timeout 0 mysite.wsgi:application",
    ]
    assert origin == "default: Django project in mysite/wsgi.py -> gunicorn"


def test_django_startproject_one_folder_deep(tmp_path: Path) -> None:
    _startproject(tmp_path)  # mysite/manage.py and mysite/mysite/
    app, _ = detect_default_app(tmp_path)
    assert app is not None
    assert (app.target, app.chdir, app.packages) == (
        "mysite.wsgi:application",
        "mysite",
        ("django",),
    )
    assert app.command().startswith("exec gunicorn --chdir mysite --bind 127.0.0.1:$PORT")


def test_nothing_found_says_what_was_looked_for_and_what_to_do(tmp_path: Path) -> None:
    write_tree(tmp_path, {"main.py": "print('no app here')\n", "README.md": ""})
    with pytest.raises(BuildError) as raised:
        _resolve(tmp_path, procfile="worker: python work.py\n", dockerfile="FROM python:3.12\n")
    message = str(raised.value)
    for expected in (
        "no entrypoint found",
        "--command",
        "GOOGLE_ENTRYPOINT",
        "Procfile",
        "CMD or ENTRYPOINT",
        "main.py or app.py",
        "manage.py",
        "the Procfile has no `web:` line",
        "the Dockerfile has no CMD or ENTRYPOINT",
        "main.py defines no module-level `app`",
        "no manage.py",
        "Add a Procfile",
        "or pass --command",
    ):
        assert expected in message, expected


def test_nothing_found_in_an_empty_app(tmp_path: Path) -> None:
    write_tree(tmp_path, {"README.md": ""})
    with pytest.raises(BuildError, match=r"no Procfile; no Dockerfile; no main.py or app.py"):
        _resolve(tmp_path)


@pytest.mark.parametrize(
    ("argv", "server"),
    [
        (["/bin/sh", "-c", "exec gunicorn --bind :$PORT main:app"], "gunicorn"),
        (["/bin/sh", "-c", "uvicorn main:app --port $PORT"], "uvicorn"),
        (["gunicorn", "-k", "uvicorn.workers.UvicornWorker", "main:app"], "gunicorn"),
        (["python", "-m", "uvicorn", "main:app"], "uvicorn"),
        (["/srv/venv/bin/gunicorn", "main:app"], "gunicorn"),
        (["/bin/sh", "-c", "PYTHONUNBUFFERED=1 exec gunicorn main:app"], "gunicorn"),
        (["/bin/sh", "-c", "exec 'gunicorn' --bind \":$PORT\" main:app"], "gunicorn"),
        (["/bin/sh", "-c", "exec uvicorn 'main:app"], "uvicorn"),  # open quote: plain split
        (["/bin/sh", "-c", "hypercorn main:app --bind 0.0.0.0:$PORT"], "other"),
        (["python", "main.py"], "other"),
        (["/bin/sh", "-c", "python main.py --log-file=/var/log/gunicorn"], "other"),
    ],
)
def test_guess_server(argv: list[str], server: str) -> None:
    assert guess_server(argv) == server


@pytest.mark.parametrize("concurrency", [1, 8, 80, 1000])
def test_the_default_gunicorn_command_has_a_thread_per_request_of_the_concurrency(
    tmp_path: Path, concurrency: int
) -> None:
    """gunicorn serves one request per thread: fewer threads than --concurrency would queue
    requests inside gunicorn while the router and autoscaler count them as being served."""
    app_dir = write_tree(tmp_path, {"main.py": FLASK_MAIN})
    entrypoint = resolve_entrypoint(
        command=None,
        args=None,
        user_env={},
        procfile=None,
        dockerfile=None,
        app_dir=app_dir,
        concurrency=concurrency,
    )
    assert entrypoint.argv[2] == (
        f"exec gunicorn --bind 127.0.0.1:$PORT --workers 1 --threads {concurrency} "
        "--timeout 0 main:app"
    )
    assert fit_default_threads(entrypoint.argv, entrypoint.origin, 3)[2] == (
        "exec gunicorn --bind 127.0.0.1:$PORT --workers 1 --threads 3 --timeout 0 main:app"
    )
    # The seed's Dockerfile CMD is the user's choice: never rewritten.
    seed = ("/bin/sh", "-c", "exec gunicorn --bind :$PORT --workers 1 --threads 8 --timeout 0 x:a")
    assert fit_default_threads(seed, "Dockerfile CMD (line 8)", 80) == list(seed)
