"""Real builds: pip from the package index, real virtualenvs, and the built apps answering."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fakes import free_port

from homerun.build import Artifact, build, load_artifact
from homerun.errors import BuildError, DockerfileError

from .helpers import SEED_FASTAPI_MAIN, SEED_FLASK, Output, write_tree

SEED_CMD = "exec gunicorn --bind :$PORT --workers 1 --threads 8 --timeout 0 main:app"


def _build(
    source: Path,
    dest: Path,
    venv_cache: Path,
    output: Output | None = None,
    *,
    command: list[str] | None = None,
    args: list[str] | None = None,
    user_env: dict[str, str] | None = None,
) -> Artifact:
    return build(
        source,
        dest,
        command=command,
        args=args,
        user_env=user_env or {},
        venv_cache=venv_cache,
        output=output or Output(),
    )


@contextlib.contextmanager
def _serving(artifact: Artifact) -> Iterator[str]:
    """Start the artifact the way an instance starts, and yield its URL once it accepts."""
    port = free_port()
    env = {**artifact.env, "PORT": str(port), "K_SERVICE": "test"}
    process = subprocess.Popen(
        artifact.argv,
        cwd=artifact.cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:  # the startup probe: TCP connect until it succeeds
            if process.poll() is not None:
                logs = process.stdout.read().decode() if process.stdout else ""
                pytest.fail(f"{artifact.argv} exited with {process.returncode}:\n{logs}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"{artifact.argv} never listened on {port}")
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stdout:
            process.stdout.close()


@pytest.fixture(scope="module")
def seed_build(
    tmp_path_factory: pytest.TempPathFactory, venv_cache: Path
) -> tuple[Artifact, Output]:
    output = Output()
    dest = tmp_path_factory.mktemp("seed") / "revision-1"
    return _build(SEED_FLASK, dest, venv_cache, output), output


def test_seed_flask_artifact(seed_build: tuple[Artifact, Output]) -> None:
    artifact, _ = seed_build
    assert artifact.cwd == artifact.root / "rootfs" / "app"
    assert sorted(path.name for path in artifact.cwd.iterdir()) == ["Dockerfile", "main.py"]
    assert (artifact.cwd / "main.py").read_bytes() == (SEED_FLASK / "main.py").read_bytes()
    assert artifact.argv == ["/bin/sh", "-c", SEED_CMD]
    assert artifact.entrypoint_origin == "Dockerfile CMD (line 13)"
    assert artifact.server == "gunicorn"
    assert artifact.venv is not None
    assert set(artifact.env) == {"PATH", "VIRTUAL_ENV"}
    assert artifact.env["VIRTUAL_ENV"] == str(artifact.venv)
    assert artifact.env["PATH"].split(os.pathsep)[0] == str(artifact.venv / "bin")
    assert (artifact.venv / "bin" / "gunicorn").exists()
    assert load_artifact(artifact.root) == artifact


def test_seed_flask_virtualenv_has_flask_and_gunicorn(seed_build: tuple[Artifact, Output]) -> None:
    artifact, _ = seed_build
    assert artifact.venv is not None
    listed = subprocess.run(
        [
            str(artifact.venv / "bin" / "python"),
            "-m",
            "pip",
            "list",
            "--format=freeze",
            "--disable-pip-version-check",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.lower()
    assert "flask==" in listed and "gunicorn==" in listed


def test_seed_flask_build_output(seed_build: tuple[Artifact, Output]) -> None:
    _, output = seed_build
    # FROM python:3.8-slim runs on a Python 3.8 of this machine (pyenv's here), never on
    # another version without a word.
    assert any(
        line.startswith("FROM python:3.8-slim (line 3): Python 3.8.") for line in output.lines
    ), output.lines
    assert "$ pip install flask gunicorn" in output.lines
    # pip's own lines are streamed, not summarized
    assert any(
        line.startswith("Successfully installed") and "gunicorn" in line for line in output.lines
    )


def test_seed_flask_answers(seed_build: tuple[Artifact, Output]) -> None:
    artifact, _ = seed_build
    with _serving(artifact) as url:
        response = httpx.get(url + "/")
    assert response.status_code == 200
    assert response.json() == {"hello": "world"}
    assert response.headers["server"].startswith("gunicorn")


def test_a_second_build_of_the_same_dependencies_reuses_the_virtualenv(
    seed_build: tuple[Artifact, Output], tmp_path: Path, venv_cache: Path
) -> None:
    first, _ = seed_build
    # Another folder, same Dockerfile: same pip install line, so the same virtualenv.
    source = write_tree(
        tmp_path / "copy",
        {
            "main.py": (SEED_FLASK / "main.py").read_text(),
            "Dockerfile": (SEED_FLASK / "Dockerfile").read_text(),
        },
    )
    output = Output()
    started = time.monotonic()
    second = _build(source, tmp_path / "revision-2", venv_cache, output)
    assert second.venv == first.venv
    assert f"using cached virtualenv {first.venv}" in output.lines
    assert not any(line.startswith("$ pip install") for line in output.lines)
    assert time.monotonic() - started < 5


def test_a_package_that_does_not_exist_fails_with_pips_words(
    tmp_path: Path, venv_cache: Path
) -> None:
    source = write_tree(
        tmp_path / "src",
        {
            "main.py": "from flask import Flask\napp = Flask(__name__)\n",
            "requirements.txt": "flask\nnosuchpkg-homerun-test==0.0.1\n",
        },
    )
    dest = tmp_path / "revision"
    output = Output()
    before = {path.name for path in venv_cache.iterdir()}
    with pytest.raises(BuildError) as raised:
        _build(source, dest, venv_cache, output)
    message = str(raised.value)
    assert "No matching distribution found for nosuchpkg-homerun-test" in message
    assert message.startswith("pip install -r ")
    assert "Fix the requirement" in message
    # pip's lines were streamed as they came, before the error
    assert any("No matching distribution found" in line for line in output.lines)
    # and nothing half-built is left: no artifact folder, no virtualenv without its marker
    assert not dest.exists()
    after = {path.name for path in venv_cache.iterdir()}
    assert {name for name in after - before if not name.endswith(".lock")} == set()


def test_fastapi_seed_without_entrypoint_runs_under_uvicorn(
    tmp_path: Path, venv_cache: Path
) -> None:
    source = write_tree(tmp_path / "src", {"main.py": SEED_FASTAPI_MAIN})
    output = Output()
    artifact = _build(source, tmp_path / "revision", venv_cache, output)
    assert artifact.cwd == artifact.root / "app"
    assert artifact.argv == ["/bin/sh", "-c", "exec uvicorn main:app --host 127.0.0.1 --port $PORT"]
    assert artifact.entrypoint_origin == "default: ASGI app (FastAPI) in main.py -> uvicorn"
    assert artifact.server == "uvicorn"
    assert "$ pip install fastapi uvicorn" in output.lines
    with _serving(artifact) as url:
        response = httpx.get(url + "/produtos", timeout=10)
    assert response.json() == {"produtos": ["Produto 1", "Produto 2"]}
    assert response.headers["server"] == "uvicorn"


def test_a_build_without_dependencies(tmp_path: Path, venv_cache: Path) -> None:
    source = write_tree(
        tmp_path / "src",
        {
            "Procfile": "web: exec python -m http.server $PORT --bind 127.0.0.1\n",
            "index.html": "hello from homerun\n",
            "Dockerfile": (
                "FROM python:3.12-slim\nWORKDIR /site\nCOPY index.html .\n"
                "ENV GREETING=hi PORT=9999 K_SERVICE=nope\nEXPOSE 8000\n"
            ),
        },
    )
    output = Output()
    artifact = _build(source, tmp_path / "revision", venv_cache, output)
    assert artifact.entrypoint_origin == "Procfile web:"
    assert artifact.cwd == artifact.root / "rootfs" / "site"
    assert artifact.env["GREETING"] == "hi"
    assert "PORT" not in artifact.env and "K_SERVICE" not in artifact.env
    assert "ENV PORT ignored: PORT and K_* are set by the platform" in output.lines
    assert "EXPOSE 8000: informational; instances listen on $PORT" in output.lines
    assert "dependencies: nothing to install" in output.lines
    with _serving(artifact) as url:
        assert httpx.get(url + "/index.html").text == "hello from homerun\n"


def test_exec_form_paths_into_the_image_point_at_the_copy(tmp_path: Path, venv_cache: Path) -> None:
    source = write_tree(
        tmp_path / "src",
        {
            "server.py": "print('hi')\n",
            "Dockerfile": (
                'FROM python:3.12\nCOPY server.py /opt/app/\nCMD ["python", "/opt/app/server.py"]\n'
            ),
        },
    )
    artifact = _build(source, tmp_path / "revision", venv_cache)
    assert artifact.argv == ["python", str(artifact.root / "rootfs" / "opt" / "app" / "server.py")]
    assert artifact.cwd == artifact.root / "rootfs"


def test_command_gets_past_a_dockerfile_outside_the_subset(
    tmp_path: Path, venv_cache: Path
) -> None:
    files = {
        "main.py": "print('hi')\n",
        "Dockerfile": "FROM python:3.12\nRUN apt-get install -y curl\nCMD python main.py\n",
    }
    source = write_tree(tmp_path / "src", files)
    with pytest.raises(DockerfileError) as raised:
        _build(source, tmp_path / "refused", venv_cache)
    assert raised.value.line == 2
    assert not (tmp_path / "refused").exists()
    output = Output()
    artifact = _build(
        source, tmp_path / "revision", venv_cache, output, command=["python", "main.py"]
    )
    assert artifact.argv == ["python", "main.py"]
    assert artifact.cwd == artifact.root / "app"
    assert any(
        line.startswith("ignoring the Dockerfile because --command was given")
        for line in output.lines
    )


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: root / "missing", "does not exist"),
        (
            lambda root: write_tree(root / "f", {"main.py": ""}) / "main.py",
            "is a file, not a folder",
        ),
        (lambda root: write_tree(root / "empty", {}), "is empty"),
    ],
)
def test_build_validates_the_source(
    tmp_path: Path, venv_cache: Path, setup: Callable[[Path], Path], message: str
) -> None:
    with pytest.raises(BuildError, match=message):
        _build(setup(tmp_path), tmp_path / "revision", venv_cache)
    assert not (tmp_path / "revision").exists()


def test_build_refuses_a_used_destination(tmp_path: Path, venv_cache: Path) -> None:
    source = write_tree(tmp_path / "src", {"main.py": ""})
    dest = write_tree(tmp_path / "revision", {"artifact.json": "{}"})
    with pytest.raises(BuildError, match="already exists and is not empty"):
        _build(source, dest, venv_cache, command=["python", "main.py"])
    assert (dest / "artifact.json").read_text() == "{}"


def test_no_entrypoint_fails_and_leaves_nothing(tmp_path: Path, venv_cache: Path) -> None:
    source = write_tree(tmp_path / "src", {"README.md": "docs only\n"})
    with pytest.raises(BuildError, match="no entrypoint found"):
        _build(source, tmp_path / "revision", venv_cache)
    assert not (tmp_path / "revision").exists()


def test_a_python_version_the_machine_lacks_is_refused_plainly(
    tmp_path: Path, venv_cache: Path
) -> None:
    source = tmp_path / "src"
    write_tree(
        source,
        {
            "main.py": (SEED_FLASK / "main.py").read_text(),
            "Dockerfile": "FROM python:3.99-slim\nCOPY . .\nRUN pip install flask\n"
            'CMD ["python", "main.py"]\n',
        },
    )
    with pytest.raises(BuildError) as raised:
        _build(source, tmp_path / "dest", venv_cache)
    message = str(raised.value)
    assert message.startswith(f"{source / 'Dockerfile'}:1: FROM python:3.99-slim asks for ")
    assert "Python 3.99, and this machine has none (it has " in message
    assert "pyenv install 3.99" in message and "install podman" in message
    assert not (tmp_path / "dest").exists()


def test_an_older_python_the_machine_lacks_builds_on_its_default_saying_so(
    tmp_path: Path, venv_cache: Path
) -> None:
    """The seed's FROM python:3.8-slim on a machine with one newer Python: it runs there, and
    the build says what it asked for, what it got and how to get the asked one."""
    source = write_tree(
        tmp_path / "src",
        {
            "main.py": "def app(environ, start_response): ...\n",
            "Dockerfile": 'FROM python:3.1-slim\nCOPY . .\nCMD ["python", "main.py"]\n',
        },
    )
    output = Output()
    artifact = _build(source, tmp_path / "dest", venv_cache, output)
    default = f"{sys.version_info.major}.{sys.version_info.minor}"
    note = next(line for line in output.lines if "asks for Python 3.1," in line)
    assert note.startswith(f"{source / 'Dockerfile'}:1: FROM python:3.1-slim asks for ")
    assert f"building with its Python {default}." in note
    assert "pyenv install 3.1" in note and "scripts/setup containers" in note
    assert any(
        line.startswith(f"building {source} with Python {default}.") for line in output.lines
    )
    assert artifact.argv[0].endswith("python")


# A server of the standard library, so any Python from 3.6 runs it without a pip install: its
# answer is the interpreter's sys.version.
VERSION_APP = """\
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Answer(BaseHTTPRequestHandler):
    def do_GET(self):
        body = sys.version.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Answer).serve_forever()
"""


def _pyenv_version(prefix: str) -> str:
    """The newest pyenv Python X.Y.Z of `prefix` on this machine; the test is skipped without."""
    from homerun.build.pythons import matches, pythons_on_machine

    found = [
        python.version
        for python in pythons_on_machine(os.environ)
        if python.where == "pyenv" and matches(python.version, prefix)
    ]
    if not found:
        pytest.skip(f"no pyenv Python {prefix} on this machine")
    return max(found, key=lambda version: tuple(int(part) for part in version.split(".")))


def _answer(artifact: Artifact) -> str:
    with _serving(artifact) as url:
        return httpx.get(url, timeout=10).text


@pytest.mark.parametrize(
    ("files", "version", "label"),
    [
        ({".python-version": "3.12\n"}, "3.12", ".python-version (line 1)"),
        (
            {".python-version": "# for the deploy\n\n3.9\n3.12\n"},
            "3.9",
            ".python-version (line 3)",
        ),
        ({"runtime.txt": "python-3.10\n"}, "3.10", "runtime.txt (line 1: python-3.10)"),
        (
            {"pyproject.toml": '[project]\nname = "v"\nrequires-python = ">=3.8,<3.11"\n'},
            "3.10",
            "pyproject.toml requires-python (line 3: >=3.8,<3.11)",
        ),
    ],
)
def test_the_python_a_file_asks_for_runs_the_app(
    tmp_path: Path, venv_cache: Path, files: dict[str, str], version: str, label: str
) -> None:
    full = _pyenv_version(version)
    source = write_tree(
        tmp_path / "src", {"main.py": VERSION_APP, "Procfile": "web: python main.py\n", **files}
    )
    output = Output()
    artifact = _build(source, tmp_path / "dest", venv_cache, output)
    assert _answer(artifact).startswith(f"{full} ")
    assert any(line.startswith(f"{label}: Python {full} (") for line in output.lines)
    assert any(line.startswith(f"building {source} with Python {full} (") for line in output.lines)


def test_precedence_is_said_and_the_first_source_wins(tmp_path: Path, venv_cache: Path) -> None:
    full = _pyenv_version("3.9")
    source = write_tree(
        tmp_path / "src",
        {
            "main.py": VERSION_APP,
            "Procfile": "web: python main.py\n",
            ".python-version": "3.12\n",
            "runtime.txt": "python-3.10\n",
        },
    )
    output = Output()
    artifact = _build(
        source, tmp_path / "dest", venv_cache, output, user_env={"GOOGLE_PYTHON_VERSION": "3.9.x"}
    )
    assert _answer(artifact).startswith(f"{full} ")
    assert "GOOGLE_PYTHON_VERSION=3.9.x: Python " + full + " (" in "\n".join(output.lines)
    assert ".python-version is not read: GOOGLE_PYTHON_VERSION=3.9.x chooses the Python" in (
        output.lines
    )
    assert "runtime.txt is not read: GOOGLE_PYTHON_VERSION=3.9.x chooses the Python" in (
        output.lines
    )


def test_a_dockerfiles_from_wins_over_python_version(tmp_path: Path, venv_cache: Path) -> None:
    full = _pyenv_version("3.10")
    source = write_tree(
        tmp_path / "src",
        {
            "main.py": VERSION_APP,
            "Dockerfile": 'FROM python:3.10-slim\nCOPY . .\nCMD ["python", "main.py"]\n',
            ".python-version": "3.12\n",
        },
    )
    output = Output()
    artifact = _build(source, tmp_path / "dest", venv_cache, output)
    assert _answer(artifact).startswith(f"{full} ")
    assert ".python-version is not read: FROM python:3.10-slim (line 1) chooses the Python" in (
        output.lines
    )


def test_a_newer_python_version_than_the_machine_has_is_refused(
    tmp_path: Path, venv_cache: Path
) -> None:
    source = write_tree(tmp_path / "src", {"main.py": VERSION_APP, ".python-version": "\n3.99\n"})
    with pytest.raises(BuildError) as raised:
        _build(source, tmp_path / "dest", venv_cache)
    message = str(raised.value)
    assert message.startswith(f"{source / '.python-version'}:2: asks for Python 3.99, and ")
    assert "this machine has none (it has " in message and "pyenv install 3.99" in message
    # No Dockerfile here: the container path needs one, and the advice says so.
    assert "a Dockerfile with `FROM python:3.99-slim`, with podman installed" in message
    assert not (tmp_path / "dest").exists()


def test_a_range_above_the_machine_is_refused_naming_a_version_to_install(
    tmp_path: Path, venv_cache: Path
) -> None:
    source = write_tree(
        tmp_path / "src",
        {
            "main.py": VERSION_APP,
            "pyproject.toml": '[project]\nname = "v"\nrequires-python = ">=3.20"\n',
        },
    )
    with pytest.raises(BuildError) as raised:
        _build(source, tmp_path / "dest", venv_cache)
    message = str(raised.value)
    assert message.startswith(f"{source / 'pyproject.toml'}:3: asks for Python >=3.20, and ")
    assert "pyenv install 3.20" in message


def test_an_older_runtime_txt_builds_on_the_default_saying_so(
    tmp_path: Path, venv_cache: Path
) -> None:
    source = write_tree(
        tmp_path / "src",
        {
            "main.py": VERSION_APP,
            "Procfile": "web: python main.py\n",
            "runtime.txt": "python-3.1\n",
        },
    )
    output = Output()
    artifact = _build(source, tmp_path / "dest", venv_cache, output)
    default = f"{sys.version_info.major}.{sys.version_info.minor}"
    note = next(line for line in output.lines if "asks for Python 3.1," in line)
    assert note.startswith(f"{source / 'runtime.txt'}:1: asks for Python 3.1, which this ")
    assert f"building with its Python {default}." in note and "pyenv install 3.1" in note
    assert _answer(artifact).startswith(f"{default}.")
