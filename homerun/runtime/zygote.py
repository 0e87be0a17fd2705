"""Instances forked from a per-revision zygote that has already imported the app.

Booting an instance the ordinary way costs an interpreter start and every import of the app
and its server: some 250 ms for the seed's Flask app under gunicorn, 340 ms for FastAPI under
uvicorn. The first start of a revision here makes a zygote instead (`_zygote/_zygote_main.py`):
it imports the server and the app once, checks that forking is safe (no threads, no sockets, pipes
or writable files left open by the imports, no $PORT read at import), and then forks each
instance, which runs the start command's own entry point (gunicorn's or uvicorn's console
script) with the instance's arguments, environment, stdout and stderr. Commands other than a
plain gunicorn or uvicorn command, and apps that are not fork-safe, are spawned by a
ProcessRuntime; `mode()` says which and why.

A revision's zygote is itself forked from a *base*: one per virtualenv and server (and the
variables the interpreter reads as it starts), which has imported the server and the web
framework (Flask, FastAPI) but no app. A zygote forked from it imports only the app, in tens
of milliseconds, and shares the base's pages: it holds some 7 MB of its own (what importing
the app and parsing the server's options wrote to), where a zygote started on its own holds a
whole interpreter's 25-40. Where the base's imports would differ from the revision's own (a
variable they read has another value, the app's folder has a module of a name the base
imported) the revision's zygote is started on its own, as a spawned instance would start.

Where homerun makes control groups (runtime/limited.py hands them over: `confine_zygotes`),
each zygote and each base runs in groups of its own, joined before it imports anything, with
its revision's `--memory`, `--cpu` and an instance's process count (a base: those of the
revision that started it), so what the app does at import is bounded as an instance is; when
the zygote stops or exits, whatever is left in them (a `setsid` double fork the app made) is
killed and the groups are removed. A zygote past its memory limit is ended whole, with Cloud
Run's line in the revision's log; if it was importing the app, the revision's instances are
spawned from then on (each in its own groups, where the same import ends it the same way).

Zygotes cost memory while their revision has no instance. A revision's zygote stops with the
revision (`forget`), a base with the last revision forked from it; and with a memory budget,
the idle ones (no instance running or starting) are stopped, those quickest to make again
first and the least recently used first among them, until the PSS of those left fits it
(`_eviction.py` decides). The next start of an evicted revision
forks a new zygote from its base, or makes both again.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from homerun.model.limits import DEFAULT_LIMITS, Limits
from homerun.runtime import _zygote_bases as bases
from homerun.runtime._eviction import IdleZygote, evictions, pss_bytes
from homerun.runtime._zygote_command import ServerCommand, Unrecognised, recognise
from homerun.runtime._zygote_process import (
    Started,
    ZygoteLost,
    ZygoteProcess,
    without_port,
    zygote_boot,
)
from homerun.runtime.base import ImageRoot, Instance, InstanceSpec, OutputSink, join_cgroups
from homerun.runtime.cgroups import CgroupError, Cgroups, InstanceCgroup, kill_and_remove
from homerun.runtime.netns import NetNamespace, Networks, shared
from homerun.runtime.process import ProcessRuntime, ignore_stop_signals
from homerun.runtime.sandbox import Sandbox, SandboxUnavailable

ZYGOTE, SPAWN = "zygote", "spawn"
_ZYGOTE_MAIN = Path(__file__).with_name("_zygote") / "_zygote_main.py"
_MiB = 1024 * 1024


class ZygoteRuntime:
    """Starts instances by forking a per-revision zygote, or spawns them when it cannot.

    `open()` before the first start, `close()` after the last (it kills what is left);
    `forget(revision)` stops a revision's zygote once none of its instances is left. With a
    `memory_budget` (bytes), idle zygotes are stopped so that their PSS (`measure(pid)`) stays
    within it: those forked from a base first, least recently used first (_eviction.py).
    With `confine_zygotes(cgroups)`, each zygote and base runs in control groups of its own.
    """

    def __init__(
        self,
        *,
        import_wait: float = 30.0,
        max_losses: int = 3,
        memory_budget: int | None = None,
        measure: Callable[[int], int | None] | None = None,
        sandbox: Sandbox | None = None,
        unsandboxed: str | None = None,
        networks: Networks | None = None,
    ) -> None:
        # A start waits this long for the zygote's imports, then spawns (the zygote goes on).
        self._import_wait = import_wait
        # A zygote that dies this often (not by our hand) is given up for spawning.
        self._max_losses = max_losses
        # Each revision's zygote in the revision's own sandbox, and so its instances; spawned
        # instances each in one of their own. No base then: it would see every revision.
        self._sandbox = sandbox
        self._unsandboxed = unsandboxed  # why not, when one was asked for: said in describe
        # Sandboxed, a revision's zygote and instances are in its own network namespace
        # (runtime/netns.py), the spawned ones too.
        self._networks = networks if sandbox is not None else None
        self._spawner = ProcessRuntime(sandbox=sandbox, networks=self._networks)
        # Each zygote's (and base's) own control groups, where homerun makes them.
        self._cgroups: Cgroups | None = None
        self._group_numbers = itertools.count(1)
        # Per-revision state
        self._zygotes: dict[str, ZygoteProcess] = {}
        self._making: dict[str, asyncio.Task[ZygoteProcess | str]] = {}
        self._starting: dict[str, int] = {}  # starts under way: their zygote is not idle
        self._modes: dict[str, tuple[str, str]] = {}
        self._unfit: dict[str, str] = {}
        self._standalone: dict[str, str] = {}  # why its zygote is not forked from a base
        self._losses: dict[str, int] = {}
        # Per-base state, by what revisions must share to share a base (_base_key)
        self._bases: dict[tuple[Any, ...], ZygoteProcess] = {}
        self._base_unfit: dict[tuple[Any, ...], str] = {}
        self._base_revisions: dict[ZygoteProcess, set[str]] = {}  # forked from it, not forgotten
        self._base_waiters: dict[ZygoteProcess, int] = {}  # starts waiting for it to be ready
        # Eviction
        self._memory_budget = memory_budget
        self._measure = measure or pss_bytes
        self._uses = itertools.count(1)
        self._eviction: asyncio.Task[None] | None = None
        self._evict_again = False
        self._stopping: set[asyncio.Future[None]] = set()

    def confine_zygotes(self, cgroups: Cgroups) -> None:
        """Run each zygote and base in control groups of its own, made with `cgroups` (the
        ones instances get theirs from: runtime/limited.py)."""
        self._cgroups = cgroups

    def open(self) -> None:
        self._spawner.open()

    def close(self) -> None:
        for task in [*self._making.values(), self._eviction]:
            if task is not None:
                task.cancel()
        self._making.clear()
        zygotes = [*self._zygotes.values(), *self._bases.values()]
        self._zygotes.clear()
        self._bases.clear()
        self._base_revisions.clear()
        self._base_waiters.clear()
        # Revisions' zygotes first: each kills its instances as its socket closes (in control
        # groups, the zygote and what it started are killed now, its instances before it);
        # then the bases, which wait for the zygotes they forked, then what is left of them.
        for zygote in zygotes:
            zygote.close()
        for zygote in zygotes:
            if zygote.revision:
                zygote.release_groups_now()
        for zygote in zygotes:
            zygote.process.stop()
        for zygote in zygotes:
            zygote.release_groups_now()
        self._spawner.close()

    def mode(self, revision: str) -> tuple[str, str]:
        """("zygote" | "spawn", why), for `describe`."""
        mode, reason = self._mode(revision)
        if self._sandbox is not None:
            reason = f"{reason}; {self._sandbox.describe()}"
            network = self._networks.describe() if self._networks is not None else shared()
            reason = f"{reason}; {network}"
        elif self._unsandboxed:
            reason = f"{reason}; {self._unsandboxed}"
        return mode, reason

    def _mode(self, revision: str) -> tuple[str, str]:
        zygote = self._zygotes.get(revision)
        if zygote is not None and zygote.forking:
            origin = ""
            if zygote.base is not None:
                imported = " and ".join([zygote.command.server, *zygote.base.frameworks])
                origin = (
                    f", forked from the base pid {zygote.base.process.pid} that imported "
                    f"{imported} once for the revisions of this virtualenv"
                )
            elif revision in self._standalone:
                origin = f" (started on its own: {self._standalone[revision]})"
            return (
                ZYGOTE,
                f"{zygote.command.server} {zygote.app} imported once ({zygote.import_ms} ms) by "
                f"zygote pid {zygote.process.pid}{origin}; instances are forked from it",
            )
        return self._modes.get(revision, (SPAWN, "no instance was started yet"))

    def zygote_pid(self, revision: str) -> int | None:
        """The pid of the process the revision's instances are forked from, if there is one."""
        zygote = self._zygotes.get(revision)
        return zygote.process.pid if zygote is not None and zygote.forking else None

    def forget(self, revision: str) -> None:
        """Stop the revision's zygote, and its base if no other revision came from it. Kept
        while an instance of the revision runs or starts: a unit of the same revision routed
        again (a rollback) may be using it."""
        zygote = self._zygotes.get(revision)
        if self._starting.get(revision) or (zygote is not None and zygote.busy):
            return
        making = self._making.pop(revision, None)
        if making is not None:
            making.cancel()
        if zygote is not None:
            del self._zygotes[revision]
            self._stop(zygote)
            if revision not in self._unfit:
                self._modes[revision] = (
                    ZYGOTE,
                    "zygote stopped with the revision's last instance; the next start "
                    "imports the app again",
                )
        for base, revisions in list(self._base_revisions.items()):
            revisions.discard(revision)
            if not revisions and not self._base_in_use(base):
                self._stop_base(base)
        if self._networks is not None:
            self._networks.forget(revision)

    async def start(self, spec: InstanceSpec, output: OutputSink) -> Instance:
        if not spec.revision:
            return await self._spawn(spec, output, "the instance belongs to no revision")
        if spec.mounts:
            # A zygote's instances share its mount view: their volumes would be one.
            return await self._spawn(
                spec,
                output,
                "its secret files and in-memory volumes are each instance's own, so each "
                "instance starts in a sandbox of its own rather than forked from a zygote",
            )
        if spec.revision in self._unfit:
            return await self._spawn(spec, output, self._unfit[spec.revision])
        if spec.user is not None:
            # The zygote runs as the revision's own user: its forks could not change it.
            return await self._spawn(
                spec, output, "securityContext gives its user: each instance starts as that user"
            )
        command = recognise(
            spec.argv, spec.env, str(spec.cwd), spec.root.folder if spec.root else None
        )
        if isinstance(command, Unrecognised):
            self._unfit[spec.revision] = command.reason
            return await self._spawn(spec, output, command.reason)
        revision = spec.revision
        self._starting[revision] = self._starting.get(revision, 0) + 1
        try:
            zygote = await self._zygote_for(spec, command, output)
            if isinstance(zygote, str):
                return await self._spawn(spec, output, zygote)
            try:
                enter = None
                if self._sandbox is not None:
                    enter = functools.partial(
                        self._sandbox.enter,
                        revision=revision,
                        env=spec.env,
                        cwd=spec.cwd,
                        root=spec.root,
                    )
                instance = await zygote.fork(spec, command, output, enter)
            except ZygoteLost as lost:
                return await self._spawn(spec, output, str(lost))
            self._used(zygote)
            return instance
        finally:
            self._starting[revision] -= 1
            if not self._starting[revision]:
                del self._starting[revision]

    async def _spawn(self, spec: InstanceSpec, output: OutputSink, reason: str) -> Instance:
        revision = spec.revision
        if revision and revision not in self._zygotes and revision not in self._making:
            self._modes[revision] = (SPAWN, reason)
        return await self._spawner.start(spec, output)

    # -- making zygotes ---------------------------------------------------------------

    async def _zygote_for(
        self, spec: InstanceSpec, command: ServerCommand, output: OutputSink
    ) -> ZygoteProcess | str:
        """The revision's zygote, ready to fork; or why this instance is spawned."""
        revision = spec.revision
        deadline = self._loop_time() + self._import_wait
        zygote = self._zygotes.get(revision)
        if zygote is None:
            making = self._making.get(revision)
            if making is None:
                making = asyncio.ensure_future(self._make(spec, command, output))
                self._making[revision] = making
                making.add_done_callback(self._made(revision))
                self._modes[revision] = (
                    ZYGOTE,
                    "the zygote is importing the app; instances started meanwhile are spawned",
                )
            try:
                made = await asyncio.wait_for(asyncio.shield(making), self._import_wait)
            except TimeoutError:
                return f"the zygote was still importing the app after {self._import_wait:g} s"
            except asyncio.CancelledError:
                if making.cancelled():  # forgotten meanwhile, not this start cancelled
                    return "the revision was stopped while its zygote was being made"
                raise
            if isinstance(made, str):
                return made
            zygote = made
        elif zygote.command.launcher != command.launcher:
            return "this instance's command differs from the one the zygote runs"
        try:
            reason = await asyncio.wait_for(
                asyncio.shield(zygote.ready), max(0.0, deadline - self._loop_time())
            )
        except TimeoutError:
            return f"the zygote was still importing the app after {self._import_wait:g} s"
        if reason is not None:
            # Said unfit, or died importing (a crash in a C extension, say): spawn from now on.
            # (Not when we stopped it: the next start makes it again.)
            if not zygote.stopped:
                self._unfit[revision] = reason
            if self._zygotes.get(revision) is zygote:
                del self._zygotes[revision]
            return reason
        if not zygote.alive:
            return "the zygote exited"
        return zygote

    def _made(self, revision: str) -> Callable[[asyncio.Task[ZygoteProcess | str]], None]:
        def done(task: asyncio.Task[ZygoteProcess | str]) -> None:
            if self._making.get(revision) is task:
                del self._making[revision]
            if not task.cancelled():
                task.exception()  # retrieved: a failure is the start's to report
            # A zygote ready after its start gave up waiting (and spawned) is idle already.
            self._consider_eviction()

        return done

    async def _make(
        self, spec: InstanceSpec, command: ServerCommand, output: OutputSink
    ) -> ZygoteProcess | str:
        """A new zygote for the revision, registered: forked from the base of its virtualenv
        and server when it can be, else started on its own; or why its instances are spawned."""
        revision = spec.revision
        if self._sandbox is not None:
            self._standalone[revision] = (
                "sandboxed: each revision's zygote starts in the revision's own sandbox"
            )
        if revision not in self._standalone:
            made = await self._from_base(spec, command, output)
            if isinstance(made, ZygoteProcess):
                return made
        try:
            zygote = self._launch(spec, command, output)
        except (OSError, CgroupError, SandboxUnavailable) as error:
            self._unfit[revision] = f"the zygote could not be started ({error})"
            return self._unfit[revision]
        self._adopt(zygote)
        return zygote

    async def _from_base(
        self, spec: InstanceSpec, command: ServerCommand, output: OutputSink
    ) -> ZygoteProcess | None:
        """The revision's zygote forked from its base (started first if need be), once it has
        imported the app; None if it needs a zygote of its own (`_standalone` says why, when
        that will not change)."""
        revision = spec.revision
        if command.program is None:
            self._standalone[revision] = (
                "`python -m` puts the app's folder on sys.path before the server is imported"
            )
            return None
        if bases.environment_bytes(spec.env) > bases.ENVIRON_ROOM_BYTES:
            self._standalone[revision] = (
                f"its environment is over {bases.ENVIRON_ROOM_BYTES // 1024} KiB, more than a "
                "zygote forked from a base can show as its own in /proc/PID/environ"
            )
            return None
        key = bases.base_key(command, spec.env)
        if key in self._base_unfit:
            self._standalone[revision] = f"the base cannot fork: {self._base_unfit[key]}"
            return None
        base = self._bases.get(key)
        if base is None:
            try:
                base = self._launch_base(key, spec, command, output)
            except (OSError, CgroupError, SandboxUnavailable):
                return None  # nor will the zygote start, most likely, and say why
        reason = await self._base_ready(base)
        if reason is not None:
            if not base.stopped:
                self._base_unfit[key] = reason
                self._standalone[revision] = f"the base cannot fork: {reason}"
            self._stop_base(base)
            return None
        reads = base.reads.items()
        different = sorted(name for name, value in reads if spec.env.get(name) != value)
        if different:
            self._standalone[revision] = (
                f"the server or framework reads {', '.join(different[:3])} as it is imported, "
                "and the revision's value differs from its base's"
            )
            return None
        try:
            cgroup = self._new_groups(revision, spec.limits)
        except CgroupError:
            return None  # nor will the zygote start on its own, most likely, and say why
        try:
            zygote = await base.fork_zygote(spec, command, output, cgroup)
        except BaseException as error:
            if cgroup is not None:
                kill_and_remove(cgroup)  # the child, if it was forked, and its groups
            if isinstance(error, ZygoteLost):
                return None  # the base died: this revision's zygote starts on its own this time
            raise
        self._base_revisions.setdefault(base, set()).add(revision)
        self._used(base)
        self._adopt(zygote)
        try:
            await asyncio.shield(zygote.ready)
        except asyncio.CancelledError:
            self._zygotes.pop(revision, None)
            self._stop(zygote)
            raise
        if zygote.standalone is not None:
            self._zygotes.pop(revision, None)
            self._standalone[revision] = zygote.standalone
            return None
        return zygote

    async def _base_ready(self, base: ZygoteProcess) -> str | None:
        """Wait for the base's imports; while a start waits, the base is not idle."""
        self._base_waiters[base] = self._base_waiters.get(base, 0) + 1
        try:
            return await asyncio.shield(base.ready)
        finally:
            if base in self._base_waiters:
                self._base_waiters[base] -= 1

    def _adopt(self, zygote: ZygoteProcess) -> None:
        zygote.on_lost = self._zygote_lost
        zygote.on_exit = self._zygote_exited
        zygote.on_child_exit = self._child_exited
        self._zygotes[zygote.revision] = zygote

    def _launch(
        self, spec: InstanceSpec, command: ServerCommand, output: OutputSink
    ) -> ZygoteProcess:
        """A revision's zygote on its own, in the revision's folder with its environment."""
        boot, env = zygote_boot(spec, command), without_port(spec.env)
        return self._start_process(
            spec.revision, command, boot, env, spec.cwd, output, spec.limits, root=spec.root
        )

    def _launch_base(
        self,
        key: tuple[Any, ...],
        spec: InstanceSpec,
        command: ServerCommand,
        output: OutputSink,
    ) -> ZygoteProcess:
        """A base for revisions like this one: in `/`, with only the variables they share."""
        boot = dict(zygote_boot(spec, command), base=True, args=[])
        env = dict(bases.base_env(spec.env), **{bases.ENVIRON_ROOM: "x" * bases.ENVIRON_ROOM_BYTES})
        base = self._start_process("", command, boot, env, Path("/"), output, spec.limits)
        base.on_lost = self._base_lost
        base.on_child_exit = self._base_child_exited
        self._bases[key] = base
        self._base_revisions[base] = set()
        return base

    def _start_process(
        self,
        revision: str,
        command: ServerCommand,
        boot: dict[str, Any],
        env: dict[str, str],
        cwd: Path,
        output: OutputSink,
        limits: Limits | None,
        root: ImageRoot | None = None,
    ) -> ZygoteProcess:
        """With `root`, the zygote runs in the revision's sandbox rooted in that image, and
        `cwd` and the command are the image's. In control groups of its own, with `limits`,
        when homerun makes them: joined between fork and exec (of bwrap, in a sandbox, so
        that the whole sandbox is in them)."""
        cgroup = self._new_groups(revision, limits)
        try:
            return self._popen(revision, command, boot, env, cwd, output, cgroup, limits, root)
        except BaseException:
            if cgroup is not None:
                kill_and_remove(cgroup)
            raise

    def _popen(
        self,
        revision: str,
        command: ServerCommand,
        boot: dict[str, Any],
        env: dict[str, str],
        cwd: Path,
        output: OutputSink,
        cgroup: InstanceCgroup | None,
        limits: Limits | None,
        root: ImageRoot | None,
    ) -> ZygoteProcess:
        daemon_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv = [command.interpreter, str(_ZYGOTE_MAIN), str(zygote_end.fileno())]
        if command.shell:
            # Through the same shell, which may add to the environment (PWD) as it would for
            # the server: the zygote passes that on to every instance.
            argv = [command.shell, "-c", 'exec "$0" "$@"', *argv]
        sandboxed, network = False, None
        if self._sandbox is not None:
            # Its parent is bwrap's init there, not the daemon; bwrap dies with the daemon.
            boot = dict(boot, daemon_pid=None)
            self._sandbox.prepare(revision, env)
            argv = self._sandbox.command(argv, env, cwd, revision, root=root)
            sandboxed = True
            if self._networks is not None and revision:
                network = self._networks.of(revision)
        procs = cgroup.procs_files if cgroup is not None else ()
        prepare: Callable[[], None] | None = None
        if procs or sandboxed:
            prepare = functools.partial(_prepare_zygote, procs, sandboxed, network)
        try:
            process = subprocess.Popen(
                argv,
                cwd=cwd if root is None else "/",  # the image's folder, in the sandbox
                env=env if self._sandbox is None else self._sandbox.host_env(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(zygote_end.fileno(),),
                # Its own session: a Ctrl-C on `homerun up` is the daemon's to handle.
                start_new_session=True,
                preexec_fn=prepare,
            )
        except BaseException:
            daemon_end.close()
            raise
        finally:
            zygote_end.close()
        try:
            # Not in argv, which every user of the machine can read: the environment may hold
            # secrets.
            daemon_end.send(json.dumps({"boot": boot, "env": env}).encode())
        except OSError:
            pass  # it is gone already (a shell that could not run python): _lost tells why
        assert process.stdout is not None and process.stderr is not None
        streams = (os.dup(process.stdout.fileno()), os.dup(process.stderr.fileno()))
        process.stdout.close()
        process.stderr.close()
        return ZygoteProcess(
            revision,
            command,
            Started(process),
            daemon_end,
            streams,
            output,
            sandboxed=self._sandbox is not None,
            cgroup=cgroup,
            limits=limits,
        )

    def _new_groups(self, revision: str, limits: Limits | None) -> InstanceCgroup | None:
        """A zygote's (`revision` "": a base's) control groups, if homerun makes them. Named
        REVISION.zygote.N (base.N): no instance's name has a dot, and a zygote made again
        while the last one's groups are being removed gets new ones."""
        if self._cgroups is None:
            return None
        number = next(self._group_numbers)
        name = f"{revision}.zygote.{number}" if revision else f"base.{number}"
        return self._cgroups.create(
            name, limits or DEFAULT_LIMITS, group=revision, holder="zygote" if revision else "base"
        )

    # -- zygotes that go ----------------------------------------------------------------

    def _zygote_lost(self, zygote: ZygoteProcess) -> None:
        """A revision's zygote exited without being asked to."""
        revision = zygote.revision
        if self._zygotes.get(revision) is not zygote:
            return
        if not zygote.ready.done() or zygote.ready.result() is not None:
            return  # _zygote_for handles a zygote that never got ready
        del self._zygotes[revision]
        losses = self._losses[revision] = self._losses.get(revision, 0) + 1
        if losses >= self._max_losses:
            self._unfit[revision] = f"the zygote exited {losses} times"
            self._modes[revision] = (SPAWN, self._unfit[revision])
        else:
            self._modes[revision] = (ZYGOTE, "the zygote exited; the next start makes it again")

    def _zygote_exited(self, zygote: ZygoteProcess, how: str) -> None:
        """Once the exit status of a zygote that was lost is known, say it."""
        revision = zygote.revision
        kind, said = self._modes.get(revision, ("", ""))
        if said.startswith("the zygote exited") and zygote.revision not in self._zygotes:
            if revision in self._unfit and self._unfit[revision] == said:
                self._unfit[revision] = said = f"{said} (last: {how})"
            else:
                said = said.replace("the zygote exited", f"the zygote exited ({how})", 1)
            self._modes[revision] = (kind, said)

    def _base_lost(self, base: ZygoteProcess) -> None:
        """A base exited without being asked to: the next revision to need one starts another
        (its zygotes die with it, and each is lost as above)."""
        for key, known in list(self._bases.items()):
            if known is base:
                del self._bases[key]
        self._base_revisions.pop(base, None)
        self._base_waiters.pop(base, None)

    def _stop(self, zygote: ZygoteProcess) -> None:
        zygote.close()
        stopping = asyncio.ensure_future(self._end(zygote))
        self._stopping.add(stopping)
        stopping.add_done_callback(self._stopping.discard)

    @staticmethod
    async def _end(zygote: ZygoteProcess) -> None:
        """A stopped zygote's end. A revision's has no instance left (forget and eviction wait
        for that): it and all in its groups are killed at once (and its base, or here, reaps
        it). A base first exits as it does, once it has reaped the zygotes it forked; then
        what is left in its groups goes."""
        if zygote.revision:
            await zygote.release_groups()
        if isinstance(zygote.process, Started):
            # Reaped in a thread: it exits as soon as it has stopped its children.
            await asyncio.to_thread(zygote.process.stop)
        await zygote.release_groups()

    def _stop_base(self, base: ZygoteProcess) -> None:
        self._base_lost(base)
        self._stop(base)

    def _base_in_use(self, base: ZygoteProcess) -> bool:
        """A zygote forked from it is kept or being forked, or a start waits for it (zygotes
        that were stopped and have not exited yet do not count: the base stops them too)."""
        return (
            base.forking_now
            or bool(self._base_waiters.get(base))
            or any(zygote.base is base for zygote in self._zygotes.values())
        )

    # -- the memory budget --------------------------------------------------------------

    def _used(self, zygote: ZygoteProcess) -> None:
        zygote.last_used = next(self._uses)

    def _child_exited(self, zygote: ZygoteProcess) -> None:
        """An instance (or a base's zygote) exited: its zygote was used until now, and may be
        idle now."""
        self._used(zygote)
        if not zygote.busy:
            self._consider_eviction()

    def _base_child_exited(self, base: ZygoteProcess) -> None:
        """A zygote forked from the base exited (stopped, most likely): the base may be idle
        now, but was not used."""
        if not base.busy:
            self._consider_eviction()

    def _consider_eviction(self) -> None:
        if self._memory_budget is None:
            return
        if self._eviction is not None and not self._eviction.done():
            self._evict_again = True  # measure again once this round is done
            return
        self._eviction = asyncio.ensure_future(self._evict(self._memory_budget))

    async def _evict(self, budget: int) -> None:
        """Stop idle zygotes, least recently used first, until the others' PSS fits `budget`."""
        while True:
            self._evict_again = False
            idle = self._idle()
            sizes = await asyncio.to_thread(self._sizes, [zygote.process.pid for zygote in idle])
            keys = {id(zygote): zygote for zygote in idle}
            candidates = [
                IdleZygote(
                    key=id(zygote),
                    pss=size or 0,
                    last_used=zygote.last_used,
                    base=id(zygote.base) if zygote.base is not None else None,
                    quick=zygote.base is not None and zygote.base.alive,
                )
                for zygote, size in zip(idle, sizes, strict=True)
            ]
            for key in evictions(candidates, budget):
                zygote = keys[key]
                if zygote in self._idle():  # nothing started meanwhile
                    self._evict_one(zygote, budget)
            if not self._evict_again:
                return

    def _sizes(self, pids: list[int]) -> list[int | None]:
        return [self._measure(pid) for pid in pids]

    def _idle(self) -> list[ZygoteProcess]:
        """Zygotes no instance of which runs or starts, and bases all of whose zygotes are
        such (a base that is forking one, or that a start waits for, is not)."""
        revisions = [
            zygote
            for revision, zygote in self._zygotes.items()
            if zygote.forking and not zygote.busy and not self._starting.get(revision)
        ]
        idle = set(revisions)
        bases = [
            base
            for base in self._bases.values()
            if base.forking
            and not base.forking_now
            and not self._base_waiters.get(base)
            and all(zygote in idle for zygote in self._zygotes.values() if zygote.base is base)
        ]
        return [*revisions, *bases]

    def _evict_one(self, zygote: ZygoteProcess, budget: int) -> None:
        if zygote.revision:
            self._zygotes.pop(zygote.revision, None)
            self._stop(zygote)
            self._modes[zygote.revision] = (
                ZYGOTE,
                "zygote stopped while the revision was idle, to keep idle zygotes within "
                f"{budget / _MiB:.0f} MiB (zygote-memory-budget-bytes, least recently used "
                "first); the next start makes it again",
            )
        else:
            self._stop_base(zygote)

    @staticmethod
    def _loop_time() -> float:
        return asyncio.get_running_loop().time()


def _prepare_zygote(
    procs_files: tuple[str, ...], sandboxed: bool, network: NetNamespace | None
) -> None:
    """Between fork and exec of a zygote: into its control groups before anything (everything
    it starts is there too); a sandboxed one's bwrap ignores the stop signals and enters the
    revision's network namespace."""
    join_cgroups(procs_files)
    if sandboxed:
        ignore_stop_signals()
    if network is not None:
        network.enter()
