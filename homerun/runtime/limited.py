"""Any runtime's instances, each in control groups of its own: its limits enforced, and a stop
that reaches every process it started.

The wrapped runtime starts the instance as usual; its first process joins the instance's
groups before it runs anything (`InstanceSpec.cgroup_procs`), so what it starts is there too,
`setsid` children and double forks included. Past `--memory`, the kernel's OOM killer ends a
process of the group; the whole instance is then ended, as on Cloud Run, with Cloud Run's log
line. `--cpu` is a CFS quota (at most that many cores' time in each 100 ms) and a share.

A runtime that runs app code outside instances (the zygote runtime: a revision's zygote
imports the app) is handed the same `Cgroups` (`ConfinesZygotes`), and puts each zygote in
groups of its own with its revision's limits.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Protocol, runtime_checkable

from homerun.model.limits import DEFAULT_LIMITS, Limits
from homerun.runtime.base import InsideCommand, Instance, InstanceSpec, OutputSink, Runtime
from homerun.runtime.cgroups import Cgroups, InstanceCgroup, available, kill_and_remove

# While a stop waits for the group to empty: 5 ms at first, half as long again each time, then
# every 100 ms.
_FIRST_POLL_SECONDS = 0.005
_POLL_SECONDS = 0.1
MEMORY_LIMITS_DOC = "https://cloud.google.com/run/docs/configuring/memory-limits"


class OpenRuntime(Runtime, Protocol):
    def open(self) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class ConfinesZygotes(Protocol):
    """A runtime with processes of its own that run app code (zygotes): it makes their
    control groups with these `cgroups`, as instances' are made."""

    def confine_zygotes(self, cgroups: Cgroups) -> None: ...


def memory_exceeded(limit_mib: int, used_mib: int, during: str = "") -> str:
    """Cloud Run's line for an instance ended past its memory limit (`during`: what it was
    doing, said after the numbers)."""
    return (
        f"Memory limit of {limit_mib} MiB exceeded with {used_mib} MiB used{during}. Consider "
        f"increasing the memory limit, see {MEMORY_LIMITS_DOC}"
    )


def memory_exceeded_entry(cgroup: InstanceCgroup, limits: Limits, during: str = "") -> str:
    """The log entry (a JSON line, severity ERROR) of a group ended past its memory limit."""
    used = cgroup.memory_peak() or limits.memory_bytes
    line = memory_exceeded(limits.memory_mib, round(used / (1024 * 1024)), during)
    return json.dumps({"severity": "ERROR", "message": line})


class MemoryWatch:
    """Calls `exceeded` once when a process of the group hits its memory limit: the kernel
    signals an eventfd on memory.oom_control before its OOM killer picks a process. `close()`
    before the group is removed (its removal would signal the eventfd too)."""

    def __init__(self, cgroup: InstanceCgroup, exceeded: Callable[[], None]) -> None:
        self._exceeded = exceeded
        self._told = False
        self._loop = asyncio.get_running_loop()
        self._fds = cgroup.oom_eventfd()
        if self._fds is not None:
            self._loop.add_reader(self._fds[0], self._on_event)

    def close(self) -> None:
        if self._fds is None:
            return
        self._loop.remove_reader(self._fds[0])
        for fd in self._fds:
            os.close(fd)
        self._fds = None

    def _on_event(self) -> None:
        assert self._fds is not None
        try:
            os.eventfd_read(self._fds[0])
        except BlockingIOError:
            return
        if not self._told:
            self._told = True
            self._exceeded()


class LimitedInstance:
    """An instance and its control groups. A signal goes to every process in them; once
    signalled, it has exited only when the groups are empty."""

    def __init__(
        self,
        inner: Instance,
        cgroup: InstanceCgroup,
        limits: Limits,
        output: OutputSink,
        *,
        on_gone: Callable[[LimitedInstance], None],
    ) -> None:
        self.name = inner.name
        self.port = inner.port
        self.pid = inner.pid
        self.cgroup = cgroup
        self.limits = limits
        self.memory_exceeded = False
        self._inner = inner
        self._output = output
        self._on_gone = on_gone
        self._loop = asyncio.get_running_loop()
        # Per-stop state
        self._signal: int | None = None  # the last one sent
        self._emptied: asyncio.Future[None] | None = None
        self._released = False
        self._memory_watch = MemoryWatch(cgroup, self._on_memory_event)

    @property
    def returncode(self) -> int | None:
        return self._inner.returncode

    async def exited(self) -> int:
        status = await self._inner.exited()
        if self._signal is not None:
            await self._all_gone()
        return status

    async def wait(self) -> int:
        status = await self._inner.exited()
        if self._signal is None:
            # The first process ended on its own: the instance is over, and whatever it left
            # running (a detached child) ends with it, as a container's processes do.
            self.signal(signal.SIGKILL)
        await self._all_gone()
        if not self.memory_exceeded and self.cgroup.oom_kills():
            self._memory_exceeded()  # a kill the event did not tell (it came too late)
        status = await self._inner.wait()
        self._release()
        return status

    def signal(self, signum: int) -> None:
        self._signal = signum
        self._inner.signal(signum)
        self.cgroup.signal(signum)

    def command_inside(self, argv: Sequence[str]) -> InsideCommand:
        inside = self._inner.command_inside(argv)
        return replace(inside, cgroup_procs=self.cgroup.procs_files)

    def kill_now(self) -> None:
        """The runtime closes: kill what is left and remove the groups, without waiting."""
        self._signal = signal.SIGKILL
        self._inner.signal(signal.SIGKILL)
        self._release()

    async def _all_gone(self) -> None:
        if self._emptied is None:
            self._emptied = asyncio.ensure_future(self._until_empty())
        await asyncio.shield(self._emptied)

    async def _until_empty(self) -> None:
        interval = _FIRST_POLL_SECONDS
        while self.cgroup.members():
            if self._signal == signal.SIGKILL:
                self.cgroup.signal(signal.SIGKILL)  # born since the kill
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, _POLL_SECONDS)

    def _on_memory_event(self) -> None:
        if not self.memory_exceeded:
            self._memory_exceeded()

    def _memory_exceeded(self) -> None:
        self.memory_exceeded = True
        self._output("stderr", memory_exceeded_entry(self.cgroup, self.limits))
        # The OOM killer ends one process (a worker, which its master would fork again): the
        # instance as a whole ends, and the supervisor replaces it.
        self.signal(signal.SIGKILL)

    def _release(self) -> None:
        if self._released:
            return
        self._released = True
        self._memory_watch.close()
        if not self.cgroup.members() and self.cgroup.remove():
            self._on_gone(self)
            return
        kill_and_remove(self.cgroup)
        self._on_gone(self)


class LimitedRuntime:
    """Starts each instance of `inner` in control groups made for it with its limits
    (InstanceSpec.limits, else Cloud Run's defaults), and each zygote of `inner`, if it has
    any, in groups of its own too. `open()` removes groups a killed daemon left (and kills what
    is in them); a helper process does the same if the daemon dies."""

    def __init__(self, inner: OpenRuntime, cgroups: Cgroups) -> None:
        self._inner = inner
        self._cgroups = cgroups
        self._instances: set[LimitedInstance] = set()
        self._reaper: subprocess.Popen[bytes] | None = None
        # A zygote imports the app, which may do at import anything an instance may do.
        self._zygotes_confined = isinstance(inner, ConfinesZygotes)
        if isinstance(inner, ConfinesZygotes):
            inner.confine_zygotes(cgroups)

    @property
    def controllers(self) -> tuple[str, ...]:
        return self._cgroups.controllers

    def open(self) -> None:
        self._cgroups.clean()
        self._inner.open()
        # End of its input (the daemon gone, by SIGKILL too) makes it kill whatever is left in
        # this home's groups (instances', zygotes'): `setsid` children would outlive the
        # daemon otherwise.
        self._reaper = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "homerun.runtime._reaper",
                *(f"{name}={folder}" for name, folder in self._cgroups.folders.items()),
            ],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )

    def close(self) -> None:
        for instance in list(self._instances):
            instance.kill_now()
        self._inner.close()
        self._cgroups.clean()
        self._cgroups.remove()
        if self._reaper is not None and self._reaper.stdin is not None:
            self._reaper.stdin.close()
            self._reaper.wait()
            self._reaper = None

    def _gone(self, instance: LimitedInstance) -> None:
        self._instances.discard(instance)
        self._cgroups.reweigh()

    def mode(self, revision: str) -> tuple[str, str]:
        mode, reason = self._inner.mode(revision)
        groups = ", ".join(self._cgroups.controllers)
        each = "each instance and each zygote" if self._zygotes_confined else "each instance"
        return mode, f"{reason}; {each} in control groups of its own ({groups})"

    def forget(self, revision: str) -> None:
        self._inner.forget(revision)

    async def start(self, spec: InstanceSpec, output: OutputSink) -> LimitedInstance:
        wanted = spec.limits or DEFAULT_LIMITS
        cgroup = self._cgroups.create(spec.name, wanted, group=spec.revision)
        try:
            inner = await self._inner.start(
                replace(spec, limits=wanted, cgroup_procs=cgroup.procs_files), output
            )
        except BaseException:
            kill_and_remove(cgroup)
            raise
        instance = LimitedInstance(inner, cgroup, wanted, output, on_gone=self._gone)
        self._instances.add(instance)
        return instance


def limit_where_possible(runtime: OpenRuntime, home: Path) -> OpenRuntime:
    """The runtime with each instance in control groups of its own, as far as this machine
    lets homerun make them; what it cannot do is said once, here."""
    key = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:12]
    availability = available(key)
    warning = availability.warning()
    if warning is not None:
        print(f"homerun: warning: {warning}", file=sys.stderr, flush=True)
    if not availability.folders:
        return runtime
    return LimitedRuntime(runtime, Cgroups(availability.folders))
