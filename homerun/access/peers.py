"""Which homerun instance, if any, opened a loopback TCP connection.

Instances connect from 127.0.0.1 like every other local process, so the address says nothing.
The kernel knows more: the caller's end of the connection is a socket with an inode (asked of
sock_diag over netlink by its exact addresses and ports, about 15 µs; /proc/net/tcp says the
same but the kernel walks its whole connection table to print it, 9 ms on a 24 GiB machine),
and /proc/PID/fd of the process holding it links to `socket:[INODE]`. Only the process trees
of this platform's instances are searched (some 30 µs each). The router asks once per client
connection, and only for a service whose ingress is internal.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import socket
import struct
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TypeVar

from homerun.procfs import process_tree

T = TypeVar("T")
Address = tuple[str, int]
_IP = ipaddress.IPv4Address | ipaddress.IPv6Address

_TABLES = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))
_ESTABLISHED = "01"
_LISTEN = "0A"


def connection_owner(peer: Address, server: Address, candidates: Mapping[int, T]) -> T | None:
    """The value of the candidate (a process id -> value) whose process tree holds the
    caller's end of the connection `peer` -> `server`; None for any other caller."""
    try:
        if not _ip(peer[0]).is_loopback:
            return None  # not on this machine: not an instance
    except ValueError:
        return None
    if not candidates:
        return None
    try:
        inode = _inode_from_sock_diag(peer, server)
    except OSError:  # no netlink here (a sandbox): read the tables
        inode = socket_inode(_read_tables(), peer, server)
    # Instances in network namespaces of their own (runtime/netns.py) connect to listeners
    # there: their tables say whose end it is. The same addresses and ports may be in use in
    # several namespaces at once (one namespace's ports say nothing of another's), and then
    # nothing tells which one the caller is: it is no one rather than maybe another.
    inodes = [inode] if inode is not None else []
    inodes += _inodes_in_namespaces(peer, server, candidates)
    if len(inodes) != 1:
        return None
    target = f"socket:[{inodes[0]}]"
    for root, value in candidates.items():
        for pid in process_tree(root):
            if _holds(pid, target):
                return value
    return None


def _inodes_in_namespaces(peer: Address, server: Address, candidates: Mapping[int, T]) -> list[int]:
    """The inodes of the sockets `peer` -> `server` in the network namespaces of the
    candidates other than this process's own (a small table each: one revision's sockets)."""
    own = _namespace("self")
    seen = {own} if own is not None else set()
    inodes = []
    for root in candidates:
        # A container's root is conmon, in the daemon's namespace; its child, the container's
        # first process, is in the container's own (runtime/container.py).
        inside, namespace = root, _namespace(str(root))
        if namespace is not None and namespace == own:
            for pid in itertools.islice(process_tree(root), 1, 2):
                inside, namespace = pid, _namespace(str(pid))
        if namespace is None or namespace in seen:
            continue
        seen.add(namespace)
        tables = []
        for name in ("tcp", "tcp6"):
            with contextlib.suppress(OSError):
                tables.append(Path(f"/proc/{inside}/net/{name}").read_text())
        found = socket_inode(tables, peer, server)
        if found is not None:
            inodes.append(found)
    return inodes


def _namespace(pid: str) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


def listener_in_tree(port: int, root: int) -> bool | None:
    """Whether the socket that takes connections to 127.0.0.1:`port` (bound there, to every
    address, or dual-stack) belongs to `root` or a descendant. None when this cannot be told:
    no sock_diag here (or no socket found), or a process of the tree whose descriptors cannot
    be read (not dumpable)."""
    try:
        # A 4-tuple no connection has (port 0): the kernel answers with the listener.
        inode = _inode_from_sock_diag(("127.0.0.1", port), ("127.0.0.1", 0))
    except OSError:
        return None
    if inode is None:
        return None  # a kernel without inet_diag answers "no such socket" to everything
    target = f"socket:[{inode}]"
    unknown = False
    for pid in process_tree(root):
        held = _holds(pid, target)
        if held:
            return True
        unknown |= held is None
    return None if unknown else False


def listening_ports(root: int) -> set[int]:
    """The TCP ports that `root` and its descendants listen on (empty when none, or when
    their sockets cannot be read), read from each process's own network namespace's tables
    (/proc/PID/net/tcp): an instance in a namespace of its own (runtime/netns.py) listens
    where the host's tables do not show it."""
    ports: set[int] = set()
    tables: dict[int | None, dict[int, int]] = {}  # namespace -> listening inode -> port
    for pid in process_tree(root):
        held = _socket_inodes(pid)
        if not held:
            continue
        namespace = _namespace(str(pid))
        if namespace not in tables:
            tables[namespace] = _listeners(pid)
        ports.update(port for inode, port in tables[namespace].items() if inode in held)
    return ports


def _socket_inodes(pid: int) -> set[int]:
    """The inodes of the sockets process `pid` has descriptors on (none if unreadable)."""
    folder = f"/proc/{pid}/fd"
    inodes = set()
    with contextlib.suppress(OSError):
        for descriptor in os.listdir(folder):
            with contextlib.suppress(OSError):
                target = os.readlink(f"{folder}/{descriptor}")
                if target.startswith("socket:["):
                    inodes.add(int(target[8:-1]))
    return inodes


def _listeners(pid: int) -> dict[int, int]:
    """Listening TCP sockets in the network namespace of `pid`: inode -> port."""
    found = {}
    for name in ("tcp", "tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/net/{name}").read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) >= 10 and fields[3] == _LISTEN:
                    with contextlib.suppress(ValueError):
                        found[int(fields[9])] = int(fields[1].rpartition(":")[2], 16)
    return found


def socket_inode(tables: Iterable[str], peer: Address, server: Address) -> int | None:
    """In the text of /proc/net/tcp and tcp6: the inode of the socket whose local end is
    `peer` and remote end `server` (the caller's side of the connection)."""
    want_local = (_ip(peer[0]), peer[1])
    want_remote = (_ip(server[0]), server[1])
    for table in tables:
        for line in table.splitlines()[1:]:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _ESTABLISHED:
                continue
            try:
                local, remote = _address(fields[1]), _address(fields[2])
            except ValueError:
                continue
            if local == want_local and remote == want_remote:
                return int(fields[9])
    return None


# sock_diag (linux/inet_diag.h): one request for the socket with exactly these endpoints.
_NETLINK_SOCK_DIAG = 4
_SOCK_DIAG_BY_FAMILY = 20
_NLM_F_REQUEST = 1
_NLMSG_ERROR = 2
_NO_COOKIE = 0xFFFFFFFF
_INODE_OFFSET = 16 + 68  # nlmsghdr, then inet_diag_msg's idiag_inode


def _inode_from_sock_diag(peer: Address, server: Address) -> int | None:
    """The inode of the socket whose local end is `peer` and remote end `server`; None when
    there is none; OSError when netlink cannot be used."""
    local, remote = _ip(peer[0]), _ip(server[0])
    if local.version != remote.version:
        return None
    family = socket.AF_INET if local.version == 4 else socket.AF_INET6
    request = struct.pack("=BBBBI", family, socket.IPPROTO_TCP, 0, 0, 0xFFFFFFFF)
    request += struct.pack("!HH", peer[1], server[1])
    request += local.packed.ljust(16, b"\0") + remote.packed.ljust(16, b"\0")
    request += struct.pack("=III", 0, _NO_COOKIE, _NO_COOKIE)
    header = struct.pack("=IHHII", 16 + len(request), _SOCK_DIAG_BY_FAMILY, _NLM_F_REQUEST, 1, 0)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, _NETLINK_SOCK_DIAG) as channel:
        channel.settimeout(1.0)
        channel.sendto(header + request, (0, 0))
        answer = channel.recv(65536)
    if len(answer) < 16:
        raise OSError("short sock_diag answer")
    kind = struct.unpack_from("=H", answer, 4)[0]
    if kind == _NLMSG_ERROR:
        errno = -struct.unpack_from("=i", answer, 16)[0]
        if errno == 2:  # ENOENT: no such connection
            return None
        raise OSError(errno, "sock_diag refused the request")
    if len(answer) < _INODE_OFFSET + 4:
        raise OSError("short sock_diag answer")
    inode: int = struct.unpack_from("=I", answer, _INODE_OFFSET)[0]
    return inode


def _address(text: str) -> tuple[_IP, int]:
    """`0100007F:1F90` -> (127.0.0.1, 8080): each 32-bit word is in the host's byte order."""
    host, _, port = text.partition(":")
    raw = bytes.fromhex(host)
    if len(raw) not in (4, 16):
        raise ValueError(text)
    # /proc prints each 32-bit word as a number: little-endian hosts reverse its bytes.
    if sys.byteorder == "little":
        raw = b"".join(raw[index : index + 4][::-1] for index in range(0, len(raw), 4))
    address: _IP = ipaddress.IPv4Address(raw) if len(raw) == 4 else ipaddress.IPv6Address(raw)
    return _unmapped(address), int(port, 16)


def _ip(text: str) -> _IP:
    return _unmapped(ipaddress.ip_address(text.split("%", 1)[0]))


def _unmapped(address: _IP) -> _IP:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _read_tables() -> list[str]:
    tables = []
    for path in _TABLES:
        try:
            tables.append(path.read_text())
        except OSError:
            continue
    return tables


def _holds(pid: int, target: str) -> bool | None:
    """Whether process `pid` has a descriptor open on `target` (`socket:[INODE]`); None when
    its descriptors cannot be read (not dumpable, another user's)."""
    folder = f"/proc/{pid}/fd"
    try:
        descriptors = os.listdir(folder)
    except FileNotFoundError:
        return False  # it exited
    except OSError:
        return None
    for descriptor in descriptors:
        try:
            if os.readlink(f"{folder}/{descriptor}") == target:
                return True
        except OSError:
            continue
    return False
