"""Serving fork requests in a zygote (or a base): the loop over the control socket, forking,
putting a child in the state a spawned instance (or a zygote the daemon started) would have,
stopping the children, and running an instance's server as exec'ing its command would have.

Imported by _zygote_main.py from this folder, on the app's Python: the standard library only,
and Python 3.8's.
"""

from __future__ import annotations

import array
import ctypes
import json
import os
import runpy
import select
import signal
import socket
import sys
import time
import traceback
from typing import Any

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
# The zygote's name in ps -o comm, top and /proc/PID/comm (15 bytes at most); its instances
# take the name a spawned one has (the console script's, say "gunicorn"). Its command line,
# which instances inherit, cannot be changed without privileges.
ZYGOTE_NAME = b"homerun-zygote"
BASE_NAME = b"homerun-base"
MAX_MESSAGE = 1 << 20  # an instance's environment travels in one message
# A base waits this long for its zygotes to stop, then SIGKILLs them.
_STOP_SECONDS = 5.0


class Job:
    """What a forked instance runs: the server's entry point with the instance's arguments."""

    def __init__(self, argv: list[str], boot: dict[str, Any]) -> None:
        self.argv = argv
        self.program: str | None = boot["program"]
        self.module: str | None = boot["module"]
        self.server: str = boot["server"]


def serve(control: socket.socket, boot: dict[str, Any]) -> dict[str, Any]:
    """Fork what the daemon asks for until it closes the socket; in a forked child, the
    request it was forked for (its state set up as the request says)."""
    children: set[int] = set()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    # Signals only note their number on the wake-up pipe; the loop below acts on them.
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, _note)
    signal.signal(signal.SIGTERM, _note)
    poller = select.poll()
    poller.register(control, select.POLLIN)
    poller.register(wake_read, select.POLLIN)
    try:
        while True:
            stop = False
            for fd, _ in poller.poll():
                if fd == wake_read:
                    stop = signal.SIGTERM in _drain(wake_read)
                    _reap(children, control)
                elif fd == control.fileno():
                    try:
                        message, fds = _recv_fds(control, MAX_MESSAGE, 8)
                    except ConnectionError:
                        message, fds = b"", []
                    if not message:
                        stop = True
                        continue
                    request = json.loads(message)
                    forked = _fork(request, fds, control, (wake_read, wake_write), boot)
                    if isinstance(forked, dict):
                        return forked  # in the child
                    if forked:
                        children.add(forked)
            if stop:
                break
    except BaseException:
        _stop_all(children, boot)
        raise
    _stop_all(children, boot)
    sys.exit(0)


def _note(signum: int, frame: object) -> None:
    pass


def _drain(fd: int) -> bytes:
    received = b""
    while True:
        try:
            chunk = os.read(fd, 512)
        except BlockingIOError:
            return received
        if not chunk:
            return received
        received += chunk


def _fork(
    request: dict[str, Any],
    fds: list[int],
    control: socket.socket,
    wake: tuple[int, int],
    boot: dict[str, Any],
) -> int | dict[str, Any] | None:
    """Fork an instance (or, in a base, a zygote); here its pid (or None), in the child the
    request."""
    zygote = "zygote" in request
    # An instance's: stdout, stderr, then its cgroup.procs files, opened by the daemon; a
    # zygote's: its control socket first.
    expected = (3 if zygote else 2) + int(request.get("cgroup_fds", 0))
    if len(fds) != expected or zygote != bool(boot.get("base")):
        for fd in fds:
            os.close(fd)
        send(control, {"failed": request["fork"], "error": "not a request this process serves"})
        return None
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # else the child would write the zygote's pending output again
    try:
        pid = os.fork()
    except OSError as error:
        for fd in fds:
            os.close(fd)
        send(control, {"failed": request["fork"], "error": str(error)})
        return None
    if pid == 0:
        try:
            if zygote:
                _become_zygote(request, fds, control, wake, boot)
            else:
                _become_instance(request, fds, control, wake, boot)
            return request
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    for fd in fds:
        os.close(fd)
    send(control, {"forked": request["fork"], "pid": pid})
    return pid


def _leave_the_parent(control: socket.socket, wake: tuple[int, int], death_signal: int) -> None:
    """In a new child: its own session and process group, which the daemon signals as a
    whole; dying with its parent; none of the parent's signal handling or descriptors."""
    parent = os.getppid()
    os.setsid()
    set_parent_death_signal(death_signal)
    if os.getppid() != parent:
        os._exit(1)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    control.close()
    for fd in wake:
        os.close(fd)


def _join_groups(procs_fds: list[int]) -> None:
    """Write this process's pid to each cgroup.procs descriptor (opened by the daemon)."""
    pid = str(os.getpid()).encode()
    for fd in procs_fds:
        os.write(fd, pid)
        os.close(fd)


def _take_streams(stdout: int, stderr: int) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    for fd in (null, stdout, stderr):
        os.close(fd)


def _become_instance(
    request: dict[str, Any],
    fds: list[int],
    control: socket.socket,
    wake: tuple[int, int],
    boot: dict[str, Any],
) -> None:
    """In the new child: the same process state a spawned instance would start with."""
    # Into the instance's control groups before anything else: all it starts is there too.
    # (Descriptors the daemon opened as root: a sandboxed zygote could not open the files.)
    _join_groups(fds[2:])
    # As a spawned instance dies with the daemon, this one dies with the zygote (which kills
    # the group when the daemon goes: this covers a zygote killed outright).
    _leave_the_parent(control, wake, signal.SIGKILL)
    # As exec'ing the console script names the process after it; `python -m` after python.
    set_name(os.path.basename(boot["program"]).encode() if boot["program"] else boot["comm"])
    _take_streams(*fds[:2])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.update(boot["env_changes"])
    for name in boot["env_removed"]:
        os.environ.pop(name, None)
    if "_" in boot["env_changes"] and boot["program"]:
        os.environ["_"] = boot["program"]  # bash's: the command it exec'd, here the server
    os.chdir(request["cwd"])


def _become_zygote(
    request: dict[str, Any],
    fds: list[int],
    control: socket.socket,
    wake: tuple[int, int],
    boot: dict[str, Any],
) -> None:
    """In a child of a base: a revision's zygote, in the state a zygote the daemon started in
    the revision's folder with its environment would be in before importing the app."""
    # Into the zygote's own control groups before anything else: the app it imports, and all
    # that starts, is bounded by the revision's limits there.
    _join_groups(fds[3:])
    # SIGTERM, as the daemon's death tells a zygote it started: it kills its instances.
    _leave_the_parent(control, wake, signal.SIGTERM)
    set_name(ZYGOTE_NAME)
    own_control, stdout, stderr = fds[:3]
    request["control"] = own_control
    _take_streams(stdout, stderr)
    zygote = request["zygote"]
    os.chdir(zygote["cwd"])
    os.environ.clear()
    os.environ.update(zygote["env"])
    os.environ.update(boot["startup_env"])
    if "PWD" in boot["startup_env"]:
        os.environ["PWD"] = os.getcwd()  # the shell's, in this folder
    sys.path[0] = zygote["boot"]["path0"]
    _gunicorn_reads_cwd_again()
    _show_environment()


def _show_environment() -> None:
    """Write the zygote's environment where /proc/PID/environ reads it (the strings exec put
    on the stack, which its instances inherit): there, a zygote the daemon started, and an
    instance spawned, show their revision's variables (K_REVISION...), which tools that find
    instances read; a base's child would show the base's. The base was started with room to
    spare for this (HOMERUN_ENVIRON_ROOM, which the daemon checks a revision's fit in)."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50, 51)
    except (OSError, IndexError, ValueError):
        return
    shown = b"".join(
        name.encode() + b"=" + value.encode() + b"\0" for name, value in os.environ.items()
    )
    if not start or len(shown) > end - start:
        return
    # Nothing points into these strings any more: os.environ.clear() unset every variable, and
    # the ones set since are libc's own copies.
    ctypes.memmove(start, shown + bytes(end - start - len(shown)), end - start)


def _reap(instances: set[int], control: socket.socket) -> None:
    while instances:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        instances.discard(pid)
        send(control, {"exited": pid, "status": _exit_status(status)})


def _stop_all(children: set[int], boot: dict[str, Any]) -> None:
    """A zygote SIGKILLs its instances' groups; a base SIGTERMs its zygotes (each then kills
    its own instances), SIGKILLs those left after a few seconds; both reap them."""
    if not boot.get("base"):
        _signal_groups(children, signal.SIGKILL)
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        return
    _signal_groups(children, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_SECONDS
    while children:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            children.discard(pid)
        elif time.monotonic() < deadline:
            time.sleep(0.005)
        else:
            _signal_groups(children, signal.SIGKILL)
            deadline = float("inf")


def _signal_groups(groups: set[int], signum: int) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def send(control: socket.socket, message: dict[str, Any]) -> None:
    try:
        control.send(json.dumps(message).encode())
    except OSError:
        pass  # the daemon is gone; end of file on the socket will stop the loop


# -- the instance ---------------------------------------------------------------------


def run_instance(job: Job) -> None:
    """Run the start command's own entry point, as exec'ing it would have (never returns)."""
    sys.argv = [job.program or job.module or job.server, *job.argv]
    if job.server == "gunicorn":
        _gunicorn_reads_port_again()
    if job.module:
        runpy.run_module(job.module, run_name="__main__", alter_sys=True)
    else:
        assert job.program is not None
        runpy.run_path(job.program, run_name="__main__")
    sys.exit(0)


def _gunicorn_reads_port_again() -> None:
    """gunicorn's default --bind comes from $PORT when gunicorn.config is imported, which was
    in the zygote (without PORT): compute it again as that import would have now."""
    bind = getattr(sys.modules.get("gunicorn.config"), "Bind", None)
    if bind is not None and "PORT" in os.environ:
        bind.default = [f"0.0.0.0:{os.environ['PORT']}"]


def _gunicorn_reads_cwd_again() -> None:
    """gunicorn's default --chdir is the folder gunicorn.config was imported in, which for a
    base is `/`: compute it again in the zygote's folder, as that import would have."""
    config = sys.modules.get("gunicorn.config")
    util = sys.modules.get("gunicorn.util")
    if config is None or util is None:
        return
    for setting in getattr(config, "KNOWN_SETTINGS", ()):
        if getattr(setting, "name", None) == "chdir":
            setting.default = util.getcwd()


def set_parent_death_signal(signum: int) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)


def set_name(name: bytes) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, ctypes.c_char_p(name[:15]))


def _exit_status(status: int) -> int:
    """os.waitstatus_to_exitcode, which Python 3.8 lacks: -N when killed by signal N."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _recv_fds(sock: socket.socket, size: int, max_fds: int) -> tuple[bytes, list[int]]:
    """socket.recv_fds, which Python 3.8 (a `FROM python:3.8` revision's) lacks."""
    fds = array.array("i")
    message, ancillary, _, _ = sock.recvmsg(size, socket.CMSG_LEN(max_fds * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return message, list(fds)
