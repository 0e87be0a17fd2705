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


# Start commands as Cloud Run samples and Procfiles write them: their words (PORT_MARK where
# $PORT was), or why a zygote leaves them to a plain spawn (the first thing read decides).
@pytest.mark.parametrize(
    ("script", "expected"),
    [
        (
            "exec gunicorn --bind :$PORT --workers 1 --threads 8 --timeout 0 main:app",
            ["exec", "gunicorn", "--bind", f":{PORT_MARK}", "--workers", "1", "--threads", "8"]
            + ["--timeout", "0", "main:app"],
        ),
        (
            "gunicorn -b 0.0.0.0:${PORT} app:app",
            ["gunicorn", "-b", f"0.0.0.0:{PORT_MARK}", "app:app"],
        ),
        (
            'exec uvicorn main:app --host 0.0.0.0 --port "$PORT"',
            ["exec", "uvicorn", "main:app", "--host", "0.0.0.0", "--port", PORT_MARK],
        ),
        (
            "uvicorn main:app --port=$PORT --proxy-headers --forwarded-allow-ips='*'",
            ["uvicorn", "main:app", f"--port={PORT_MARK}", "--proxy-headers"]
            + ["--forwarded-allow-ips=*"],
        ),
        (
            "gunicorn -k uvicorn.workers.UvicornWorker -b :$PORT 'main:create_app()'",
            ["gunicorn", "-k", "uvicorn.workers.UvicornWorker", "-b", f":{PORT_MARK}"]
            + ["main:create_app()"],
        ),
        ("gunicorn --bind ':$PORT' main:app", ["gunicorn", "--bind", ":$PORT", "main:app"]),
        (
            "gunicorn \\\n  --bind :$PORT \\\n  main:app",
            ["gunicorn", "--bind", f":{PORT_MARK}", "main:app"],
        ),
        (
            'gunicorn --name "web \\"1\\" \\$2 \\x" main:app',
            ["gunicorn", "--name", 'web "1" $2 \\x', "main:app"],
        ),
        ("echo 'it''s' a\\ b", ["echo", "its", "a b"]),
        ("\t gunicorn\tmain:app  ", ["gunicorn", "main:app"]),
        ("gunicorn --bind=:$PORT\r", ["gunicorn", f"--bind=:{PORT_MARK}\r"]),
        ('""', [""]),
        ("   ", []),
        (
            "gunicorn main:create_app()",
            "the command is a shell script (it uses '('), not one command",
        ),
        (
            "exec gunicorn --bind :${PORT:-8080} main:app",
            "the command uses shell expansion (${PORT:-8080...)",
        ),
        (
            "gunicorn -b :$PORT main:app 2>&1",
            "the command is a shell script (it uses '>'), not one command",
        ),
        (
            "cd /app && exec gunicorn main:app",
            "the command is a shell script (it uses '&'), not one command",
        ),
        (
            "gunicorn main:app; echo done",
            "the command is a shell script (it uses ';'), not one command",
        ),
        (
            "gunicorn main:app | tee log",
            "the command is a shell script (it uses '|'), not one command",
        ),
        (
            "gunicorn main:app\nsleep 1",
            "the command is a shell script (it uses '\\n'), not one command",
        ),
        (
            "gunicorn --bind :$PORT main:app # the web server",
            "the command is a shell script (it uses '#'), not one command",
        ),
        (
            "gunicorn --chdir ~/app main:app",
            "the command is a shell script (it uses '~'), not one command",
        ),
        (
            "gunicorn -c conf/*.py main:app",
            "the command is a shell script (it uses '*'), not one command",
        ),
        ("{ gunicorn main:app; }", "the command is a shell script (it uses '{'), not one command"),
        (
            'gunicorn --name "$(hostname)" main:app',
            'the command uses shell expansion ($(hostname)"...)',
        ),
        ('gunicorn --name "`hostname`" main:app', "the command uses command substitution"),
        (
            "gunicorn --name `hostname` main:app",
            "the command is a shell script (it uses '`'), not one command",
        ),
        (
            "gunicorn --workers $WEB_CONCURRENCY main:app",
            "the command uses shell expansion ($WEB_CONCURR...)",
        ),
        (
            'gunicorn --log-level "$1" main:app',
            'the command uses shell expansion ($1" main:app...)',
        ),
        (
            "uvicorn main:app --port $PORTNUMBER",
            "the command uses shell expansion ($PORTNUMBER...)",
        ),
        ("gunicorn --bind :$ main:app", "the command uses shell expansion ($ main:app...)"),
        ("gunicorn main:app 'unterminated", "the command has an unterminated quote"),
        # The $ inside the open quote is read before the quote is found open.
        ('gunicorn "$HOME main:app', "the command uses shell expansion ($HOME main:a...)"),
        (
            'gunicorn main:app | "open',
            "the command is a shell script (it uses '|'), not one command",
        ),
    ],
)
def test_shell_words_of_start_commands(script: str, expected: list[str] | str) -> None:
    outcome = shell_words(script)
    if isinstance(expected, str):
        assert outcome == Unrecognised(expected)
    else:
        assert outcome == expected


def test_a_trailing_backslash_stays_as_sh_keeps_it() -> None:
    # dash and bash pass `main:app\` for `gunicorn main:app\`: a zygote must run the same.
    assert shell_words("gunicorn main:app\\") == ["gunicorn", "main:app\\"]
    assert shell_words("gunicorn \\") == ["gunicorn", "\\"]


@pytest.mark.parametrize(
    ("version", "fit"), [("3.7.16", False), ("3.8.18", True), ("3.13.0", True)]
)
def test_a_virtualenv_older_than_the_zygote_needs_is_spawned(
    venv: Path, version: str, fit: bool
) -> None:
    (venv.parent / "pyvenv.cfg").write_text(f"home = /x/bin\nversion = {version}\n")
    command = recognise(["gunicorn", "main:app"], env_for(venv), "/app")
    if fit:
        assert isinstance(command, ServerCommand)
    else:
        assert command == Unrecognised(
            f"the revision runs on Python {version}, and a zygote needs 3.8 or newer"
        )
