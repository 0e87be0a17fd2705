"""State survives the daemon; instances never do."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from .harness import (
    APPS,
    Platform,
    describe,
    free_port,
    host_pid,
    instance_processes,
    process_alive,
    wait_until_dead,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _deploy_two(platform: Platform) -> int:
    """Deploy the seed Flask app and the streaming app; return the streaming instance's PID."""
    platform.deploy_ok("hello", APPS / "flask_seed")
    platform.deploy_ok("stream", APPS / "streaming", "--set-env-vars", "GREETING=kept")
    assert platform.request("hello", "GET", "/").json() == {"hello": "world"}
    return host_pid(int(platform.env_of("stream")["pid"]), "stream")


def _both_answer(platform: Platform, revision: str) -> None:
    assert platform.request("hello", "GET", "/").json() == {"hello": "world"}
    env = platform.env_of("stream")
    assert env["K_REVISION"] == revision
    assert env["GREETING"] == "kept"
    listed = platform.run("services", "list", check=True).stdout
    assert "hello" in listed and "stream" in listed


def _router_refuses(platform: Platform) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", platform.port), timeout=2):
            return False
    except OSError:
        return True


def test_down_then_up_serves_every_service_again(own_platform: Platform) -> None:
    instance_pid = _deploy_two(own_platform)
    revision = own_platform.env_of("stream")["K_REVISION"]

    result = own_platform.down()
    assert result.returncode == 0, describe(result)
    assert own_platform.process is not None and own_platform.process.poll() is not None
    assert wait_until_dead(instance_pid, timeout=15), "`homerun down` left an instance running"
    assert own_platform.run("status").returncode != 0
    assert _router_refuses(own_platform)

    own_platform.start()
    _both_answer(own_platform, revision)


def test_sigkill_of_the_daemon_takes_its_instances_along(own_platform: Platform) -> None:
    instance_pid = _deploy_two(own_platform)
    revision = own_platform.env_of("stream")["K_REVISION"]
    assert process_alive(instance_pid)

    own_platform.kill()
    died = wait_until_dead(instance_pid, timeout=15)
    leaked = instance_processes(revisions={revision})
    for pid in leaked:  # don't let a leak break the restart below
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    assert died, f"instance {instance_pid} outlived its SIGKILLed daemon"
    assert own_platform.run("status").returncode != 0

    # A new daemon starts clean over the stale socket and pid file, and serves again.
    own_platform.start()
    _both_answer(own_platform, revision)


def test_deploy_starts_a_daemon_when_none_runs(tmp_path: Path, venv_cache: Path) -> None:
    port = free_port()
    platform = Platform(
        tmp_path / "home", port, venv_cache, {"port": port, "stop-grace-seconds": 3}
    )
    try:
        result = platform.deploy("hello", APPS / "flask_seed", timeout=240)
        assert result.returncode == 0, describe(result)
        assert result.stdout.strip().splitlines()[-1] == f"Service URL: {platform.url('hello')}"
        # It said it started one, and where its log is.
        said = (result.stdout + result.stderr).lower()
        assert "start" in said and "log" in said, describe(result)
        assert platform.run("status").returncode == 0
        assert platform.request("hello", "GET", "/").json() == {"hello": "world"}
    finally:
        _stop_background_daemon(platform)


def _stop_background_daemon(platform: Platform) -> None:
    """`homerun down`; then, if the daemon it started still runs, kill it by its recorded PID."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        platform.run("down", timeout=60)
    pid_file = platform.home / "daemon.pid"
    with contextlib.suppress(FileNotFoundError, ValueError):
        pid = int(pid_file.read_text().split()[0])
        if process_alive(pid) and platform.marker in _environ_of(pid):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while platform.leftover_processes(grace=0) and time.monotonic() < deadline:
        time.sleep(0.2)
    for pid in platform.leftover_processes(grace=0):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _environ_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_status_fails_when_nothing_runs(tmp_path: Path, venv_cache: Path) -> None:
    platform = Platform(tmp_path / "home", free_port(), venv_cache, {})
    started = time.monotonic()
    result = platform.run("status", timeout=30)
    assert result.returncode != 0
    assert time.monotonic() - started < 10
    with pytest.raises(httpx.ConnectError):
        platform.request("hello", "GET", "/", timeout=5)
