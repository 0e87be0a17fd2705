"""Test fakes shared by the whole suite: simulated time, free loopback ports, a runtime and a
supervisor without processes.

Tests import them as `from fakes import Clock, free_port` (tests/ is on sys.path through its
conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from homerun.model.states import InstanceState
from homerun.runtime.base import InsideCommand, as_it_is
from homerun.runtime.nat import read_nat_rules, redirected_ports, unredirected_server
from homerun.scaling.unit import ManagedInstance, RevisionUnit
from homerun.store import Store


class Clock:
    """Simulated time: a callable that returns `now`, which tests move by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now

    async def sleep(self, seconds: float) -> None:
        """asyncio.sleep in simulated time: moves the clock at once instead of waiting, and
        yields to the event loop once (callbacks scheduled meanwhile still run)."""
        self.advance(seconds)
        await asyncio.sleep(0)


# Loopback ports a NAT rule sends elsewhere (such as one a removed container left): a server
# on one would never be reached (runtime/nat.py). Read again at most every few seconds: a
# container test may leave one in the middle of the session.
_REDIRECTED_SECONDS = 5.0
_redirected: tuple[float, frozenset[int]] = (float("-inf"), frozenset())


def redirected() -> frozenset[int]:
    global _redirected
    read_at, ports = _redirected
    if time.monotonic() - read_at > _REDIRECTED_SECONDS:
        _redirected = (time.monotonic(), redirected_ports(read_nat_rules()))
    return _redirected[1]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's pick for an ephemeral bind) and
    no NAT rule redirects."""
    while True:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
            probe.bind((host, 0))
            port = int(probe.getsockname()[1])
        if port not in redirected():
            return port


def loopback_listener() -> socket.socket:
    """A socket listening on 127.0.0.1, on a port the kernel picked that no NAT rule
    redirects."""
    return unredirected_server("127.0.0.1", redirected())


PROXY_APP_FOLDER = Path(__file__).parent / "routing" / "apps"
# A gRPC server on h2c (unary and streaming echo calls, the health service): python GRPC_ECHO PORT
GRPC_ECHO = Path(__file__).parent / "apps" / "grpc_echo" / "main.py"


def proxy_app() -> contextlib.AbstractContextManager[tuple[str, int]]:
    """tests/routing/apps/proxy_app.py under uvicorn in its own process, as homerun runs an
    instance."""
    return serving_process(
        lambda port: [
            sys.executable,
            "-m",
            "uvicorn",
            "proxy_app:app",
            "--app-dir",
            str(PROXY_APP_FOLDER),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--no-access-log",
            "--lifespan",
            "off",
            "--timeout-graceful-shutdown",
            "1",
        ],  # fmt: skip
        "the test app",
    )


def grpc_echo() -> contextlib.AbstractContextManager[tuple[str, int]]:
    """tests/apps/grpc_echo in its own process, as an instance deployed with --use-http2."""
    return serving_process(lambda port: [sys.executable, str(GRPC_ECHO), str(port)], "gRPC echo")


@contextlib.contextmanager
def serving_process(command: Callable[[int], list[str]], what: str) -> Iterator[tuple[str, int]]:
    """`command(port)` in its own process, given a free loopback port: its address once it
    accepts connections there; stopped at the end (SIGTERM, then SIGKILL after 5 s)."""
    port = free_port()
    process = subprocess.Popen(command(port), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 15
        while True:
            assert process.poll() is None, f"{what} exited at startup"
            assert time.monotonic() < deadline, f"{what} did not listen within 15 s"
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
                break
            time.sleep(0.05)
        yield ("127.0.0.1", port)
    finally:
        process.terminate()
        try:
            process.wait(5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# -- a runtime whose instances are asyncio servers in the test's own process ------------------


class FakeInstance:
    """An "instance" that is a loopback server answering every request with 200 "ok": the
    supervisor probes, routes to and stops it as it would a process, without one."""

    def __init__(self, name: str, port: int, server: asyncio.Server | None) -> None:
        self.name = name
        self.port = port
        self.pid = os.getpid()  # stands for the process; nothing signals it for real
        self.memory_exceeded = False
        self._server = server
        self._status: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        self.signals: list[int] = []

    @property
    def returncode(self) -> int | None:
        return self._status.result() if self._status.done() else None

    def exit(self, status: int) -> None:
        if self._server is not None:
            self._server.close()
        if not self._status.done():
            self._status.set_result(status)

    async def exited(self) -> int:
        return await asyncio.shield(self._status)

    async def wait(self) -> int:
        return await asyncio.shield(self._status)

    def signal(self, signum: int) -> None:
        self.signals.append(signum)
        self.exit(-signum)

    def command_inside(self, argv: Sequence[str]) -> InsideCommand:
        return as_it_is(argv)  # a plain process's


class FakeRuntime:
    """`Runtime` for control-plane and supervisor tests. `fail` makes the next starts print a
    line and exit with status 1 before listening; `hold` keeps them starting (not listening)
    until released."""

    def __init__(self) -> None:
        self.started: list[FakeInstance] = []
        self.a_start = asyncio.Event()  # set at each start (tests clear it to wait for the next)
        self.fail = False
        self.unstartable: OSError | None = None  # raised by start, as by a missing program
        self.hold: asyncio.Event | None = None
        self.forgotten: list[str] = []
        self.specs: list[Any] = []  # the InstanceSpec of each start, in order

    async def start(self, spec: Any, output: Callable[[str, str], None]) -> FakeInstance:
        self.specs.append(spec)
        if self.unstartable is not None:
            raise self.unstartable
        if self.fail:
            instance = FakeInstance(spec.name, spec.port, None)
            output("stderr", "ModuleNotFoundError: No module named 'flask'")
            instance.exit(1)
            self.started.append(instance)
            return instance
        instance = FakeInstance(spec.name, spec.port, None)
        self.started.append(instance)
        self.a_start.set()
        hold = self.hold

        async def listen() -> None:
            if hold is not None:
                await hold.wait()
            if instance.returncode is None:
                instance._server = await asyncio.start_server(_answer_ok, "127.0.0.1", spec.port)

        asyncio.ensure_future(listen())
        return instance

    def mode(self, revision: str) -> tuple[str, str]:
        return ("spawn", "a fake runtime")

    def forget(self, revision: str) -> None:
        self.forgotten.append(revision)


async def _answer_ok(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
        while await reader.readuntil(b"\r\n\r\n"):
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
            await writer.drain()
    writer.close()


# -- a supervisor whose instances start and stop at once -----------------------------------


class FakeSupervisor:
    """The scaler's `Actuator` for scaler tests: an instance starts ready, and a surplus one
    goes, the moment a decision says so; no process, no probe. Every `scale()` is recorded.

    It writes `unit.supervised` as the real supervisor would (it stands in for its owner)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.scaled: list[tuple[float, str, int]] = []  # (when, revision, desired)
        self._started = 0

    def scale(self, unit: RevisionUnit, desired: int) -> None:
        self.scaled.append((self._clock(), unit.name, desired))
        while unit.active < desired:
            self.start(unit, ready=True)
        # As the supervisor does: the surplus comes out of the ready instances; starting ones
        # are left to finish.
        surplus = unit.active - desired
        ready = [i for i in unit.supervised.instances if i.state == InstanceState.READY]
        for instance in ready[: max(0, surplus)]:
            unit.supervised.instances.remove(instance)

    def start(self, unit: RevisionUnit, *, ready: bool = False) -> ManagedInstance:
        """An instance as `Supervisor.start_instance` leaves it while it boots (or ready)."""
        self._started += 1
        name = f"{unit.name}-{self._started:06x}"
        now = self._clock()
        instance = ManagedInstance(
            name,
            port=0,
            process=FakeInstance(name, 0, None),
            state=InstanceState.READY if ready else InstanceState.STARTING,
            started_at=now,
            ready_at=now if ready else None,
        )
        unit.supervised.instances.append(instance)
        return instance

    def listens(self, instance: ManagedInstance) -> None:
        """The instance passed its probe."""
        instance.state = InstanceState.READY
        instance.ready_at = self._clock()

    def confirm(self, unit: RevisionUnit) -> None:
        """What `Supervisor.confirm` does once the deploy's first instance stays up."""
        unit.supervised.confirm(self._clock())


# -- a running revision as observe reads it, set by hand ---------------------------------------


@dataclass
class FakeRequests:
    """The router's counts for a revision (observe.sources.RequestSource)."""

    in_flight: int = 0
    queue_length: int = 0
    waits: list[float] = field(default_factory=list)
    wait_count: int = 0


@dataclass
class FakeInstanceReading:
    name: str
    pid: int
    state: InstanceState = InstanceState.READY


@dataclass
class FakeRevision:
    """A running revision as telemetry and the metrics read it (observe.sources.RevisionSource)."""

    service: str = "svc"
    name: str = "svc-00001-abc"
    concurrency: int = 80
    throttler: FakeRequests = field(default_factory=FakeRequests)
    instances: list[FakeInstanceReading] = field(default_factory=list)
    startup_seconds: list[float] = field(default_factory=list)
    startups: int = 0
    cold_starts: int = 0
    overloaded_requests: int = 0
    liveness_restarts: int = 0
    memory_exceeded: int = 0

    def count(self, state: InstanceState) -> int:
        return sum(1 for instance in self.instances if instance.state == state)


def memory_store() -> Store:
    """A real homerun Store (SQLite) held in memory."""
    return Store(Path(":memory:"))
