"""One zygote process and the conversation with it: its fork requests, the instances (or, for a
base, the revisions' zygotes) it forks, their exit statuses, its own output and its end, and
its control groups where it has them (the end of the zygote is the end of all in them).
`_zygote/_zygote_main.py` is the other side; zygote.py decides which zygotes there are."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable, Sequence
from typing import Any

from homerun.model.limits import DEFAULT_LIMITS, Limits
from homerun.procfs import process_tree
from homerun.runtime._zygote_command import ServerCommand
from homerun.runtime.base import InsideCommand, InstanceSpec, OutputSink, as_it_is, describe_status
from homerun.runtime.cgroups import InstanceCgroup, kill_and_remove
from homerun.runtime.limited import MemoryWatch, memory_exceeded_entry
from homerun.runtime.output import drain, pump

_MAX_MESSAGE = 1 << 20  # the zygote reads at most this much per message
_EARLY_LINES = 200  # the zygote's own output kept until it is ready (then: the instance's log)
STOP_SECONDS = 5.0  # a zygote told to stop (its socket closed) is SIGKILLed after this


class ZygoteLost(Exception):
    """The zygote exited (or refused) before it forked the instance asked for."""


class ZygoteInstance:
    """An instance forked by a zygote: its own session and process group, like a spawned one.
    The zygote, its parent, reaps it and reports the exit status."""

    def __init__(
        self,
        name: str,
        port: int,
        pid: int,
        status: asyncio.Future[int],
        readers: list[asyncio.Task[None]],
        enter: Callable[[int], list[str]] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.pid = pid
        self.memory_exceeded = False
        self._status = status
        self._readers = readers
        self._enter = enter  # the words that run a command in its sandbox (Sandbox.enter)

    @property
    def returncode(self) -> int | None:
        if self._status.done() and not self._status.cancelled():
            return self._status.result()
        return None

    async def exited(self) -> int:
        return await asyncio.shield(self._status)

    async def wait(self) -> int:
        status = await self.exited()
        await drain(self._readers)
        return status

    def signal(self, signum: int) -> None:
        try:
            os.killpg(self.pid, signum)
        except ProcessLookupError:
            pass

    def command_inside(self, argv: Sequence[str]) -> InsideCommand:
        if self._enter is None:
            return as_it_is(argv)
        if self.returncode is not None:
            raise ProcessLookupError(f"{self.name} has exited")
        return InsideCommand([*self._enter(self.pid), *argv])  # forked in the zygote's sandbox


# -- a zygote's process ---------------------------------------------------------------


class Started:
    """A zygote the daemon started itself (a base, or a revision's zygote on its own). In a
    sandbox, `pid` is first bwrap's (whose exit is the zygote's), then the zygote's own once
    it is ready (`found`)."""

    def __init__(self, process: subprocess.Popen[bytes]) -> None:
        self.pid = process.pid
        self.outer = process.pid
        self._process = process

    def found(self, pid: int) -> None:
        self.pid = pid

    def stop(self) -> None:
        """Once its socket is closed it exits: wait for that, SIGKILL it if it does not."""
        try:
            self._process.wait(timeout=STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    async def status(self) -> int:
        if self._process.poll() is None:
            await asyncio.to_thread(self.stop)
        return int(self._process.returncode)


class Forked:
    """A revision's zygote forked by a base, which reaps it and reports its exit status."""

    def __init__(self, pid: int, status: asyncio.Future[int]) -> None:
        self.pid = pid
        self._status = status

    def stop(self) -> None:
        pass  # its base waits for it

    async def status(self) -> int:
        try:
            return await asyncio.wait_for(asyncio.shield(self._status), STOP_SECONDS * 2)
        except TimeoutError:
            return -signal.SIGKILL


class ZygoteProcess:
    """One zygote process, and the conversation with it over a socket: a revision's, which
    forks instances, or a base, which forks revisions' zygotes."""

    def __init__(
        self,
        revision: str,
        command: ServerCommand,
        process: Started | Forked,
        control: socket.socket,
        streams: tuple[int, int],
        first_output: OutputSink,
        base: ZygoteProcess | None = None,
        *,
        sandboxed: bool = False,
        cgroup: InstanceCgroup | None = None,
        limits: Limits | None = None,
    ) -> None:
        self.revision = revision  # "" for a base
        # In a sandbox of its own (runtime/sandbox.py), with its own PID namespace: the pids
        # it tells are translated into the daemon's.
        self.sandboxed = sandboxed
        self.command = command
        self.process = process
        self.base = base  # the base it was forked from, if any
        self._control = control
        self._loop = asyncio.get_running_loop()
        # Set once: None when ready to fork, else why it cannot.
        self.ready: asyncio.Future[str | None] = self._loop.create_future()
        self.app = ""  # "main:app", as the zygote imported it
        self.import_ms = 0
        # A base's: the variables its imports read (NAME -> the value it had, or None), and
        # the frameworks it imported.
        self.reads: dict[str, str | None] = {}
        self.frameworks: list[str] = []
        # A zygote forked from a base that found the app must have one of its own, and why.
        self.standalone: str | None = None
        self.alive = True
        self.stopped = False  # by us (forget, eviction, close), not on its own
        self.last_used = 0
        self.on_lost: Callable[[ZygoteProcess], None] | None = None
        self.on_exit: Callable[[ZygoteProcess, str], None] | None = None  # how, once known
        self.on_child_exit: Callable[[ZygoteProcess], None] | None = None
        # Its control groups (runtime/limited.py makes them), which it joined before it
        # imported anything, with its revision's limits; removed, with whatever is left in
        # them, once it has stopped or exited.
        self.cgroup = cgroup
        self.limits = limits or DEFAULT_LIMITS
        self.memory_exceeded = False
        self._groups_released = False
        self._memory_watch = MemoryWatch(cgroup, self._memory_exceeded) if cgroup else None
        # The zygote's own output: held until it is ready, then it belongs to the instance that
        # caused the import (a spawned instance prints its import-time lines in its own log).
        self._early: list[tuple[str, str]] = []
        self._output = first_output
        self._pumps = [
            asyncio.ensure_future(pump(streams[0], "stdout", self._own_line)),
            asyncio.ensure_future(pump(streams[1], "stderr", self._own_line)),
        ]
        self._exit_report: asyncio.Future[None] | None = None
        self._orphans: asyncio.Future[None] | None = None
        # Per-fork state
        self._ids = itertools.count(1)
        self._forks: dict[int, asyncio.Future[tuple[int, asyncio.Future[int]]]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._host_pids: dict[int, int] = {}  # a child's pid as the zygote tells it -> ours
        control.setblocking(False)
        self._loop.add_reader(control.fileno(), self._on_readable)

    @property
    def forking(self) -> bool:
        """Ready, alive, and fit: instances (or a base's zygotes) are forked from it."""
        return self.alive and self.ready.done() and self.ready.result() is None

    @property
    def busy(self) -> bool:
        """A child of it runs, or is being forked."""
        return bool(self._exits or self._forks)

    @property
    def forking_now(self) -> bool:
        """A fork was asked for and not answered yet."""
        return bool(self._forks)

    async def fork(
        self,
        spec: InstanceSpec,
        command: ServerCommand,
        output: OutputSink,
        enter: Callable[[int], list[str]] | None = None,
    ) -> ZygoteInstance:
        """Have the zygote fork an instance running `command` (this instance's arguments: with
        Kubernetes' $(PORT) the supervisor has put each instance's own port in them); `enter`
        gives the words that run a command in the zygote's sandbox, where it has one."""
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        readers = [
            asyncio.ensure_future(pump(out_read, "stdout", output)),
            asyncio.ensure_future(pump(err_read, "stderr", output)),
        ]
        # The instance's control groups, opened here (a sandboxed zygote's user could not):
        # the child writes its pid to each before it runs anything. The kernel checks the
        # opener's credentials for a cgroup v1 cgroup.procs write.
        try:
            cgroup_fds = open_procs(spec.cgroup_procs)
        except BaseException:
            for fd in [out_read, out_write, err_read, err_write]:
                os.close(fd)
            for reader in readers:
                reader.cancel()
            raise
        request = {
            "argv": command.args_for(spec.port),
            "env": spec.env,
            "cwd": str(spec.cwd),
            "cgroup_fds": len(cgroup_fds),
        }
        pid, status = await self._fork(request, [out_write, err_write, *cgroup_fds])
        self._output = output
        return ZygoteInstance(spec.name, spec.port, pid, status, readers, enter)

    async def fork_zygote(
        self,
        spec: InstanceSpec,
        command: ServerCommand,
        output: OutputSink,
        cgroup: InstanceCgroup | None = None,
    ) -> ZygoteProcess:
        """Have this base fork the revision's zygote, which joins `cgroup` (its own control
        groups) first, then imports the app."""
        cgroup_fds = open_procs(cgroup.procs_files if cgroup is not None else ())
        daemon_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        request = {
            "zygote": {
                "boot": zygote_boot(spec, command),
                "env": without_port(spec.env),
                "cwd": str(spec.cwd),
            },
            "cgroup_fds": len(cgroup_fds),
        }
        fds = [zygote_end.detach(), out_write, err_write, *cgroup_fds]
        try:
            pid, status = await self._fork(request, fds)
        except BaseException:
            daemon_end.close()
            os.close(out_read)
            os.close(err_read)
            raise
        return ZygoteProcess(
            spec.revision,
            command,
            Forked(pid, status),
            daemon_end,
            (out_read, err_read),
            output,
            base=self,
            cgroup=cgroup,
            limits=spec.limits,
        )

    def close(self) -> None:
        """End of file for the zygote: it stops its children and exits (not waited for here:
        `process.stop()` does). A zygote's instances are SIGKILLed at once."""
        self.stopped = True
        if self.alive:
            self._loop.remove_reader(self._control.fileno())
            self.alive = False
        self._control.close()
        settle(self.ready, "the zygote was stopped")
        self._end_all(ZygoteLost("the zygote was stopped"))

    async def release_groups(self) -> None:
        """Kill whatever is left in the zygote's control groups (itself, if it still runs, and
        what the app started at import: a `setsid` double fork too), then remove them."""
        if self._take_groups():
            assert self.cgroup is not None
            await asyncio.to_thread(kill_and_remove, self.cgroup)

    def release_groups_now(self) -> None:
        """As release_groups, waiting here (the runtime closes)."""
        if self._take_groups():
            assert self.cgroup is not None
            kill_and_remove(self.cgroup)

    def _take_groups(self) -> bool:
        if self.cgroup is None or self._groups_released:
            return False
        self._groups_released = True
        if self._memory_watch is not None:
            self._memory_watch.close()
        return True

    def _memory_exceeded(self) -> None:
        """A process of its groups hit the revision's memory limit: the kernel's OOM killer
        would end one process (the zygote, or a child the app started at import), so the whole
        group ends, as an instance's does; the zygote is then lost (`_lost`)."""
        assert self.cgroup is not None
        self.memory_exceeded = True
        if not self.revision:
            during = " by the base that imports the server and the web framework"
        elif not self.ready.done():
            during = " by the revision's zygote, importing the app"
        else:
            during = " by the revision's zygote (the app imported, and what it started then)"
        self._output("stderr", memory_exceeded_entry(self.cgroup, self.limits, during))
        self.cgroup.signal(signal.SIGKILL)

    # -- the conversation -------------------------------------------------------------

    async def _fork(
        self, request: dict[str, Any], fds: list[int]
    ) -> tuple[int, asyncio.Future[int]]:
        """Send a fork request with descriptors (closed here once sent); the child's pid and
        its exit status to come."""
        request_id = next(self._ids)
        forked: asyncio.Future[tuple[int, asyncio.Future[int]]] = self._loop.create_future()
        self._forks[request_id] = forked
        try:
            if not self.alive:
                raise ZygoteLost("the zygote has exited")
            await self._send(json.dumps({"fork": request_id, **request}).encode(), fds)
        except BaseException:
            self._forks.pop(request_id, None)
            raise
        finally:
            # The zygote holds its own copies now; with ours closed, the child's exit is what
            # ends the readers.
            for fd in fds:
                os.close(fd)
        return await forked

    async def _send(self, payload: bytes, fds: list[int]) -> None:
        while True:
            try:
                socket.send_fds(self._control, [payload], fds)
                return
            except BlockingIOError:
                writable = self._loop.create_future()
                fd = self._control.fileno()
                self._loop.add_writer(fd, writable.set_result, None)
                try:
                    await writable
                finally:
                    self._loop.remove_writer(fd)
            except OSError as error:
                raise ZygoteLost(f"the zygote is gone ({error.strerror})") from error

    def _on_readable(self) -> None:
        while self.alive:
            try:
                payload = self._control.recv(_MAX_MESSAGE)
            except BlockingIOError:
                return
            except OSError:
                payload = b""
            if not payload:
                self._lost()
                return
            self._handle(json.loads(payload))

    def _handle(self, message: dict[str, Any]) -> None:
        if "ready" in message:
            self.app = str(message.get("app", ""))
            self.import_ms = int(message.get("import_ms", 0))
            self.reads = dict(message.get("reads", {}))
            self.frameworks = list(message.get("frameworks", []))
            if self.sandboxed and isinstance(self.process, Started):
                found = host_pid(int(message["ready"]), self.process.outer)
                if found is not None:
                    self.process.found(found)
            for stream, line in self._early:
                self._output(stream, line)
            self._early = []
            settle(self.ready, None)
        elif "unfit" in message or "standalone" in message:
            self._early = []  # the spawned instance (or the zygote of its own) prints them
            if "standalone" in message:
                self.standalone = str(message["standalone"])
            settle(self.ready, str(message.get("unfit") or message.get("standalone")))
        elif "forked" in message:
            pid = int(message["pid"])
            status: asyncio.Future[int] = self._loop.create_future()
            self._exits[pid] = status
            forked = self._forks.pop(int(message["forked"]), None)
            host = host_pid(pid, self.process.pid) if self.sandboxed else pid
            if host is None:
                # Gone already (or never seen): no pid of ours to signal; its exit will come.
                if forked is not None and not forked.done():
                    forked.set_exception(ZygoteLost("the forked instance exited at once"))
                return
            self._host_pids[pid] = host
            if forked is not None and not forked.done():
                forked.set_result((host, status))
            else:
                # The start was cancelled while the zygote forked: nobody will stop this one.
                kill_group(host)
        elif "failed" in message:
            forked = self._forks.pop(int(message["failed"]), None)
            if forked is not None and not forked.done():
                forked.set_exception(ZygoteLost(f"the zygote could not fork: {message['error']}"))
        elif "exited" in message:
            exited = self._exits.pop(int(message["exited"]), None)
            self._host_pids.pop(int(message["exited"]), None)
            if exited is not None:
                settle(exited, int(message["status"]))
                if self.on_child_exit is not None:
                    self.on_child_exit(self)

    def _lost(self) -> None:
        """End of file from the zygote: it exited (after an `unfit`, or killed outright)."""
        self._loop.remove_reader(self._control.fileno())
        self.alive = False
        self._control.close()
        orphans = [self._host_pids[pid] for pid in self._exits if pid in self._host_pids]
        if self.base is not None and not self.base.alive:
            orphans.append(self.process.pid)
        self._end_all(ZygoteLost("the zygote exited"))
        # Its children (or, its base gone, itself) may have come to the daemon, which is a
        # child subreaper (ProcessRuntime.open): reap them, or they stay zombies.
        self._orphans = asyncio.ensure_future(reap_orphans(orphans))
        if self.on_lost is not None:
            self.on_lost(self)
        self._exit_report = asyncio.ensure_future(self._report_exit())

    async def _report_exit(self) -> None:
        if self.cgroup is not None and not self.memory_exceeded and self.cgroup.oom_kills():
            self._memory_exceeded()  # a kill the event did not tell (it came too late)
        # What the app started at import goes with the zygote, as an instance's do with it.
        await self.release_groups()
        how = describe_status(await self.process.status())
        if self.memory_exceeded:
            limit = f"memory limit of {self.limits.memory_mib} MiB"
            how = f"{how}, past its {limit}"
            if self.revision:
                reason = f"the app used more than its {limit} while the zygote imported it"
            else:
                reason = f"the base used more than the {limit} of the revision that started it"
            settle(self.ready, f"{reason} ({how})")
        said = next((line for stream, line in reversed(self._early) if stream == "stderr"), "")
        settle(
            self.ready,
            f"the zygote exited while importing the app ({how}{': ' + said if said else ''})",
        )
        if self.on_exit is not None:
            self.on_exit(self, how)

    def _end_all(self, error: ZygoteLost) -> None:
        """Nothing more will come from the zygote: forks fail, children are gone."""
        for forked in self._forks.values():
            if not forked.done():
                forked.set_exception(error)
        self._forks.clear()
        for pid, status in self._exits.items():
            # A zygote's instances died with it (their parent-death signal is SIGKILL);
            # whatever else is left in their groups goes too. A base's zygotes get SIGTERM
            # from its death and kill their own instances (and the daemon sees them go).
            if self.revision and pid in self._host_pids:
                kill_group(self._host_pids[pid])
            settle(status, -signal.SIGKILL)
        self._exits.clear()
        self._host_pids.clear()

    def _own_line(self, stream: str, line: str) -> None:
        if not self.ready.done():
            if len(self._early) < _EARLY_LINES:
                self._early.append((stream, line))
        else:
            self._output(stream, line)


def zygote_boot(spec: InstanceSpec, command: ServerCommand) -> dict[str, Any]:
    return {
        "server": command.server,
        "program": command.program,
        "module": command.module,
        "args": command.args_for(spec.port),
        # sys.path[0] as the server's own script (or `python -m`) would have it.
        "path0": os.path.dirname(command.program) if command.program else str(spec.cwd),
        "daemon_pid": os.getpid(),
    }


def open_procs(procs_files: Sequence[str]) -> list[int]:
    """Descriptors of cgroup.procs files for a child to write its pid to (all, or none)."""
    fds: list[int] = []
    try:
        for procs in procs_files:
            fds.append(os.open(procs, os.O_WRONLY | os.O_CLOEXEC))
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def host_pid(pid: int, under: int) -> int | None:
    """The daemon's pid of the process that is `pid` in its own (innermost) PID namespace,
    among `under` and its descendants (a sandboxed zygote's children), from NSpid."""
    for candidate in process_tree(under):
        try:
            with open(f"/proc/{candidate}/status") as status:
                for line in status:
                    if line.startswith("NSpid:"):
                        ids = line.split()[1:]
                        if len(ids) > 1 and int(ids[-1]) == pid:
                            return candidate
                        break
        except (OSError, ValueError):
            continue
    return None


def without_port(env: dict[str, str]) -> dict[str, str]:
    # A zygote is not an instance: no PORT, which would be the wrong one for the next.
    return {name: value for name, value in env.items() if name != "PORT"}


async def reap_orphans(pids: list[int]) -> None:
    """Reap those of `pids` that are (or become, within seconds) this process's children."""
    deadline = asyncio.get_running_loop().time() + STOP_SECONDS
    while pids:
        for pid in list(pids):
            try:
                reaped, _ = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - does not block
            except ChildProcessError:
                reaped = pid  # another's child (init's): not ours to reap
            if reaped:
                pids.remove(pid)
        if not pids or asyncio.get_running_loop().time() > deadline:
            return
        await asyncio.sleep(0.05)


def kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)
