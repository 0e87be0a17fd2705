"""The interface every instance runtime implements."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from homerun.model.engine import ContainerSpec
from homerun.model.limits import Limits
from homerun.model.run_as import RunAs
from homerun.model.volumes import NO_MOUNTS, Mounts

# (stream name "stdout"/"stderr", one line without its newline)
OutputSink = Callable[[str, str], None]


@dataclass(frozen=True)
class ImageRoot:
    """A container image's root folder (a container of it made, not run, by the engine) that
    a sandboxed instance sees as `/`, and the image's Python that enters the sandbox."""

    folder: Path
    python: str  # a path inside the image


@dataclass(frozen=True)
class InstanceSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    revision: str = ""  # instances of one revision share argv, env (but PORT) and cwd
    limits: Limits | None = None  # enforced where the runtime can (runtime/limited.py)
    # Files the instance's first process writes its pid to before it runs anything: the
    # cgroup.procs of its control groups, so that all it starts is in them (runtime/limited.py).
    cgroup_procs: tuple[str, ...] = ()
    container: ContainerSpec | None = None  # a container of an image, not a process
    # Secret files and in-memory volumes, this instance's own (a sandbox or a container).
    mounts: Mounts = NO_MOUNTS
    # securityContext.runAsUser/runAsGroup, for a process runtime that can honour them (the
    # sandbox as root); a container has its own (ContainerSpec.user).
    user: RunAs | None = None
    # A container image's root as the instance's `/` (the sandbox as root); argv, env and cwd
    # are then the image's.
    root: ImageRoot | None = None


@dataclass(frozen=True)
class InsideCommand:
    """A command that runs inside an instance (Instance.command_inside): `argv`, run from the
    host, enters it (nsenter, podman exec); the process joins the control groups of
    `cgroup_procs` first, so that the instance's limits hold for the command too.

    Killing the host process's group ends the command; `kill_inside`, called after, kills
    what the command left running in the instance where that process is only a client of
    what runs inside (`podman exec`, whose exec session goes on without it)."""

    argv: list[str]
    cgroup_procs: tuple[str, ...] = ()
    kill_inside: Callable[[], None] = lambda: None
    # `argv` starts with host programs run as root (nsenter, podman): their environment holds
    # none of what such a program acts on (names.host_split); the runtime gives the command
    # those variables after it has dropped to the instance's user.
    hosted: bool = True


def as_it_is(argv: Sequence[str]) -> InsideCommand:
    """A command inside an instance that is a plain process of homerun's user, unlimited: the
    command itself, with the instance's whole environment."""
    return InsideCommand(list(argv), hosted=False)


class Instance(Protocol):
    name: str
    pid: int
    port: int
    # Ended for going past its memory limit (runtime/limited.py); False where none is enforced.
    memory_exceeded: bool

    @property
    def returncode(self) -> int | None: ...

    async def exited(self) -> int:
        """The exit status once the main process is gone: >= 0 an exit code, < 0 the signal
        that killed it. Its output may still be coming (from workers left in its group)."""
        ...

    async def wait(self) -> int:
        """The exit status, once the output's last lines are read too (at most a second more:
        a worker left in the group may hold the pipe open)."""
        ...

    def signal(self, signum: int) -> None:
        """Send a signal to the whole instance (its process group)."""
        ...

    def command_inside(self, argv: Sequence[str]) -> InsideCommand:
        """`argv` made a command that runs inside the instance, as its own processes do: in
        its container, or in its sandbox as its user, and in its control groups; as it is for
        a process of homerun's user, as the instance is. An exec probe runs so, as Kubernetes
        runs one in the container. ProcessLookupError when there is nothing to run it in
        (the instance is gone)."""
        ...


class Runtime(Protocol):
    async def start(self, spec: InstanceSpec, output: OutputSink) -> Instance: ...

    def mode(self, revision: str) -> tuple[str, str]:
        """How the revision's instances start ("zygote" | "spawn") and why, for describe."""
        ...

    def forget(self, revision: str) -> None:
        """The revision has no instance left and serves no traffic (retired, deleted): drop
        what is kept for it (its zygote). A later start sets it up again. What an instance of
        the revision still uses (a unit of it routed again meanwhile) is kept."""
        ...


def describe_status(status: int) -> str:
    """An exit status as Instance.wait() gives it, in words: `exit code 1`, `killed by SIGKILL`."""
    if status < 0:
        try:
            return f"killed by {signal.Signals(-status).name}"
        except ValueError:
            return f"killed by signal {-status}"
    return f"exit code {status}"


async def stop_all(instances: Sequence[Instance], grace: float) -> None:
    """SIGTERM each instance, wait up to `grace` seconds for them all to exit, then SIGKILL
    those still running (a job's tasks, a worker pool's instances, when the daemon stops)."""
    for instance in instances:
        instance.signal(signal.SIGTERM)
    if instances:
        await asyncio.wait([asyncio.ensure_future(i.exited()) for i in instances], timeout=grace)
    for instance in instances:
        if instance.returncode is None:
            instance.signal(signal.SIGKILL)


def join_cgroups(procs_files: tuple[str, ...] | list[str]) -> None:
    """Move this process into the control groups whose cgroup.procs files are given (in a new
    instance's first process, before it runs anything)."""
    pid = str(os.getpid()).encode()
    for procs in procs_files:
        fd = os.open(procs, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, pid)
        finally:
            os.close(fd)
