"""Each sandboxed revision's own network namespace: its instances are reachable only through
homerun.

A revision's processes (its zygote and the instances forked from it, or each spawned instance)
run in a network namespace that homerun makes for the revision (`unshare(CLONE_NEWNET)` in the
daemon's thread, kept by a descriptor) and enters between fork and exec of the sandbox. It has
only its own loopback: an app that binds 0.0.0.0:$PORT answers on that loopback alone, which
no other machine, no host process and no other revision's instance can reach.

Homerun reaches it from outside through sockets made inside: a socket stays in the namespace
it was created in, so the daemon's thread enters the namespace (`setns`), creates the socket
and goes back at once, then connects the socket from its event loop like any other (the
router's pooled connections are ordinary sockets). The same way the daemon listens inside each
namespace on the router's and the metadata server's loopback ports, served by its own servers,
so that the service URLs and GCE_METADATA_HOST an instance is given work unchanged. The way out
to other machines (the package index, APIs) is slirp4netns where it is installed: user-mode
NAT, one small process per revision (some 3.5 MB), its own sandbox and seccomp filter, that
connects out as the daemon's process would, but never to the host's loopback
(--disable-host-loopback): not to the router's or dashboard's host listeners, nor anything
else bound there. Without slirp4netns, an instance reaches the router and metadata server only.

A revision's namespace (with its listeners and slirp4netns) lives until the runtime forgets the
revision, which it does once no instance of it is left and it serves no traffic: a revision
scaled to zero keeps it, as it keeps its zygote. A job's task or a worker pool's instance (no
revision) has one to itself until its first process exits. Names resolve as the host's
resolv.conf says: a resolver on the host's loopback (systemd-resolved's 127.0.0.53) is not
reachable from inside.

Making a namespace and entering one needs CAP_SYS_ADMIN: homerun must run as root. As a normal
user, instances share the host's network (said at start, in status and in describe).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
from collections.abc import Callable, Iterator

CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1
_libc = ctypes.CDLL(None, use_errno=True)
_THREAD_NAMESPACE = "/proc/thread-self/ns/net"
# The lowest port a process without CAP_NET_BIND_SERVICE may listen on, per network namespace.
_UNPRIVILEGED_PORT_START = "/proc/sys/net/ipv4/ip_unprivileged_port_start"

# What a revision's instances get, for describe and status.
PRIVATE = (
    "its own network namespace: instances listen on a loopback of their own, reachable only "
    "through the router (not from another machine, another revision or a host process); "
    "they reach the router's service URLs and the metadata server there"
)
EGRESS = ", and other machines through slirp4netns (not the host's loopback)"
NO_EGRESS = (
    ", and nothing else: slirp4netns is not installed, so no other machine (apt-get install "
    "slirp4netns, or scripts/setup as root)"
)
_PR_SET_PDEATHSIG = 1
# slirp4netns: an MTU this large makes its copies fewer; 127.0.0.1 of the host out of reach.
_SLIRP_OPTIONS = (
    "--configure",
    "--mtu=65520",
    "--disable-host-loopback",
    "--enable-sandbox",
    "--enable-seccomp",
)
SHARED_NOT_ROOT = (
    "the host's network: homerun does not run as root, and only root can make a network "
    "namespace the router can connect into, so an app that binds 0.0.0.0:$PORT answers any "
    "process of this machine (and other machines, unless a firewall stops them)"
)


class NamespaceGone(OSError):
    """The revision's network namespace was dropped (the revision was forgotten)."""


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


def _unshare() -> None:
    if _libc.unshare(CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"unshare(CLONE_NEWNET): {os.strerror(error)}")


@contextlib.contextmanager
def _inside(fd: int | None) -> Iterator[None]:
    """This thread in the namespace of `fd` (None: a new one) for the block, then back in its
    own. Only this thread moves: the event loop's thread runs nothing else meanwhile."""
    home = os.open(_THREAD_NAMESPACE, os.O_RDONLY | os.O_CLOEXEC)
    try:
        if fd is None:
            _unshare()
        else:
            _setns(fd)
        try:
            yield
        finally:
            try:
                _setns(home)
            except OSError as error:
                # Never happens to root with its own namespace's descriptor; a daemon thread
                # left in a revision's namespace would connect where it must not.
                print(f"homerun: cannot leave a network namespace: {error}", file=sys.stderr)
                os.abort()
    finally:
        os.close(home)


class NetNamespace:
    """A network namespace homerun made, held open by a descriptor until `close()`."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self.inode = os.fstat(fd).st_ino  # as /proc/PID/ns/net names it: net:[INODE]

    @classmethod
    def create(cls) -> NetNamespace:
        """A new namespace with its loopback up (and nothing else), where any user may listen
        on any port: the revision's $PORT may be a containerPort below 1024, and its app is
        no root (as Docker and podman set a container's network namespace)."""
        with _inside(None):
            fd = os.open(_THREAD_NAMESPACE, os.O_RDONLY | os.O_CLOEXEC)
        namespace = cls(fd)
        try:
            namespace._loopback_up()
            namespace._any_port_for_anyone()
        except OSError:
            namespace.close()
            raise
        return namespace

    @classmethod
    def of_process(cls, pid: int) -> NetNamespace:
        """The namespace a process is in (a test reaching an instance's $PORT, say)."""
        return cls(os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC))

    @property
    def fd(self) -> int:
        """The descriptor that holds it (for a child to find it by, as /proc/self/fd/FD)."""
        if self._fd < 0:
            raise NamespaceGone(0, "the revision's network namespace is gone")
        return self._fd

    @property
    def closed(self) -> bool:
        return self._fd < 0

    def new_socket(
        self, family: int = socket.AF_INET, kind: int = socket.SOCK_STREAM, proto: int = 0
    ) -> socket.socket:
        """A socket in this namespace."""
        if self._fd < 0:
            raise NamespaceGone(0, "the revision's network namespace is gone")
        with _inside(self._fd):
            return socket.socket(family, kind, proto)

    async def connect(self, host: str, port: int) -> socket.socket:
        """A non-blocking TCP socket connected to host:port inside this namespace."""
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = self.new_socket(family)
        try:
            sock.setblocking(False)
            await asyncio.get_running_loop().sock_connect(sock, (host, port))
        except BaseException:
            sock.close()
            raise
        return sock

    async def open_connection(
        self, host: str, port: int
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(sock=await self.connect(host, port))

    def listen(self, host: str, port: int) -> socket.socket:
        """A non-blocking TCP socket listening on host:port inside this namespace."""
        sock = self.new_socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(1024)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def enter(self) -> None:
        """Move this process into the namespace: in a child between fork and exec."""
        _setns(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            fd, self._fd = self._fd, -1
            os.close(fd)

    def _any_port_for_anyone(self) -> None:
        # /proc/sys/net is the namespace of the thread that opens it.
        with _inside(self._fd), open(_UNPRIVILEGED_PORT_START, "w") as setting:
            setting.write("0")

    def _loopback_up(self) -> None:
        with self.new_socket(socket.AF_INET, socket.SOCK_DGRAM) as control:
            request = struct.pack("16sH14x", b"lo", 0)
            flags = struct.unpack_from("16sH", fcntl.ioctl(control, _SIOCGIFFLAGS, request))[1]
            fcntl.ioctl(control, _SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | _IFF_UP))


async def open_connection(
    host: str, port: int, namespace: NetNamespace | None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio.open_connection, inside `namespace` when there is one."""
    if namespace is None:
        return await asyncio.open_connection(host, port)
    return await namespace.open_connection(host, port)


# furnish(namespace, keep_free) opens what the daemon serves inside a new namespace (listeners
# on the router's and metadata server's ports, but none on a port in keep_free: the one a
# container listens on) and returns what closes them.
Furnish = Callable[[NetNamespace, frozenset[int]], Callable[[], None]]


class Networks:
    """Each sandboxed revision's network namespace: made at the first start of one of its
    processes, dropped when the runtime forgets the revision (no instance of it left)."""

    def __init__(self, furnish: Furnish | None = None, *, slirp4netns: str | None = None) -> None:
        # Set by the daemon once the servers it opens listeners for serve.
        self.furnish = furnish
        self._slirp4netns = slirp4netns  # its path: each namespace's way out
        self._namespaces: dict[str, tuple[NetNamespace, Callable[[], None]]] = {}

    def describe(self) -> str:
        return PRIVATE + (EGRESS if self._slirp4netns else NO_EGRESS)

    def of(self, revision: str, keep_free: frozenset[int] = frozenset()) -> NetNamespace:
        """The namespace of a revision (or of one instance, a job's task, a container), made
        and furnished if it has none; the daemon listens on no port of `keep_free` there."""
        held = self._namespaces.get(revision)
        if held is None:
            namespace = NetNamespace.create()
            try:
                undo = self.furnish(namespace, keep_free) if self.furnish is not None else _nothing
            except BaseException:
                namespace.close()
                raise
            if self._slirp4netns:
                undo = _also(undo, self._way_out(namespace, self._slirp4netns))
            held = self._namespaces[revision] = (namespace, undo)
        return held[0]

    @staticmethod
    def _way_out(namespace: NetNamespace, program: str) -> Callable[[], None]:
        """slirp4netns for the namespace, ended by what is returned (or with the daemon).
        Not waited for: it is up in some 15 ms, which a first instance spends starting."""
        fd = namespace.fd
        try:
            process = subprocess.Popen(
                [program, *_SLIRP_OPTIONS, "--netns-type=path", f"/proc/self/fd/{fd}", "tap0"],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                pass_fds=(fd,),
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
        except OSError as error:
            print(
                f"homerun: warning: slirp4netns could not start ({error}): this revision's "
                "instances reach no other machine",
                file=sys.stderr,
                flush=True,
            )
            return _nothing

        def end() -> None:
            process.kill()
            process.wait()

        return end

    def get(self, revision: str) -> NetNamespace | None:
        """The revision's namespace if it has one (its instances listen there)."""
        held = self._namespaces.get(revision)
        return held[0] if held is not None else None

    def forget(self, revision: str) -> None:
        held = self._namespaces.pop(revision, None)
        if held is not None:
            namespace, undo = held
            undo()
            namespace.close()

    def close(self) -> None:
        for revision in list(self._namespaces):
            self.forget(revision)


def _nothing() -> None:
    pass


def _also(first: Callable[[], None], then: Callable[[], None]) -> Callable[[], None]:
    def both() -> None:
        try:
            first()
        finally:
            then()

    return both


def _die_with_parent() -> None:
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def shared() -> str:
    """What a sandboxed revision's instances get without a namespace of their own, for
    describe (can_make() says why at start)."""
    if os.geteuid() != 0:
        return SHARED_NOT_ROOT
    return "the host's network (no network namespace could be made: see `homerun status`)"


def can_make() -> str | None:
    """None when this process can make network namespaces and connect into them; else why not."""
    if os.geteuid() != 0:
        return SHARED_NOT_ROOT
    try:
        NetNamespace.create().close()
    except OSError as error:
        return (
            f"the host's network: a network namespace cannot be made here ({error}), so an "
            "app that binds 0.0.0.0:$PORT answers any process of this machine"
        )
    return None
