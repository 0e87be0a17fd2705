"""Test fakes shared by the whole suite: simulated time and free loopback ports.

Tests import them as `from fakes import Clock, free_port` (tests/ is on sys.path through its
conftest.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

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


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's pick for an ephemeral bind)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


# -- a runtime whose instances are asyncio servers in the test's own process ------------------


class FakeInstance:
    """An "instance" that is a loopback server answering every request with 200 "ok": the
    supervisor probes, routes to and stops it as it would a process, without one."""

    def __init__(self, name: str, port: int, server: asyncio.Server | None) -> None:
        self.name = name
        self.port = port
        self.pid = os.getpid()  # stands for the process; nothing signals it for real
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


class FakeRuntime:
    """`Runtime` for control-plane and supervisor tests. `fail` makes the next starts print a
    line and exit with status 1 before listening; `hold` keeps them starting (not listening)
    until released."""

    def __init__(self) -> None:
        self.started: list[FakeInstance] = []
        self.fail = False
        self.hold: asyncio.Event | None = None
        self.forgotten: list[str] = []

    async def start(self, spec: Any, output: Callable[[str, str], None]) -> FakeInstance:
        if self.fail:
            instance = FakeInstance(spec.name, spec.port, None)
            output("stderr", "ModuleNotFoundError: No module named 'flask'")
            instance.exit(1)
            self.started.append(instance)
            return instance
        instance = FakeInstance(spec.name, spec.port, None)
        self.started.append(instance)
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


def memory_store() -> Store:
    """A real homerun Store (SQLite) held in memory."""
    return Store(Path(":memory:"))
