"""Shared pieces of the runtime tests: instance specs, a tiny HTTP client, process groups."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fakes import free_port

from homerun.build import Artifact
from homerun.runtime import Instance, InstanceSpec

REPO_ROOT = Path(__file__).resolve().parents[2]
APPS = Path(__file__).resolve().parent / "apps"

GUNICORN_SEED = "exec gunicorn --bind :$PORT --workers 1 --threads 8 --timeout 0 main:app"
UVICORN_DEFAULT = "exec uvicorn main:app --host 127.0.0.1 --port $PORT"


@dataclass(frozen=True)
class Seeds:
    flask: Artifact  # flask + gunicorn
    fastapi: Artifact  # fastapi + uvicorn


def spec(
    artifact: Artifact,
    *,
    revision: str,
    command: str | None = None,
    argv: list[str] | None = None,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> InstanceSpec:
    """An instance of `revision` as the supervisor would start it, in artifact's virtualenv."""
    port = free_port()
    service = revision.rsplit("-", 2)[0]
    instance_env = dict(
        artifact.env,
        PORT=str(port),
        K_SERVICE=service,
        K_REVISION=revision,
        K_CONFIGURATION=service,
        PYTHONUNBUFFERED="1",
        **(env or {}),
    )
    return InstanceSpec(
        name=f"{revision}-{port}",
        argv=argv if argv is not None else ["/bin/sh", "-c", command or GUNICORN_SEED],
        env=instance_env,
        cwd=cwd or artifact.cwd,
        port=port,
        revision=revision,
    )


@dataclass
class Output:
    """Collects an instance's log lines, as the supervisor's output sink would."""

    lines: list[tuple[str, str]] = field(default_factory=list)

    def __call__(self, stream: str, line: str) -> None:
        self.lines.append((stream, line))

    def has(self, stream: str, text: str) -> bool:
        return any(name == stream and text in line for name, line in self.lines)

    async def wait_for(self, stream: str, text: str, within: float = 5) -> None:
        deadline = time.monotonic() + within
        while not self.has(stream, text):
            if time.monotonic() > deadline:
                raise AssertionError(f"no {stream} line with {text!r} in {self.lines[-20:]}")
            await asyncio.sleep(0.01)


async def get(port: int, path: str = "/", within: float = 5) -> tuple[int, bytes]:
    """One HTTP/1.0 GET on 127.0.0.1: (status, body)."""

    async def exchange() -> tuple[int, bytes]:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(f"GET {path} HTTP/1.0\r\nHost: test\r\n\r\n".encode())
            response = await reader.read()
        finally:
            writer.close()
        head, _, body = response.partition(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1]), body

    return await asyncio.wait_for(exchange(), within)


async def first_response(port: int, path: str = "/", within: float = 20) -> tuple[int, bytes]:
    """Retry until the instance answers at all (it may not listen yet)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return await get(port, path)
        except (OSError, IndexError, ValueError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.005)


async def report(port: int) -> dict[str, Any]:
    status, body = await first_response(port, "/report")
    assert status == 200, body
    return dict(json.loads(body))


def group_members(pgid: int) -> list[int]:
    """Live (not zombie) processes whose process group is pgid."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                fields = stat.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != b"Z" and int(fields[2]) == pgid:
            members.append(int(entry))
    return members


def parent_of(pid: int) -> int:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        return int(stat.read().rsplit(b")", 1)[1].split()[1])


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


async def gone(pids: list[int], within: float = 10) -> bool:
    """Whether every one of pids (processes, or process groups' members) is gone in time."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if not any(alive(pid) or group_members(pid) for pid in pids):
            return True
        await asyncio.sleep(0.02)
    return False


@dataclass
class Leftovers:
    """Instances and process groups a test started, to be gone when it ends."""

    instances: list[Instance] = field(default_factory=list)
    groups: list[int] = field(default_factory=list)

    def add(self, instance: Instance) -> None:
        self.instances.append(instance)
        self.groups.append(instance.pid)

    async def reap(self) -> None:
        """Kill and wait for the instances (in the loop, so that no transport outlives it)."""
        for instance in self.instances:
            if instance.returncode is None:
                instance.signal(signal.SIGKILL)
        await asyncio.wait_for(
            asyncio.gather(*(instance.wait() for instance in self.instances)), 15
        )
        self.instances.clear()

    def kill(self) -> None:
        """Last resort, out of the loop: SIGKILL every group still there."""
        for pgid in self.groups:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
