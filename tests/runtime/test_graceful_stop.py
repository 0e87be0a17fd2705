"""Stops are graceful and complete, against real processes: the supervisor's stop (SIGTERM,
the grace, SIGKILL) over a ProcessRuntime, as the daemon wires them.

The app below listens on $PORT and, on SIGTERM, takes HANDLER_SECONDS to "finish its work"
before it writes a file and exits: longer than the second a stop used to give a shell's child.
It may start a process that leaves its group (`setsid`) or the whole tree (a double fork).
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes import redirected

from homerun.observe.logs import LogStore
from homerun.routing.throttler import Throttler
from homerun.runtime.process import (
    ProcessInstance,
    ProcessRuntime,
    exec_simple_command,
    process_start_ticks,
)
from homerun.scaling.supervisor import InstanceRegistry, Supervisor
from homerun.scaling.unit import RevisionPlan, RevisionUnit

HANDLER_SECONDS = 1.5
GRACE_SECONDS = 8.0

APP = f"""
import os, signal, socket, subprocess, sys, time

HERE = os.environ["STATE_DIR"]

def note(name, text):
    path = os.path.join(HERE, name)
    with open(path + ".tmp", "w") as out:
        out.write(text)
    os.replace(path + ".tmp", path)

def on_term(signum, frame):
    time.sleep({HANDLER_SECONDS})  # in-flight work finishing
    note("terminated", str(os.getpid()))
    sys.exit(0)

signal.signal(signal.SIGTERM, on_term)
SLEEPER = [sys.executable, "-c", os.environ.get("LEFTOVER", "import time; time.sleep(600)")]
how = os.environ.get("LEAVE_BEHIND", "")
if how == "setsid":
    note("leftover", str(subprocess.Popen(SLEEPER, start_new_session=True).pid))
elif how == "double-fork":
    middle = os.fork()
    if middle == 0:
        os.setsid()
        if os.fork() == 0:
            note("leftover", str(os.getpid()))
            os.execv(SLEEPER[0], SLEEPER)
        os._exit(0)
    os.waitpid(middle, 0)
server = socket.create_server(("127.0.0.1", int(os.environ["PORT"])))
note("listening", str(os.getpid()))
while True:
    time.sleep(600)
"""

# A leftover that ignores SIGTERM, and says when it does.
STUBBORN = (
    "import os, signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    "open(os.path.join(os.environ['STATE_DIR'], 'stubborn'), 'w').close(); time.sleep(600)"
)

# A Procfile's `web: python app.py` (exec'd by the runtime), and a script the shell must run
# itself (it forks python and waits).
SIMPLE = "python app.py"
SCRIPT = "cd . && python app.py"


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


class Platform:
    """One revision of APP under a real supervisor and process runtime."""

    def __init__(
        self,
        tmp_path: Path,
        command: str,
        grace: float,
        runtime_grace: float | None = None,
        **env: str,
    ) -> None:
        self.state = tmp_path / "state"
        self.state.mkdir()
        (tmp_path / "app.py").write_text(APP)
        # As the daemon makes it, the supervisor's grace alone by default.
        self.runtime = ProcessRuntime(stop_grace=runtime_grace)
        self.supervisor = Supervisor(
            self.runtime,
            LogStore(tmp_path / "logs"),
            InstanceRegistry(record=lambda *_: None, forget=lambda _: None),
            clock=time.monotonic,
            probe_interval=0.05,
            stop_grace=grace,
            redirected_ports=redirected,
        )
        python_dir = str(Path(sys.executable).parent)
        plan = RevisionPlan(
            service="svc",
            name="svc-00001-abc",
            argv=["/bin/sh", "-c", command],
            env={
                "PATH": f"{python_dir}:{os.environ['PATH']}",
                "STATE_DIR": str(self.state),
                "PYTHONUNBUFFERED": "1",
                **env,
            },
            cwd=tmp_path,
            concurrency=5,
            startup_timeout=20,
            request_timeout=10,
        )
        throttler = Throttler(plan.name, lambda: None, time.monotonic)
        self.unit = RevisionUnit(plan, throttler, deploying=False)

    def noted(self, name: str) -> int | None:
        path = self.state / name
        return int(path.read_text() or 0) if path.exists() else None

    async def wait_for(self, name: str) -> None:
        for _ in range(1000):
            if self.noted(name) is not None:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{name} was not noted in 10 s")

    async def stop(self) -> float:
        """Stop the revision as a retirement or `homerun down` does; how long it took."""
        started = time.monotonic()
        await self.supervisor.stop_revision(self.unit)
        return time.monotonic() - started


def started(
    tmp_path: Path,
    command: str,
    grace: float = GRACE_SECONDS,
    runtime_grace: float | None = None,
    **env: str,
) -> Platform:
    platform = Platform(tmp_path, command, grace, runtime_grace, **env)
    platform.runtime.open()
    return platform


class Strays:
    """Processes a test expects to be gone; any left is killed at teardown, pass or fail."""

    def __init__(self) -> None:
        self.started: dict[int, int | None] = {}

    def add(self, pid: int) -> int:
        self.started[pid] = process_start_ticks(pid)
        return pid

    def kill(self) -> None:
        for pid, ticks in self.started.items():
            if ticks is not None and process_start_ticks(pid) == ticks:
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def strays() -> Iterator[Strays]:
    left = Strays()
    yield left
    left.kill()


def exists(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def _status(pid: int) -> str:
    """State and parent of a process, from /proc, for a failure's message."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return "gone"
    return ", ".join(line for line in lines if line.startswith(("State:", "PPid:", "NSsid:")))


def reaped(pid: int) -> bool:
    """Gone, not even a zombie: its parent (the runtime, once it adopted it) waited for it."""
    return not exists(pid)


def test_a_simple_shell_command_runs_in_place_of_the_shell() -> None:
    assert exec_simple_command(["/bin/sh", "-c", "python main.py --port $PORT"]) == [
        "/bin/sh",
        "-c",
        "exec python main.py --port $PORT",
    ]
    # Anything more stays as written: the shell must run it (or an exec would change it).
    for script in (
        "exec gunicorn main:app",
        "cd src && python main.py",
        "python main.py > log",
        "python main.py; echo done",
        "PORT=1 python main.py",
        "cd src",
        "python main.py $(cat flags)",
        "$SERVER main:app",
        "python 'main.py",
    ):
        assert exec_simple_command(["/bin/sh", "-c", script]) == ["/bin/sh", "-c", script]
    assert exec_simple_command(["python", "main.py"]) == ["python", "main.py"]


@pytest.mark.parametrize("command", [SIMPLE, SCRIPT], ids=["simple", "script"])
def test_the_apps_sigterm_handler_runs_to_its_end_under_sh_c(tmp_path: Path, command: str) -> None:
    async def scenario() -> None:
        platform = started(tmp_path, command)
        try:
            instance = await platform.supervisor.start_instance(platform.unit)
            if command == SIMPLE:
                assert platform.noted("listening") == instance.process.pid  # no shell left
            took = await platform.stop()
        finally:
            await platform.supervisor.close()
            platform.runtime.close()
        assert platform.noted("terminated") is not None, "the app's SIGTERM handler was cut"
        assert HANDLER_SECONDS <= took < GRACE_SECONDS / 2

    run(scenario)


@pytest.mark.parametrize("how", ["setsid", "double-fork"])
@pytest.mark.parametrize("command", [SIMPLE, SCRIPT], ids=["simple", "script"])
def test_no_process_of_the_instance_outlives_its_stop(
    tmp_path: Path, command: str, how: str, strays: Strays
) -> None:
    async def scenario() -> None:
        platform = started(tmp_path, command, LEAVE_BEHIND=how)
        try:
            await platform.supervisor.start_instance(platform.unit)
            # The detached grandchild notes itself on its own schedule, maybe after the
            # instance listens (a loaded machine): wait for it rather than read once.
            await platform.wait_for("leftover")
            leftover = platform.noted("leftover")
            assert leftover is not None
            assert exists(strays.add(leftover))
            assert os.getsid(leftover) != platform.unit.instances[0].process.pid
            took = await platform.stop()
        finally:
            await platform.supervisor.close()
            platform.runtime.close()
        assert reaped(leftover), f"pid {leftover} ({how}) outlived the instance's stop"
        assert took < GRACE_SECONDS / 2  # it got SIGTERM with the rest, not SIGKILL at the end

    run(scenario)


def test_a_leftover_that_ignores_sigterm_is_killed_at_the_end_of_the_grace(
    tmp_path: Path, strays: Strays
) -> None:
    grace = 2.5

    async def scenario() -> None:
        platform = started(tmp_path, SIMPLE, grace=grace, LEAVE_BEHIND="setsid", LEFTOVER=STUBBORN)
        try:
            await platform.supervisor.start_instance(platform.unit)
            # The detached grandchild notes itself on its own schedule, maybe after the
            # instance listens (a loaded machine): wait for it rather than read once.
            await platform.wait_for("leftover")
            leftover = platform.noted("leftover")
            assert leftover is not None
            strays.add(leftover)
            await platform.wait_for("stubborn")  # it ignores SIGTERM from now on
            took = await platform.stop()
        finally:
            await platform.supervisor.close()
            platform.runtime.close()
        assert reaped(leftover)
        assert grace - 0.5 <= took < grace + 2

    run(scenario)


def test_a_runtime_with_a_grace_kills_what_is_left_by_itself(
    tmp_path: Path, strays: Strays
) -> None:
    """A caller that sends SIGTERM and only waits (a job's task stopping) still gets an end:
    the runtime's own grace."""
    grace = 2.0

    async def scenario() -> None:
        platform = started(
            tmp_path, SIMPLE, runtime_grace=grace, LEAVE_BEHIND="setsid", LEFTOVER=STUBBORN
        )
        try:
            instance = await platform.supervisor.start_instance(platform.unit)
            leftover = platform.noted("leftover")
            assert leftover is not None
            strays.add(leftover)
            await platform.wait_for("stubborn")
            asked = time.monotonic()
            instance.process.signal(signal.SIGTERM)
            await asyncio.wait_for(instance.process.wait(), grace + 5)
            took = time.monotonic() - asked
        finally:
            await platform.supervisor.close()
            platform.runtime.close()
        assert platform.noted("terminated") is not None
        assert reaped(leftover)
        assert grace - 0.5 <= took < grace + 2

    run(scenario)


def test_what_a_crashed_instance_left_is_killed_with_it(tmp_path: Path, strays: Strays) -> None:
    """The app exits by itself (no stop) after a scan saw its setsid'd child: the supervisor's
    kill of what is left reaches the child too. The test scans, then tells the app to crash:
    the runtime's own scans come every SCAN_SECONDS, and a machine slow enough could let a
    timed crash come before one of them."""
    crash = (
        "import os, subprocess, sys, time\n"
        "here = os.environ['STATE_DIR']\n"
        "sleeper = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)'],"
        " start_new_session=True)\n"
        "open(os.path.join(here, 'leftover'), 'w').write(str(sleeper.pid))\n"
        "import socket\n"
        "server = socket.create_server(('127.0.0.1', int(os.environ['PORT'])))\n"
        "for _ in range(3000):\n"
        "    if os.path.exists(os.path.join(here, 'crash-now')):\n"
        "        break\n"
        "    time.sleep(0.01)\n"
        "os._exit(3)\n"
    )

    async def scenario() -> None:
        platform = started(tmp_path, "python crash.py")
        (tmp_path / "crash.py").write_text(crash)
        try:
            instance = await platform.supervisor.start_instance(platform.unit)
            leftover = platform.noted("leftover")
            assert leftover is not None
            strays.add(leftover)
            assert isinstance(instance.process, ProcessInstance)
            assert leftover in instance.process.processes.scan()
            (platform.state / "crash-now").touch()
            await asyncio.wait_for(instance.process.exited(), 10)
            for _ in range(500):
                if reaped(leftover):
                    break
                await asyncio.sleep(0.01)
        finally:
            await platform.supervisor.close()
            platform.runtime.close()
        assert reaped(leftover), f"pid {leftover} is left: {_status(leftover)}"

    run(scenario)
