"""Which instance opened a loopback connection: the socket's inode from /proc/net/tcp, then
the process tree that holds it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest
from fakes import free_port, loopback_listener

from homerun.access import peers
from homerun.access.peers import (
    connection_owner,
    listener_in_tree,
    listening_ports,
    socket_inode,
)
from homerun.runtime.netns import NetNamespace

TCP = textwrap.dedent(
    """\
      sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
       0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 111 1
       1: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 222 1
       2: 0100007F:1F90 0100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 333 1
       3: 0200007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000     0        0 444 1
    """
)
TCP6 = textwrap.dedent(
    """\
  sl  local_address                         remote_address                        st
   0: 00000000000000000000000001000000:D432 00000000000000000000000001000000:1F90 01 0 0 0 0 0 555
   1: 0000000000000000FFFF00000100007F:D433 0000000000000000FFFF00000100007F:1F90 01 0 0 0 0 0 666
    """
)


def test_the_callers_end_of_the_connection_in_the_tables() -> None:
    # 127.0.0.1:54321 -> 127.0.0.1:8080 is line 1 (line 2 is the server's end).
    assert socket_inode([TCP], ("127.0.0.1", 0xD431), ("127.0.0.1", 8080)) == 222
    assert socket_inode([TCP], ("127.0.0.2", 0xD431), ("127.0.0.1", 8080)) == 444
    assert socket_inode([TCP], ("127.0.0.1", 1), ("127.0.0.1", 8080)) is None
    assert socket_inode([TCP, TCP6], ("::1", 0xD432), ("::1", 8080)) == 555
    # A v4 client of a dual-stack listener shows as a v4-mapped address.
    assert socket_inode([TCP6], ("::ffff:127.0.0.1", 0xD433), ("127.0.0.1", 8080)) == 666


def test_a_child_process_holding_the_connection_is_found_and_no_one_else() -> None:
    with loopback_listener() as server:
        address = server.getsockname()
        # The caller is a grandchild: a shell that runs python, as a server's worker would be.
        holder = subprocess.Popen(
            [
                "/bin/sh", "-c",
                f"{sys.executable} -c 'import socket, sys; "
                f"s = socket.create_connection((\"127.0.0.1\", {address[1]})); "
                "print(s.getsockname()[1], flush=True); sys.stdin.read()'",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert holder.stdout is not None
            port = int(holder.stdout.readline())
            connection, peer = server.accept()
            assert peer[1] == port
            # sock_diag and the /proc tables (the fallback) name the same socket.
            from_netlink = peers._inode_from_sock_diag(peer, address)
            assert from_netlink is not None
            assert from_netlink == socket_inode(peers._read_tables(), peer, address)
            other = subprocess.Popen(["sleep", "30"])
            candidates = {other.pid: "someone-else", holder.pid: "serviceAccount:caller"}
            found = connection_owner(peer, address, candidates)
            assert found == "serviceAccount:caller"
            assert connection_owner(peer, address, {other.pid: "someone-else"}) is None
            other.kill()
            other.wait()
            assert connection_owner(("10.0.0.1", port), address, candidates) is None
            # This process's own connection is nobody's instance.
            with socket.create_connection(address) as mine:
                theirs, my_peer = server.accept()
                assert connection_owner(my_peer, address, candidates) is None
                theirs.close()
                mine.close()
            connection.close()
        finally:
            assert holder.stdin is not None and holder.stdout is not None
            holder.stdin.close()
            holder.wait(10)
            holder.stdout.close()


def test_the_listener_on_a_port_is_found_in_its_owners_tree_only() -> None:
    # A shell that runs python, which listens: as `sh -c 'exec gunicorn ...'` or a worker.
    listener = subprocess.Popen(
        [
            "/bin/sh", "-c",
            f"{sys.executable} -c 'import socket, sys; "
            "s = socket.create_server((\"0.0.0.0\", 0)); "
            "print(s.getsockname()[1], flush=True); sys.stdin.read()'",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    other = subprocess.Popen(["sleep", "30"])
    try:
        assert listener.stdout is not None
        port = int(listener.stdout.readline())
        assert listener_in_tree(port, listener.pid) is True
        assert listener_in_tree(port, other.pid) is False
        unused = free_port()
        # Nobody listens there: the kernel names no socket, so it cannot be told (the probe
        # asks only after a connection succeeded).
        assert listener_in_tree(unused, listener.pid) is None
    finally:
        for process in (listener, other):
            process.kill()
            process.wait()
        if listener.stdin is not None:
            listener.stdin.close()
        if listener.stdout is not None:
            listener.stdout.close()


def _listener(*prefix: str) -> tuple[subprocess.Popen[str], int]:
    """A shell running python that listens on a port of its own (printed), until stdin ends."""
    listener = subprocess.Popen(
        [
            *prefix, "/bin/sh", "-c",
            f"{sys.executable} -c 'import socket, sys; "
            "s = socket.create_server((\"0.0.0.0\", 0)); "
            "print(s.getsockname()[1], flush=True); sys.stdin.read()'",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert listener.stdout is not None
    return listener, int(listener.stdout.readline())


def _end(listener: subprocess.Popen[str]) -> None:
    listener.kill()
    listener.wait()
    for stream in (listener.stdin, listener.stdout):
        if stream is not None:
            stream.close()


def test_the_ports_a_tree_listens_on_are_read_in_its_own_network_namespace() -> None:
    """In the host's namespace, and in one of its own (an instance of a sandboxed revision,
    runtime/netns.py), whose sockets the host's /proc/net/tcp does not list."""
    listener, port = _listener()
    try:
        assert listening_ports(listener.pid) == {port}
    finally:
        _end(listener)
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("a network namespace of its own needs root and unshare")
    inside, inside_port = _listener("unshare", "--net")
    try:
        assert listening_ports(inside.pid) == {inside_port}
    finally:
        _end(inside)


def test_a_caller_whose_tree_enters_a_namespace_below_its_root_is_found() -> None:
    """A container's instance process is conmon, in the host's network namespace; its child,
    the container's first process, is in the namespace homerun made for the container, and
    connects to the metadata server's listener there."""
    if os.geteuid() != 0 or shutil.which("nsenter") is None:
        pytest.skip("entering a network namespace needs root and nsenter")
    namespace = NetNamespace.create()
    try:
        server = namespace.listen("127.0.0.1", 0)
        server.setblocking(True)
        address = server.getsockname()
        # sh (as conmon) -> python, in the namespace (as the container's first process).
        holder = subprocess.Popen(
            [
                "/bin/sh", "-c",
                f"nsenter --net=/proc/{os.getpid()}/fd/{namespace.fd} "
                f"{sys.executable} -c 'import socket, sys; "
                f"s = socket.create_connection((\"127.0.0.1\", {address[1]})); "
                "print(s.getsockname()[1], flush=True); sys.stdin.read()'; true",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        try:
            assert holder.stdout is not None
            port = int(holder.stdout.readline())
            connection, peer = server.accept()
            assert peer[1] == port
            assert connection_owner(peer, address, {holder.pid: "serviceAccount:ctr"}) == (
                "serviceAccount:ctr"
            )
            connection.close()
        finally:
            assert holder.stdin is not None and holder.stdout is not None
            holder.stdin.close()
            holder.wait(10)
            holder.stdout.close()
            server.close()
    finally:
        namespace.close()
