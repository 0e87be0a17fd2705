"""Instances as plain child processes, each in its own session and process group."""

from __future__ import annotations

import asyncio
import ctypes
import fcntl
import functools
import os
import posixpath
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

from homerun.errors import HomerunError
from homerun.procfs import first_descendant, process_tree
from homerun.runtime.base import (
    InsideCommand,
    InstanceSpec,
    OutputSink,
    as_it_is,
    join_cgroups,
)
from homerun.runtime.netns import NetNamespace, Networks, shared
from homerun.runtime.output import drain, pump
from homerun.runtime.sandbox import IGNORED_OUTSIDE, Sandbox, open_secret_files
from homerun.shellwords import split_script

# How often a running instance's process tree is recorded (what its first process's crash
# would otherwise hide: descendants that left the group, see InstanceProcesses).
SCAN_SECONDS = 2.0
# While a stop waits for the last processes: 5 ms at first, half as long again each time
# (0, 5, 12.5, 24, 41 ... ms), then every 100 ms.
_FIRST_POLL_SECONDS = 0.005
_POLL_SECONDS = 0.1

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_PR_GET_CHILD_SUBREAPER = 37
_libc = ctypes.CDLL(None, use_errno=True)
_prctl = _libc.prctl
_libc.signal.argtypes = [ctypes.c_int, ctypes.c_void_p]
_libc.signal.restype = ctypes.c_void_p
_SIG_IGN = ctypes.c_void_p(1)


def close_inherited_fds(keep: Collection[int] = ()) -> None:
    """In a child between fork and exec: every descriptor past stdin, stdout and stderr closes
    at the exec. uvloop's subprocess ignores close_fds, so an instance would otherwise get the
    daemon's inheritable descriptors (uvloop's own copies of the stdio, whatever started the
    daemon left open). Marked close-on-exec rather than closed: the pipe on which the exec
    reports its failure (a missing program) is among them and must stay open until then.
    `keep`: descriptors the program is given (a sandbox's secret files, read by bwrap)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.fcntl(fd, fcntl.F_GETFD) | fcntl.FD_CLOEXEC)
            except OSError:  # the listing's own descriptor, closed by now
                pass


def ignore_stop_signals() -> None:
    """In a child between fork and exec of bwrap (runtime/sandbox.py): the bwrap that waits
    for the sandbox ignores a stop's SIGTERM (sent to the whole process group), so that it
    reports the app's own exit; the app gets the default handling back inside."""
    for name in IGNORED_OUTSIDE:
        _libc.signal(getattr(signal, f"SIG{name}"), _SIG_IGN)


def _unwrapped_status(code: int) -> int:
    """bwrap's exit status as the app's: 128+N (the command killed by signal N, as shells and
    bwrap say it) becomes -N, as the container runtime reads podman's (container._status)."""
    if 128 < code < 128 + 65:
        return -(code - 128)
    return code


def _prepare_child(
    cgroup_procs: tuple[str, ...] = (),
    sandboxed: bool = False,
    network: NetNamespace | None = None,
    keep: tuple[int, ...] = (),
) -> None:
    # Runs in the child between fork and exec; all of it survives the exec.
    # Into the instance's control groups first: everything it starts is there too.
    join_cgroups(cgroup_procs)
    if network is not None:
        network.enter()  # the revision's own network (runtime/netns.py)
    if sandboxed:
        ignore_stop_signals()
    close_inherited_fds(keep)
    # If the daemon dies (even by SIGKILL), the kernel kills the instance too. Servers that
    # fork workers (gunicorn) watch their parent.
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    # Orphans of the instance's descendants (a double fork) become its children rather than
    # init's, as they would of a container's PID 1 on Cloud Run: the instance's process tree
    # holds all of it while its first process runs.
    _prctl(_PR_SET_CHILD_SUBREAPER, 1)


class UserNotHonoured(HomerunError):
    """An instance asks for a user this runtime cannot run it as."""


class ProcessInstance:
    """A running child process; the group id equals its pid (start_new_session)."""

    def __init__(
        self,
        name: str,
        port: int,
        process: asyncio.subprocess.Process,
        processes: InstanceProcesses,
        readers: list[asyncio.Task[None]],
        *,
        tell_reaper: Callable[[str], None],
        on_gone: Callable[[ProcessInstance], None],
        sandboxed: bool = False,
        enter: Callable[[int], list[str]] | None = None,
    ) -> None:
        self.name = name
        self.port = port
        self.pid = process.pid
        self.memory_exceeded = False
        self.processes = processes
        self._process = process
        self._readers = readers
        self._tell_reaper = tell_reaper
        self._on_gone = on_gone
        self._scanning: asyncio.TimerHandle | None = None
        self._sandboxed = sandboxed
        # The words that run a command in the sandbox a pid is in (Sandbox.enter).
        self._enter = enter

    @property
    def returncode(self) -> int | None:
        return self._process.returncode

    async def exited(self) -> int:
        """The first process's exit status; once the instance is being stopped (signalled),
        only when every process of it is gone: a shell's child finishes its SIGTERM handler
        before the supervisor takes the instance for exited and kills what is left."""
        status = await self._process.wait()
        if self._sandboxed:
            status = _unwrapped_status(status)
        if self.processes.stopping:
            await self.processes.gone()
            self._on_gone(self)
        return status

    async def wait(self) -> int:
        status = await self.exited()
        if not self.processes.stopping and not self.processes.left():
            self._on_gone(self)
        await drain(self._readers)
        return status

    def signal(self, signum: int) -> None:
        if self._scanning is not None:
            self._scanning.cancel()
            self._scanning = None
        self.processes.signal(signum)
        if signum == signal.SIGKILL and self._process.returncode is not None:
            # The main process is gone and the rest of its group is being killed: the reaper
            # need not remember the group (whose id may be reused later).
            self._tell_reaper(f"-{self.pid}")

    def command_inside(self, argv: Sequence[str]) -> InsideCommand:
        if self._enter is None:
            return as_it_is(argv)
        # The first process is the bwrap outside; its child, the sandbox's init, is inside.
        inside = first_descendant(self.pid)
        if inside is None or self.returncode is not None:
            raise ProcessLookupError(f"{self.name} has no sandbox to run a command in")
        return InsideCommand([*self._enter(inside), *argv])

    def scan_now_and_then(self) -> None:
        """Record the process tree every SCAN_SECONDS while the first process runs."""
        if self._process.returncode is not None or self.processes.stopping:
            return
        self.processes.scan()
        loop = asyncio.get_running_loop()
        self._scanning = loop.call_later(SCAN_SECONDS, self.scan_now_and_then)


class ProcessRuntime:
    """Starts instances as child processes; `open()` before the first, `close()` after the last."""

    def __init__(
        self,
        *,
        stop_grace: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sandbox: Sandbox | None = None,
        unsandboxed: str | None = None,
        networks: Networks | None = None,
    ) -> None:
        # With a stop grace, the runtime itself sends SIGKILL to what is left of an instance
        # that long after its SIGTERM; without, whoever stopped it does (the supervisor).
        self._reaper: subprocess.Popen[bytes] | None = None
        self._stop_grace = stop_grace
        self._clock = clock
        self._sandbox = sandbox  # each instance in a sandbox of its own (runtime/sandbox.py)
        self._unsandboxed = unsandboxed  # why not, when one was asked for: said in describe
        # Sandboxed instances in their revision's own network namespace (runtime/netns.py).
        self._networks = networks if sandbox is not None else None
        self._forgetting: set[asyncio.Future[None]] = set()
        self._subreaper = False
        # Instances whose processes may not all be gone: close() kills what is left of them.
        self._instances: set[ProcessInstance] = set()

    def open(self) -> None:
        # Orphans of instances (a worker whose master died) come to the daemon, not to init:
        # a stop finds them, kills them and reaps them (InstanceProcesses).
        _hold_subreaper()
        self._subreaper = True
        # Own session: a kill of the daemon's process group must not take the reaper along.
        self._reaper = subprocess.Popen(
            [sys.executable, "-m", "homerun.runtime._reaper"],
            stdin=subprocess.PIPE,
            start_new_session=True,
        )

    def close(self) -> None:
        for instance in list(self._instances):
            instance.signal(signal.SIGKILL)
            instance.processes.cancel()
        self._instances.clear()
        if self._reaper is not None and self._reaper.stdin is not None:
            self._reaper.stdin.close()
            self._reaper.wait()
            self._reaper = None
        if self._subreaper:
            self._subreaper = False
            _release_subreaper()

    def mode(self, revision: str) -> tuple[str, str]:
        reason = "the zygote is turned off (config.yaml: zygote: false)"
        if self._sandbox is not None:
            reason = f"{reason}; {self._sandbox.describe()}"
            network = self._networks.describe() if self._networks is not None else shared()
            reason = f"{reason}; {network}"
        elif self._unsandboxed:
            reason = f"{reason}; {self._unsandboxed}"
        return ("spawn", reason)

    def forget(self, revision: str) -> None:
        if self._networks is not None:
            self._networks.forget(revision)

    async def _forget_network(self, process: asyncio.subprocess.Process, owner: str) -> None:
        """An instance of no revision (a job's task, a worker pool's instance) had a network
        namespace to itself: dropped once its first process exits (what it left behind keeps
        the namespace, not the way out, until its stop ends it)."""
        try:
            await process.wait()
        finally:
            if self._networks is not None:
                self._networks.forget(owner)

    def _tell_reaper(self, line: str) -> None:
        if self._reaper is not None and self._reaper.stdin is not None:
            try:
                self._reaper.stdin.write(line.encode() + b"\n")
                self._reaper.stdin.flush()
            except BrokenPipeError:
                self._reaper = None

    async def start(self, spec: InstanceSpec, output: OutputSink) -> ProcessInstance:
        argv = exec_simple_command(spec.argv)
        network = None
        secret_fds: list[int] = []
        if spec.mounts and self._sandbox is None:
            # The control plane refuses such a deploy without a sandbox; never mount nothing.
            raise HomerunError(
                f"{spec.name}: its {spec.mounts.describe()} need the sandbox, which is off"
            )
        if self._sandbox is not None:
            owner = spec.revision or spec.name
            self._sandbox.prepare(owner, spec.env, spec.user)
            secret_fds = open_secret_files(spec.mounts)
            argv = self._sandbox.command(
                argv, spec.env, spec.cwd, owner, spec.mounts, secret_fds, spec.user, spec.root
            )
            if self._networks is not None:
                network = self._networks.of(owner)
        elif spec.root is not None:
            raise HomerunError(
                f"{spec.name}: an image's root folder needs the sandbox, which is off"
            )
        elif spec.user is not None:
            # The deploy refused it (control/users.py): only a sandbox as root honours it.
            raise UserNotHonoured(
                "securityContext.runAsUser/runAsGroup: instances are not sandboxed, so they "
                "run as the daemon's own user"
            )
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            process = await asyncio.create_subprocess_exec(
                *argv,
                cwd=spec.cwd if spec.root is None else "/",  # the image's folder, in the sandbox
                env=spec.env if self._sandbox is None else self._sandbox.host_env(spec.env),
                stdin=subprocess.DEVNULL,
                stdout=out_write,
                stderr=err_write,
                start_new_session=True,
                pass_fds=secret_fds,
                preexec_fn=functools.partial(
                    _prepare_child,
                    spec.cgroup_procs,
                    self._sandbox is not None,
                    network,
                    tuple(secret_fds),
                ),
            )
        except BaseException:
            os.close(out_read)
            os.close(err_read)
            raise
        finally:
            os.close(out_write)
            os.close(err_write)
            for fd in secret_fds:  # bwrap has its copies; it reads them as it starts
                os.close(fd)
        self._tell_reaper(f"+{process.pid}")
        enter = None
        if self._sandbox is not None:
            enter = functools.partial(
                self._sandbox.enter,
                revision=spec.revision or spec.name,
                env=spec.env,
                cwd=spec.cwd,
                user=spec.user,
                root=spec.root,
            )
        instance = ProcessInstance(
            spec.name,
            spec.port,
            process,
            InstanceProcesses(process.pid, grace=self._stop_grace, clock=self._clock),
            [
                asyncio.create_task(pump(out_read, "stdout", output)),
                asyncio.create_task(pump(err_read, "stderr", output)),
            ],
            tell_reaper=self._tell_reaper,
            on_gone=self._instances.discard,
            sandboxed=self._sandbox is not None,
            enter=enter,
        )
        self._instances.add(instance)
        if network is not None and not spec.revision:
            forgetting = asyncio.ensure_future(self._forget_network(process, owner))
            self._forgetting.add(forgetting)
            forgetting.add_done_callback(self._forgetting.discard)
        instance.scan_now_and_then()
        return instance


# -- every process of an instance ---------------------------------------------------------


@dataclass(frozen=True)
class _Stat:
    state: str  # "R", "S"... "Z" for a zombie
    parent: int
    group: int
    session: int
    start_ticks: int


def _stat(pid: int) -> _Stat | None:
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        return _Stat(
            state=fields[0].decode(),
            parent=int(fields[1]),
            group=int(fields[2]),
            session=int(fields[3]),
            start_ticks=int(fields[19]),
        )
    except (OSError, IndexError, ValueError):
        return None


def _children_of_this_process() -> list[int]:
    pid = os.getpid()
    children: list[int] = []
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return children
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children") as listed:
                children.extend(int(child) for child in listed.read().split())
        except OSError:
            continue
    return children


class InstanceProcesses:
    """Every process of one instance, so that a stop reaches them all: its process group, and
    the descendants that left it (setsid, a double fork).

    While the instance's first process (the root) runs, it is a child subreaper
    (`_prepare_child`): every descendant, orphans included, is in the tree under it. Once it
    is gone, what is left came to the daemon, a subreaper too (ProcessRuntime.open), and is
    found among the daemon's children by its session or group (named after the root's pid,
    which the kernel does not give out again while either is in use), or by the pid and start
    time recorded by an earlier scan. Zombies of those are reaped here; the root's, by whoever
    waits for it (asyncio for a spawned instance).

    A stop is systemd's: a signal to every process there is now, and `gone()` waits for all
    of them (and any born meanwhile). With a `grace`, what is left that long after the first
    signal gets SIGKILL; without, the caller sends it.
    """

    def __init__(
        self, root: int, *, grace: float | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.root = root
        self._grace = grace
        self._clock = clock
        root_stat = _stat(root)
        self._root_ticks = root_stat.start_ticks if root_stat is not None else None
        # pid -> start ticks of each process of the instance seen (zombies included until
        # reaped): the ticks tell a pid given to another process since.
        self._known: dict[int, int] = {}
        # Per-stop state
        self.stopping = False
        self._signal: int | None = None  # the last one sent
        self._kill_at: float | None = None
        self._watch: asyncio.Future[None] | None = None

    def scan(self) -> dict[int, _Stat]:
        """The instance's live processes now, recorded."""
        root = _stat(self.root)
        if root is not None and root.start_ticks == self._root_ticks and root.state != "Z":
            tops = [self.root]
        else:
            tops = self._left_behind()
        alive: dict[int, _Stat] = {}
        known: dict[int, int] = {}
        for top in tops:
            for pid in process_tree(top):
                stat = _stat(pid)
                if stat is None or pid in known:
                    continue
                known[pid] = stat.start_ticks
                if stat.state != "Z":
                    alive[pid] = stat
        self._known = known
        return alive

    def signal(self, signum: int) -> None:
        """Send `signum` to every process of the instance there is now."""
        self.stopping = True
        self._signal = signum
        if self._kill_at is None and self._grace is not None:
            self._kill_at = self._clock() + self._grace
        alive = self.scan()
        if not self._root_pid_reused():
            try:
                os.killpg(self.root, signum)
            except ProcessLookupError:
                pass
        self._send(signum, {pid: stat for pid, stat in alive.items() if stat.group != self.root})

    async def gone(self) -> None:
        """Once no process of the instance is left (after the grace, killed). One watch
        serves every caller, and goes on if they leave."""
        if self._watch is None:
            self._watch = asyncio.ensure_future(self._until_gone())
        await asyncio.shield(self._watch)

    def cancel(self) -> None:
        """Stop watching (the runtime closes: what is left was killed)."""
        if self._watch is not None:
            self._watch.cancel()

    async def _until_gone(self) -> None:
        interval = _FIRST_POLL_SECONDS
        while True:
            alive = self.scan()
            if not alive and not self._group_left():
                return
            if self._signal == signal.SIGKILL:
                self._send(signal.SIGKILL, alive)  # born since the kill
            elif self._kill_at is not None and self._clock() >= self._kill_at:
                self.signal(signal.SIGKILL)
            await asyncio.sleep(interval)
            interval = min(interval * 1.5, _POLL_SECONDS)

    def left(self) -> bool:
        """Whether any process of the instance is left (its group, or one that left it)."""
        return bool(self.scan()) or self._group_left()

    def _send(self, signum: int, processes: dict[int, _Stat]) -> None:
        for pid, stat in processes.items():
            now = _stat(pid)
            # Not exited since the scan (and its pid given to another process).
            if now is not None and now.start_ticks == stat.start_ticks:
                try:
                    os.kill(pid, signum)
                except ProcessLookupError:
                    pass

    def _left_behind(self) -> list[int]:
        """With the root gone: its descendants still alive, where the daemon's subreaping put
        them; zombies among them that are the daemon's children are reaped."""
        daemon = os.getpid()
        tops: list[int] = []
        for pid, ticks in self._known.items():
            stat = _stat(pid)
            if stat is None or stat.start_ticks != ticks or pid == self.root:
                continue
            if stat.state != "Z":
                tops.append(pid)
            elif stat.parent == daemon:
                _reap(pid)
        by_session = not self._root_pid_reused()
        for pid in _children_of_this_process():
            stat = _stat(pid)
            if stat is None or pid == self.root or pid in tops:
                continue
            recorded = self._known.get(pid) == stat.start_ticks
            if recorded or (by_session and self.root in (stat.session, stat.group)):
                if stat.state == "Z":
                    _reap(pid)
                else:
                    tops.append(pid)
        return tops

    def _group_left(self) -> bool:
        """Whether the instance's process group still has a member (a zombie counts)."""
        if self._root_pid_reused():
            return False  # the pid names another process: the group it named is empty
        try:
            os.killpg(self.root, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def _root_pid_reused(self) -> bool:
        root = _stat(self.root)
        return (
            root is not None
            and self._root_ticks is not None
            and root.start_ticks != self._root_ticks
        )


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


# One daemon process may hold several runtimes (the zygote runtime's spawner is one).
_subreaper_holds = 0
_subreaper_before = False


def _hold_subreaper() -> None:
    global _subreaper_holds, _subreaper_before
    if _subreaper_holds == 0:
        was = ctypes.c_int(0)
        _prctl(_PR_GET_CHILD_SUBREAPER, ctypes.byref(was))
        _subreaper_before = bool(was.value)
        _prctl(_PR_SET_CHILD_SUBREAPER, 1)
    _subreaper_holds += 1


def _release_subreaper() -> None:
    global _subreaper_holds
    _subreaper_holds -= 1
    if _subreaper_holds == 0 and not _subreaper_before:
        _prctl(_PR_SET_CHILD_SUBREAPER, 0)


# -- shell-form commands ------------------------------------------------------------------

_SHELLS = ("sh", "bash", "dash")
# Words a shell runs itself, which `exec` would look for as programs (or refuse).
_SHELL_OWN = frozenset(
    "! { } [[ ]] case do done elif else esac fi for function if in select then time until "
    "while . : alias bg break cd command continue declare eval exec exit export fc fg "
    "getopts hash jobs let local read readonly return set shift source times trap type "
    "typeset ulimit umask unalias unset wait".split()
)
_SUBSTITUTIONS = ("`", "$(")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def exec_simple_command(argv: Sequence[str]) -> list[str]:
    """`/bin/sh -c "python main.py"` as `/bin/sh -c "exec python main.py"` when the script is
    one simple command: the program replaces the shell, so the stop's SIGTERM reaches it.

    bash does so by itself; dash, Debian's /bin/sh, forks and waits, and dies of the SIGTERM
    its child would have handled. Scripts with anything more (lists, pipes, redirections,
    command substitution, a variable set first, a shell builtin) run as written.
    """
    if (
        len(argv) < 3
        or posixpath.basename(argv[0]) not in _SHELLS
        or argv[1] != "-c"
        or not _is_simple_command(argv[2])
    ):
        return list(argv)
    return [argv[0], argv[1], f"exec {argv[2]}", *argv[3:]]


def _is_simple_command(script: str) -> bool:
    words = split_script(script, {})
    if not words or any(word.operator for word in words):
        return False
    first = words[0]
    if first.specials or first.text in _SHELL_OWN or _ASSIGNMENT.match(first.text):
        return False
    return not any(
        special.source.startswith(_SUBSTITUTIONS) or special.source in ("'", '"')
        for word in words
        for special in word.specials
    )


def process_start_ticks(pid: int) -> int | None:
    """The process start time in clock ticks since boot (tells a reused pid from ours)."""
    stat = _stat(pid)
    return stat.start_ticks if stat is not None else None
