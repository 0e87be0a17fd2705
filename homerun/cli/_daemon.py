"""Starts the daemon in the background when a command needs one and none runs."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from homerun.client import Client
from homerun.config import Paths, Settings
from homerun.errors import HomerunError

DAEMON_START_SECONDS = 30.0
START_POLL_SECONDS = 0.05


def running(paths: Paths) -> bool:
    """Whether a daemon answers on this HOMERUN_HOME's socket (never a remote one)."""
    client = Client(paths.admin_socket)
    try:
        client.status()
    except HomerunError:
        return False
    finally:
        client.close()
    return True


def alive(paths: Paths) -> bool:
    """Whether a daemon process of this HOMERUN_HOME still lives: it holds daemon.lock until it
    exits, after it stopped answering and closed its store."""
    try:
        lock_file = open(paths.lock_file)  # noqa: SIM115 - closed below, whatever happens
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(lock_file, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        lock_file.close()  # the shared lock, if taken, goes with it
    return False


def start_in_background(
    home: Path,
    settings: Settings,
    *,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> Client:
    """`homerun up` in a session of its own, logging to daemon.log; its client once it answers.

    It reads config.yaml as any start does, so its router's port is config.yaml's `port:`
    (8080 when unset), not the `--port` of an earlier `homerun up`: the message says so."""
    paths = settings.paths(home)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(paths.daemon_log, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "homerun", "up"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ, HOMERUN_HOME=str(home)),
        )
    deadline = clock() + DAEMON_START_SECONDS
    while clock() < deadline:
        if process.poll() is not None:
            tail = paths.daemon_log.read_text(errors="replace").splitlines()[-10:]
            # The daemon's own hint for a taken port names `homerun up --port`, which is not
            # how to move a daemon that deploy starts.
            taken = any("cannot listen on" in line for line in tail)
            raise HomerunError(
                "homerun was not running and could not be started in the background:\n"
                + "\n".join("  " + line for line in tail)
                + (f"\n{port_rule(paths)}" if taken else "")
            )
        if running(paths):
            print(
                f"homerun was not running: started it in the background (pid {process.pid}) "
                f"with its router on {settings.listen}:{settings.port}; its log is "
                f"{paths.daemon_log}; stop it with `homerun down`\n{port_rule(paths)}",
                file=sys.stderr,
            )
            return Client(paths.admin_socket)
        sleep(START_POLL_SECONDS)
    raise HomerunError(
        f"homerun did not start within {DAEMON_START_SECONDS:g}s; see {paths.daemon_log}"
    )


def port_rule(paths: Paths) -> str:
    """Where a daemon's port comes from, said wherever one is started for the user."""
    return (
        f"The port comes from `port:` in {paths.config_file} (8080 when unset) at every "
        "start; `homerun up --port N` sets it for one foreground run only."
    )
