"""Starting the daemon in the background: what the user is told, its port above all."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest

from homerun.cli import _daemon
from homerun.config import load_settings
from homerun.errors import HomerunError


class Started:
    """subprocess.Popen's stand-in: a daemon that is running (or has exited with `code`)."""

    pid = 4242

    def __init__(self, code: int | None) -> None:
        self.code = code

    def poll(self) -> int | None:
        return self.code


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    commands: list[list[str]] = []

    def popen(command: list[str], **options: Any) -> Started:
        commands.append(command)
        return Started(None)

    monkeypatch.setattr(subprocess, "Popen", popen)
    monkeypatch.setattr(_daemon, "running", lambda paths: True)
    return commands


def start(home: Path) -> None:
    settings = load_settings(home)
    client = _daemon.start_in_background(home, settings, sleep=lambda _: None, clock=lambda: 0.0)
    client.close()


def test_a_started_daemon_says_its_port_and_where_that_comes_from(
    tmp_path: Path, launched: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    start(tmp_path)
    assert launched[0][-1] == "up"  # no --port: config.yaml's, as every start
    assert capsys.readouterr().err.splitlines() == [
        "homerun was not running: started it in the background (pid 4242) with its router on "
        f"127.0.0.1:8080; its log is {tmp_path}/daemon.log; stop it with `homerun down`",
        f"The port comes from `port:` in {tmp_path}/config.yaml (8080 when unset) at every "
        "start; `homerun up --port N` sets it for one foreground run only.",
    ]


def test_the_port_of_config_yaml_is_the_one_announced(
    tmp_path: Path, launched: list[list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "config.yaml").write_text("port: 9090\n")
    start(tmp_path)
    assert "with its router on 127.0.0.1:9090;" in capsys.readouterr().err


def test_a_taken_port_says_how_to_choose_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "daemon.log").write_text(
        "homerun: cannot listen on 127.0.0.1:8080: Address already in use\n"
    )
    monkeypatch.setattr(subprocess, "Popen", lambda command, **options: Started(1))
    with pytest.raises(HomerunError) as error:
        start(tmp_path)
    message = str(error.value)
    assert message.startswith("homerun was not running and could not be started")
    assert "  homerun: cannot listen on 127.0.0.1:8080: Address already in use" in message
    assert message.endswith(_daemon.port_rule(load_settings(tmp_path).paths(tmp_path)))
