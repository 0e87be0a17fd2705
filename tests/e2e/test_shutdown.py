"""`homerun down` is graceful: no new connections, requests in flight finish with their answer,
then instances stop, their SIGTERM handlers run to their end, and nothing they started is left.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from .harness import (
    APPS,
    HOMERUN,
    Platform,
    host_pid,
    instance_processes,
    process_alive,
    running_platform,
    wait_until_dead,
)

pytestmark = pytest.mark.e2e

WHOAMI = APPS / "whoami"
STOP_GRACE_SECONDS = 10.0
SLOW_SECONDS = 5.0  # wide enough a window to see all of them in flight on a busy machine
IN_FLIGHT = 20
HANDLER_SECONDS = 1.5

# A Procfile app run through `/bin/sh -c` (no `exec`): on SIGTERM it takes HANDLER_SECONDS to
# finish its work, then logs that it did; at start it leaves a process outside its group
# (setsid) and one outside its tree (a double fork), told apart by their command lines. (The
# test finds them in /proc and reads the app's log: in a sandbox, the app's pids are its PID
# namespace's and the test's folders are hidden from it.)
GRACEFUL_APP = f"""
import os, signal, socket, subprocess, sys, time

def on_term(signum, frame):
    time.sleep({HANDLER_SECONDS})
    print("graceful: terminated", flush=True)
    sys.exit(0)

signal.signal(signal.SIGTERM, on_term)
def sleeper(how):
    return [sys.executable, "-c", "import time; time.sleep(600)", how]
subprocess.Popen(sleeper("setsid"), start_new_session=True)
middle = os.fork()
if middle == 0:
    os.setsid()
    if os.fork() == 0:
        argv = sleeper("double-fork")
        os.execv(argv[0], argv)
    os._exit(0)
os.waitpid(middle, 0)
server = socket.create_server(("127.0.0.1", int(os.environ["PORT"])))
while True:
    connection, _ = server.accept()
    connection.recv(65536)
    connection.sendall(
        b"HTTP/1.1 200 OK\\r\\ncontent-length: 2\\r\\nconnection: close\\r\\n\\r\\nok"
    )
    connection.close()
"""


@pytest.fixture
def patient_platform(tmp_path: Path, venv_cache: Path) -> Iterator[Platform]:
    """A daemon of its own with Cloud Run's 10 s stop grace."""
    config = {"stop-grace-seconds": STOP_GRACE_SECONDS}
    with running_platform(tmp_path / "home", venv_cache, config) as own:
        yield own


def until(condition: Callable[[], object], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_down_lets_requests_in_flight_finish_then_stops(patient_platform: Platform) -> None:
    platform = patient_platform
    platform.deploy_ok("patient", WHOAMI, "--concurrency", str(IN_FLIGHT))
    instance_pid = host_pid(platform.request("patient", "GET", "/").json()["pid"], "patient")

    def slow() -> int:
        response = platform.request("patient", "GET", "/slow", params={"seconds": SLOW_SECONDS})
        return response.status_code

    with concurrent.futures.ThreadPoolExecutor(IN_FLIGHT) as pool:
        in_flight = [pool.submit(slow) for _ in range(IN_FLIGHT)]

        def all_in_flight() -> bool:
            revision = platform.describe_service("patient")["revisions"][0]
            return bool(revision["in_flight"] == IN_FLIGHT)

        until(all_in_flight, f"{IN_FLIGHT} requests in flight")
        asked = time.monotonic()
        down = subprocess.Popen(
            [*HOMERUN, "down"], env=platform.env, stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        with down:
            try:
                # While the requests finish, nobody new is let in: the listener is closed first.
                until(
                    lambda: "homerun is stopping" in platform.log_path.read_text(),
                    "the daemon to begin its stop",
                    within=SLOW_SECONDS / 2,
                )
                with pytest.raises(httpx.ConnectError):
                    platform.request("patient", "GET", "/", timeout=2)
                refused_at = time.monotonic()
                assert not any(future.done() for future in in_flight)  # still running
                _, down_stderr = down.communicate(timeout=60)
            finally:
                if down.poll() is None:
                    down.kill()
        took = time.monotonic() - asked
        statuses = [future.result(timeout=30) for future in in_flight]
    assert refused_at - asked < SLOW_SECONDS
    assert down.returncode == 0, down_stderr
    assert statuses == [200] * IN_FLIGHT, statuses
    # `down` returned once the daemon stopped: requests done, then the instance stopped.
    assert platform.process is not None and platform.process.wait(timeout=5) == 0
    assert not process_alive(instance_pid)
    # Bounded: the requests' remaining time and a prompt stop, not a grace waited in full.
    assert took < SLOW_SECONDS + STOP_GRACE_SECONDS / 2, took
    # Nobody is let in any more.
    with pytest.raises(httpx.ConnectError):
        platform.request("patient", "GET", "/", timeout=5)


def test_down_runs_the_apps_sigterm_handler_and_leaves_nothing_behind(
    patient_platform: Platform, tmp_path: Path
) -> None:
    platform = patient_platform
    source = tmp_path / "graceful"
    source.mkdir()
    (source / "main.py").write_text(GRACEFUL_APP)
    (source / "Procfile").write_text("web: python main.py\n")
    platform.deploy_ok("graceful", source)
    assert platform.request("graceful", "GET", "/").status_code == 200
    platform.describe_service("graceful")  # its revision, for the teardown's leak check
    leftovers = {how: sleeper_pid(how) for how in ("setsid", "double-fork")}
    assert all(process_alive(pid) for pid in leftovers.values()), leftovers

    down = platform.down()
    assert down.returncode == 0, down.stderr
    logged = (platform.home / "logs" / "graceful.jsonl").read_text()
    assert "graceful: terminated" in logged, "the app's SIGTERM handler did not run to its end"
    for how, pid in leftovers.items():
        assert wait_until_dead(pid, timeout=1), f"the {how} process outlived `homerun down`"


def sleeper_pid(how: str) -> int:
    """The host's pid of the graceful app's `how` sleeper (its last argument)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for pid in instance_processes(service="graceful"):
            with contextlib.suppress(OSError):
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
                if b"import time; time.sleep(600)" in argv and argv[-2:] == [how.encode(), b""]:
                    return pid
        time.sleep(0.1)
    raise AssertionError(f"no {how} sleeper among the graceful app's processes")
