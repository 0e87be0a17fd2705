"""`homerun up`, `down` and `status` over a fake client."""

from __future__ import annotations

import fcntl
from pathlib import Path

import pytest

import homerun.daemon
from homerun.cli import _daemon
from homerun.config import Settings

from .conftest import FakeClient, Run


def test_status_says_where_and_what(run: Run, home: Path) -> None:
    result = run("status")
    assert result.code == 0
    assert result.out.splitlines() == [
        f"homerun is running (pid 4242), HOMERUN_HOME={home}",
        "  router:    http://127.0.0.1:8080",
        "  dashboard: http://127.0.0.1:8081",
        "  services:  1, revisions: 1, instances: 1",
        "  hello                    http://hello.localhost:8080",
    ]


def test_status_without_a_daemon(run: Run, fake: FakeClient, home: Path) -> None:
    fake.running = False
    result = run("status")
    assert result.code == 1
    assert result.out == f"homerun is not running (HOMERUN_HOME={home})\n"


def test_down_stops_and_waits_until_the_daemon_is_gone(run: Run, fake: FakeClient) -> None:
    result = run("down")
    assert result.code == 0 and result.out == "homerun stopped\n"
    assert [name for name, _ in fake.calls] == ["shutdown", "status"]


def test_down_without_a_daemon(run: Run, fake: FakeClient) -> None:
    fake.running = False
    result = run("down")
    assert result.code == 0 and result.out.startswith("homerun is not running")


def test_up_refuses_a_second_daemon(run: Run) -> None:
    result = run("up")
    assert result.code == 1
    assert "homerun already runs" in result.err


def test_up_says_its_port_is_for_this_run_only(
    run: Run, fake: FakeClient, home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[Settings] = []
    monkeypatch.setattr(homerun.daemon, "run", lambda home, settings: started.append(settings))
    fake.running = False
    result = run("up", "--port", "9090")
    assert result.code == 0 and started[0].port == 9090
    assert result.err == (
        "--port 9090 is for this run only: a daemon that `homerun deploy` starts later listens "
        f"on 8080 (`port:` in {home}/config.yaml, 8080 when unset)\n"
    )
    # The port config.yaml names is no news.
    home.mkdir()
    (home / "config.yaml").write_text("port: 9090\n")
    assert run("up", "--port", "9090").err == ""
    assert run("up").err == "" and started[-1].port == 9090


def test_a_daemon_is_alive_while_it_holds_its_lock(tmp_path: Path) -> None:
    # `down` waits for this, not for the admin socket's silence: the daemon closes its store
    # after it stopped answering, and holds daemon.lock until its process exits.
    paths = Settings().paths(tmp_path)
    assert not _daemon.alive(paths)  # no lock file: never started
    with open(paths.lock_file, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert _daemon.alive(paths)
        fcntl.flock(held, fcntl.LOCK_UN)
        assert not _daemon.alive(paths)  # left behind by a daemon that exited
