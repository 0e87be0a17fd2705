"""Which start commands a zygote can run: words as sh splits them, $PORT, console scripts."""

from __future__ import annotations

from pathlib import Path

import pytest

from homerun.runtime._zygote_command import (
    PORT_MARK,
    ServerCommand,
    Unrecognised,
    recognise,
    shell_words,
)


@pytest.fixture
def venv(tmp_path: Path) -> Path:
    """A virtualenv's bin folder as pip leaves it: python, and console scripts naming it."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    python = bin_dir / "python"
    python.write_text("")
    python.chmod(0o755)
    for server in ("gunicorn", "uvicorn"):
        script = bin_dir / server
        script.write_text(f"#!{python}\nimport sys\n")
        script.chmod(0o755)
    return bin_dir


def env_for(bin_dir: Path) -> dict[str, str]:
    return {"PATH": f"{bin_dir}:/usr/bin:/bin", "PORT": "8080"}


def test_the_seeds_gunicorn_command(venv: Path) -> None:
    argv = [
        "/bin/sh",
        "-c",
        "exec gunicorn --bind :$PORT --workers 1 --threads 8 --timeout 0 main:app",
    ]
    command = recognise(argv, env_for(venv), "/app")
    assert command == ServerCommand(
        server="gunicorn",
        interpreter=str(venv / "python"),
        program=str(venv / "gunicorn"),
        module=None,
        args=(
            "--bind",
            f":{PORT_MARK}",
            "--workers",
            "1",
            "--threads",
            "8",
            "--timeout",
            "0",
            "main:app",
        ),
        shell="/bin/sh",
    )
    assert command.args_for(4321)[:2] == ["--bind", ":4321"]


def test_the_default_uvicorn_command(venv: Path) -> None:
    argv = ["/bin/sh", "-c", "exec uvicorn main:app --host 127.0.0.1 --port ${PORT}"]
    command = recognise(argv, env_for(venv), "/app")
    assert isinstance(command, ServerCommand)
    assert command.server == "uvicorn" and command.program == str(venv / "uvicorn")
    assert command.args_for(9) == ["main:app", "--host", "127.0.0.1", "--port", "9"]


def test_exec_form_and_python_m(venv: Path) -> None:
    exec_form = recognise(["gunicorn", "-b", ":8080", "main:app"], env_for(venv), "/app")
    assert isinstance(exec_form, ServerCommand) and exec_form.shell is None
    assert exec_form.args_for(1) == ["-b", ":8080", "main:app"]  # no shell: nothing expands
    module = recognise(["python", "-m", "uvicorn", "main:app"], env_for(venv), "/app")
    assert isinstance(module, ServerCommand)
    assert (module.server, module.module, module.program) == ("uvicorn", "uvicorn", None)
    assert module.interpreter == str(venv / "python")


def test_pips_launcher_for_long_paths(venv: Path) -> None:
    (venv / "gunicorn").write_text(
        f"#!/bin/sh\n'''exec' \"{venv / 'python'}\" \"$0\" \"$@\"\n' '''\nimport sys\n"
    )
    command = recognise(["gunicorn", "main:app"], env_for(venv), "/app")
    assert isinstance(command, ServerCommand) and command.interpreter == str(venv / "python")


@pytest.mark.parametrize(
    ("script", "reason"),
    [
        ("echo hi && exec gunicorn main:app", "shell script (it uses '&')"),
        ("gunicorn main:app > log", "shell script"),
        ("exec gunicorn --bind :$PORT --name $HOME main:app", "shell expansion"),
        ("exec gunicorn --bind :$(port) main:app", "shell expansion"),
        ("exec gunicorn `cat args` main:app", "shell script"),
        ("FOO=1 gunicorn main:app", "sets a variable first (FOO=...)"),
        ("exec -a web gunicorn main:app", "`exec -a`"),
        ("exec flask run --port $PORT", "does not start gunicorn or uvicorn"),
        ("python app.py", "does not start gunicorn or uvicorn"),
        ("exec gunicorn 'main:app", "unterminated quote"),
        ("", "empty"),
    ],
)
def test_what_is_left_to_a_plain_spawn(venv: Path, script: str, reason: str) -> None:
    outcome = recognise(["/bin/sh", "-c", script], env_for(venv), "/app")
    assert isinstance(outcome, Unrecognised) and reason in outcome.reason, outcome


def test_a_server_that_is_not_a_python_console_script(venv: Path, tmp_path: Path) -> None:
    (venv / "gunicorn").write_text("#!/bin/bash\necho no\n")
    outcome = recognise(["gunicorn", "main:app"], env_for(venv), "/app")
    assert isinstance(outcome, Unrecognised) and "not a Python console script" in outcome.reason
    outcome = recognise(["uvicorn", "main:app"], {"PATH": str(tmp_path)}, "/app")
    assert (
        isinstance(outcome, Unrecognised) and "not found on the instance's PATH" in outcome.reason
    )


def test_shell_arguments_after_the_script_are_left_alone(venv: Path) -> None:
    outcome = recognise(["/bin/sh", "-c", "exec gunicorn main:app", "sh", "x"], env_for(venv), "/")
    assert isinstance(outcome, Unrecognised)


@pytest.mark.parametrize(
    ("script", "words"),
    [
        (
            "exec gunicorn -b :$PORT main:app",
            ["exec", "gunicorn", "-b", f":{PORT_MARK}", "main:app"],
        ),
        ("a \"b c\" 'd $HOME' e\\ f", ["a", "b c", "d $HOME", "e f"]),
        ('--forwarded-allow-ips="*" x', ["--forwarded-allow-ips=*", "x"]),
        ('"${PORT}"x $PORT', [f"{PORT_MARK}x", PORT_MARK]),
        ("a#b  c\\\n d", ["a#b", "c", "d"]),
        ('"a\\"b\\$c"', ['a"b$c']),
    ],
)
def test_shell_words(script: str, words: list[str]) -> None:
    assert shell_words(script) == words
