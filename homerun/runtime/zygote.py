"""Instances forked from a per-revision zygote that has already imported the app.

Booting an instance the ordinary way costs an interpreter start and every import of the app
and its server: some 250 ms for the seed's Flask app under gunicorn, 340 ms for FastAPI under
uvicorn. The first start of a revision here launches a zygote instead (`_zygote_main.py`, run
with the revision's interpreter, cwd and environment): it imports the server and the app once,
checks that forking is safe (no threads, no sockets, pipes or writable files left open by the
imports, no $PORT read at import), and then forks each instance, which runs the start command's
own entry point (gunicorn's or uvicorn's console script) with the instance's arguments,
environment, stdout and stderr. Commands other than a plain gunicorn or uvicorn command, and
apps that are not fork-safe, are spawned by a ProcessRuntime; `mode()` says which and why.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from homerun.runtime._zygote_command import ServerCommand, Unrecognised, recognise
from homerun.runtime.base import Instance, InstanceSpec, OutputSink, describe_status
from homerun.runtime.output import drain, pump
from homerun.runtime.process import ProcessRuntime

ZYGOTE, SPAWN = "zygote", "spawn"
_ZYGOTE_MAIN = Path(__file__).with_name("_zygote_main.py")
_MAX_MESSAGE = 1 << 20  # _zygote_main reads at most this much per message
_EARLY_LINES = 200  # the zygote's own output kept until it is ready (then: the instance's log)


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
    ) -> None:
        self.name = name
        self.port = port
        self.pid = pid
        self._status = status
        self._readers = readers

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


class _Zygote:
    """One revision's zygote process, and the conversation with it over a socket."""

    def __init__(
        self,
        revision: str,
        command: ServerCommand,
        process: subprocess.Popen[bytes],
        control: socket.socket,
        first_output: OutputSink,
    ) -> None:
        self.revision = revision
        self.command = command
        self.process = process
        self._control = control
        self._loop = asyncio.get_running_loop()
        # Set once: None when ready to fork, else why the app cannot be forked.
        self.ready: asyncio.Future[str | None] = self._loop.create_future()
        self.app = ""  # "main:app", as the zygote imported it
        self.import_ms = 0
        self.alive = True
        self.on_lost: Callable[[_Zygote, str], None] | None = None
        # The zygote's own output: held until it is ready, then it belongs to the instance that
        # caused the import (a spawned instance prints its import-time lines in its own log).
        self._early: list[tuple[str, str]] = []
        self._output = first_output
        self._pumps = [
            asyncio.ensure_future(self._pump_own(process.stdout, "stdout")),
            asyncio.ensure_future(self._pump_own(process.stderr, "stderr")),
        ]
        # Per-fork state
        self._ids = itertools.count(1)
        self._forks: dict[int, asyncio.Future[tuple[int, asyncio.Future[int]]]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        control.setblocking(False)
        self._loop.add_reader(control.fileno(), self._on_readable)

    async def fork(
        self, spec: InstanceSpec, command: ServerCommand, output: OutputSink
    ) -> ZygoteInstance:
        """Have the zygote fork an instance running `command` (this instance's arguments: with
        Kubernetes' $(PORT) the supervisor has put each instance's own port in them)."""
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        readers = [
            asyncio.ensure_future(pump(out_read, "stdout", output)),
            asyncio.ensure_future(pump(err_read, "stderr", output)),
        ]
        request_id = next(self._ids)
        forked: asyncio.Future[tuple[int, asyncio.Future[int]]] = self._loop.create_future()
        self._forks[request_id] = forked
        request = {
            "fork": request_id,
            "argv": command.args_for(spec.port),
            "env": spec.env,
            "cwd": str(spec.cwd),
        }
        try:
            if not self.alive:
                raise ZygoteLost("the zygote has exited")
            await self._send(json.dumps(request).encode(), [out_write, err_write])
        except BaseException:
            self._forks.pop(request_id, None)
            raise
        finally:
            # The zygote holds its own copies now; with ours closed, the instance's exit is
            # what ends the readers.
            os.close(out_write)
            os.close(err_write)
        self._output = output
        pid, status = await forked
        return ZygoteInstance(spec.name, spec.port, pid, status, readers)

    @property
    def forking(self) -> bool:
        """Ready, alive, and fit: instances are forked from it."""
        return self.alive and self.ready.done() and self.ready.result() is None

    def close(self) -> None:
        """End of file for the zygote: it SIGKILLs its instances' groups and exits."""
        if self.alive:
            self._loop.remove_reader(self._control.fileno())
            self.alive = False
        self._control.close()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        _settle(self.ready, "the zygote was stopped")
        self._end_all(ZygoteLost("the zygote was stopped"))

    # -- the conversation -------------------------------------------------------------

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
        while True:
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
            for stream, line in self._early:
                self._output(stream, line)
            self._early = []
            _settle(self.ready, None)
        elif "unfit" in message:
            self._early = []  # the spawned instance prints the same lines again
            _settle(self.ready, str(message["unfit"]))
        elif "forked" in message:
            pid = int(message["pid"])
            status: asyncio.Future[int] = self._loop.create_future()
            self._exits[pid] = status
            forked = self._forks.pop(int(message["forked"]), None)
            if forked is not None and not forked.done():
                forked.set_result((pid, status))
            else:
                # The start was cancelled while the zygote forked: nobody will stop this one.
                _kill_group(pid)
        elif "failed" in message:
            forked = self._forks.pop(int(message["failed"]), None)
            if forked is not None and not forked.done():
                forked.set_exception(ZygoteLost(f"the zygote could not fork: {message['error']}"))
        elif "exited" in message:
            exited = self._exits.pop(int(message["exited"]), None)
            if exited is not None:
                _settle(exited, int(message["status"]))

    def _lost(self) -> None:
        """End of file from the zygote: it exited (after an `unfit`, or killed outright)."""
        self._loop.remove_reader(self._control.fileno())
        self.alive = False
        self._control.close()
        try:
            status = self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        how = describe_status(status)
        said = next((line for stream, line in reversed(self._early) if stream == "stderr"), "")
        _settle(
            self.ready,
            f"the zygote exited while importing the app ({how}{': ' + said if said else ''})",
        )
        self._end_all(ZygoteLost(f"the zygote exited ({how})"))
        if self.on_lost is not None:
            self.on_lost(self, how)

    def _end_all(self, error: ZygoteLost) -> None:
        """Nothing more will come from the zygote: forks fail, instances are gone."""
        for forked in self._forks.values():
            if not forked.done():
                forked.set_exception(error)
        self._forks.clear()
        for pid, status in self._exits.items():
            # Each instance died with the zygote (its parent-death signal is SIGKILL); whatever
            # else is left in its group goes too.
            _kill_group(pid)
            _settle(status, -signal.SIGKILL)
        self._exits.clear()

    async def _pump_own(self, stream: Any, name: str) -> None:
        fd = os.dup(stream.fileno())
        stream.close()
        await pump(fd, name, self._own_line)

    def _own_line(self, stream: str, line: str) -> None:
        if not self.ready.done():
            if len(self._early) < _EARLY_LINES:
                self._early.append((stream, line))
        else:
            self._output(stream, line)


class ZygoteRuntime:
    """Starts instances by forking a per-revision zygote, or spawns them when it cannot.

    `open()` before the first start, `close()` after the last (it kills what is left);
    `forget(revision)` stops a revision's zygote once none of its instances is left.
    """

    def __init__(self, *, import_wait: float = 30.0, max_losses: int = 3) -> None:
        # A start waits this long for the zygote's imports, then spawns (the zygote goes on).
        self._import_wait = import_wait
        # A zygote that dies this often (not by our hand) is given up for spawning.
        self._max_losses = max_losses
        self._spawner = ProcessRuntime()
        # Per-revision state
        self._zygotes: dict[str, _Zygote] = {}
        self._modes: dict[str, tuple[str, str]] = {}
        self._unfit: dict[str, str] = {}
        self._losses: dict[str, int] = {}

    def open(self) -> None:
        self._spawner.open()

    def close(self) -> None:
        for zygote in list(self._zygotes.values()):
            zygote.close()
        self._zygotes.clear()
        self._spawner.close()

    def mode(self, revision: str) -> tuple[str, str]:
        """("zygote" | "spawn", why), for `describe`."""
        zygote = self._zygotes.get(revision)
        if zygote is not None and zygote.forking:
            return (
                ZYGOTE,
                f"{zygote.command.server} {zygote.app} imported once ({zygote.import_ms} ms) by "
                f"zygote pid {zygote.process.pid}; instances are forked from it",
            )
        return self._modes.get(revision, (SPAWN, "no instance was started yet"))

    def forget(self, revision: str) -> None:
        zygote = self._zygotes.pop(revision, None)
        if zygote is not None:
            zygote.close()
            if revision not in self._unfit:
                self._modes[revision] = (
                    ZYGOTE,
                    "zygote stopped with the revision's last instance; the next start "
                    "imports the app again",
                )

    async def start(self, spec: InstanceSpec, output: OutputSink) -> Instance:
        if not spec.revision:
            return await self._spawn(spec, output, "the instance belongs to no revision")
        if spec.revision in self._unfit:
            return await self._spawn(spec, output, self._unfit[spec.revision])
        command = recognise(spec.argv, spec.env, str(spec.cwd))
        if isinstance(command, Unrecognised):
            self._unfit[spec.revision] = command.reason
            return await self._spawn(spec, output, command.reason)
        zygote = await self._zygote_for(spec, command, output)
        if isinstance(zygote, str):
            return await self._spawn(spec, output, zygote)
        try:
            return await zygote.fork(spec, command, output)
        except ZygoteLost as lost:
            return await self._spawn(spec, output, str(lost))

    async def _spawn(self, spec: InstanceSpec, output: OutputSink, reason: str) -> Instance:
        if spec.revision and spec.revision not in self._zygotes:
            self._modes[spec.revision] = (SPAWN, reason)
        return await self._spawner.start(spec, output)

    async def _zygote_for(
        self, spec: InstanceSpec, command: ServerCommand, output: OutputSink
    ) -> _Zygote | str:
        """The revision's zygote, ready to fork; or why this instance is spawned."""
        revision = spec.revision
        zygote = self._zygotes.get(revision)
        if zygote is None:
            try:
                zygote = self._launch(spec, command, output)
            except OSError as error:
                self._unfit[revision] = f"the zygote could not be started ({error})"
                return self._unfit[revision]
        elif zygote.command.launcher != command.launcher:
            return "this instance's command differs from the one the zygote runs"
        try:
            reason = await asyncio.wait_for(asyncio.shield(zygote.ready), self._import_wait)
        except TimeoutError:
            return f"the zygote was still importing the app after {self._import_wait:g} s"
        if reason is not None:
            # Said unfit, or died importing (a crash in a C extension, say): spawn from now on.
            self._unfit[revision] = reason
            if self._zygotes.get(revision) is zygote:
                del self._zygotes[revision]
            return reason
        if not zygote.alive:
            return "the zygote exited"
        return zygote

    def _launch(self, spec: InstanceSpec, command: ServerCommand, output: OutputSink) -> _Zygote:
        daemon_end, zygote_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        boot = {
            "server": command.server,
            "program": command.program,
            "module": command.module,
            "args": command.args_for(spec.port),
            # sys.path[0] as the server's own script (or `python -m`) would have it.
            "path0": os.path.dirname(command.program) if command.program else str(spec.cwd),
            "daemon_pid": os.getpid(),
        }
        # The zygote is not an instance: no PORT, which would be the wrong one for the next.
        env = {name: value for name, value in spec.env.items() if name != "PORT"}
        argv = [command.interpreter, str(_ZYGOTE_MAIN), str(zygote_end.fileno())]
        if command.shell:
            # Through the same shell, which may add to the environment (PWD) as it would for
            # the server: the zygote passes that on to every instance.
            argv = [command.shell, "-c", 'exec "$0" "$@"', *argv]
        try:
            process = subprocess.Popen(
                argv,
                cwd=spec.cwd,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                pass_fds=(zygote_end.fileno(),),
                # Its own session: a Ctrl-C on `homerun up` is the daemon's to handle.
                start_new_session=True,
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
        zygote = _Zygote(spec.revision, command, process, daemon_end, output)
        zygote.on_lost = self._zygote_lost
        self._zygotes[spec.revision] = zygote
        self._modes[spec.revision] = (
            ZYGOTE,
            "the zygote is importing the app; instances started meanwhile are spawned",
        )
        return zygote

    def _zygote_lost(self, zygote: _Zygote, how: str) -> None:
        """A zygote that was forking instances exited without being asked to."""
        revision = zygote.revision
        if self._zygotes.get(revision) is not zygote or zygote.ready.result() is not None:
            return  # _zygote_for handles a zygote that never got ready
        del self._zygotes[revision]
        losses = self._losses[revision] = self._losses.get(revision, 0) + 1
        if losses >= self._max_losses:
            self._unfit[revision] = f"the zygote exited {losses} times (last: {how})"
            self._modes[revision] = (SPAWN, self._unfit[revision])
        else:
            self._modes[revision] = (
                ZYGOTE,
                f"the zygote exited ({how}); the next start restarts it",
            )


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _settle(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)

