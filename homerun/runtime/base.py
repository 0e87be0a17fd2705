"""The interface every instance runtime implements."""

from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from homerun.model.engine import ContainerSpec

# (stream name "stdout"/"stderr", one line without its newline)
OutputSink = Callable[[str, str], None]


@dataclass(frozen=True)
class InstanceSpec:
    name: str
    argv: list[str]
    env: dict[str, str]
    cwd: Path
    port: int
    revision: str = ""  # instances of one revision share argv, env (but PORT) and cwd
    container: ContainerSpec | None = None  # a container of an image, not a process


class Instance(Protocol):
    name: str
    pid: int
    port: int

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
