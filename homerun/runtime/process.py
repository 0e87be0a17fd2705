"""Instances as plain child processes, each in its own process group."""

from __future__ import annotations

import asyncio
import ctypes
import os
import signal
import subprocess
import sys
from collections.abc import Callable

from homerun.runtime.base import InstanceSpec, OutputSink
from homerun.runtime.output import drain, pump

_PR_SET_PDEATHSIG = 1
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: if the daemon dies (even by SIGKILL), the
    # kernel kills the instance too. Servers that fork workers (gunicorn) watch their parent.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class ProcessInstance:
    """A running child process; the group id equals its pid (start_new_session)."""

    def __init__(
        self,
        name: str,
        port: int,
        process: asyncio.subprocess.Process,
        tell_reaper: Callable[[str], None],
    ) -> None:
        self.name = name
        self.port = port
        self.pid = process.pid
        self._process = process
        self._tell_reaper = tell_reaper
        self._readers: list[asyncio.Task[None]] = []

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def exited(self) -> int:
        return await self._process.wait()

    async def wait(self) -> int:
        status = await self.exited()
        await drain(self._readers)
        return status

    def signal(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass
        if signum == signal.SIGKILL and self._process.returncode is not None:
            # The main process is gone and the rest of its group is being killed: the reaper
            # need not remember the group (whose id may be reused later).
            self._tell_reaper(f"-{self.pid}")


class ProcessRuntime:
    """Starts instances as child processes; `open()` before the first, `close()` after the last."""

    def __init__(self) -> None:
        self._reaper: subprocess.Popen[bytes] | None = None

    def open(self) -> None:
        # Own session: a kill of the daemon's process group must not take the reaper along.
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "homerun.runtime._reaper"],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )

    def close(self) -> None:
        if self._reaper is not None and self._reaper.stdin is not None:
            self._reaper.stdin.close()
            self._reaper.wait()
            self._reaper = None

    def mode(self, revision: str) -> tuple[str, str]:
        return ("spawn", "the zygote is turned off (config.yaml: zygote: false)")

    def forget(self, revision: str) -> None:
        pass

    def _tell_reaper(self, line: str) -> None:
        if self._reaper is not None and self._reaper.stdin is not None:
            try:
                self._reaper.stdin.write(line.encode() + b"\n")
                self._reaper.stdin.flush()
            except BrokenPipeError:
                self._reaper = None

    async def start(self, spec: InstanceSpec, output: OutputSink) -> ProcessInstance:
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *spec.argv,
                cwd=spec.cwd,
                env=spec.env,
                stdin=subprocess.DEVNULL,
                stdout=out_write,
                stderr=err_write,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except BaseException:
            os.close(out_read)
            os.close(err_read)
            raise
        finally:
            os.close(out_write)
            os.close(err_write)
        self._tell_reaper(f"+{process.pid}")
        instance = ProcessInstance(spec.name, spec.port, process, self._tell_reaper)
        instance._readers = [
            asyncio.create_task(pump(out_read, "stdout", output)),
            asyncio.create_task(pump(err_read, "stderr", output)),
        ]
        return instance


def process_start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot (tells a reused pid from ours)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None
