"""Network namespaces of homerun's making (runtime/netns.py), real ones: what listens inside is
reached through sockets made there and from nowhere else, a child enters one before it runs,
and a connection made inside is told apart by whose it is (access/peers.py)."""

from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fakes import free_port

from homerun.access.peers import connection_owner
from homerun.control._namespace_transport import NamespaceTransport
from homerun.model.probes import Probe, ProbeAction
from homerun.runtime.base import InstanceSpec
from homerun.runtime.netns import NamespaceGone, NetNamespace, Networks, can_make
from homerun.runtime.process import ProcessRuntime
from homerun.runtime.sandbox import probe as probe_sandbox
from homerun.scaling.ports import lowest_unprivileged_port
from homerun.scaling.probes import ProbeResult, ProbeTarget, run_probe

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or can_make() is not None, reason="needs root and network namespaces"
)

# Connects from 127.0.0.1:SOURCE to 127.0.0.1:PORT, says so, and holds the connection open
# until its stdin closes.
CALLER = """
import socket, sys
caller = socket.socket()
caller.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
caller.bind(("127.0.0.1", int(sys.argv[2])))
caller.connect(("127.0.0.1", int(sys.argv[1])))
print("connected", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def namespaces() -> Iterator[Callable[[], NetNamespace]]:
    made: list[NetNamespace] = []

    def make() -> NetNamespace:
        made.append(NetNamespace.create())
        return made[-1]

    yield make
    for namespace in made:
        namespace.close()


def refused_from_the_host(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError:
        return True
    return False


def test_what_listens_inside_is_reached_through_it_only(
    namespaces: Callable[[], NetNamespace],
) -> None:
    namespace, other = namespaces(), namespaces()
    with namespace.listen("0.0.0.0", 0) as server:
        port = server.getsockname()[1]
        assert refused_from_the_host(port)

        async def through() -> bytes:
            loop = asyncio.get_running_loop()
            accepting = asyncio.ensure_future(loop.sock_accept(server))
            reader, writer = await namespace.open_connection("127.0.0.1", port)
            accepted, _ = await accepting
            with accepted:
                accepted.sendall(b"inside")
                answer = await reader.read(6)
            writer.close()
            with pytest.raises(ConnectionRefusedError):
                await other.connect("127.0.0.1", port)
            return answer

        assert asyncio.run(through()) == b"inside"


def test_a_child_enters_the_namespace_before_it_runs(
    namespaces: Callable[[], NetNamespace],
) -> None:
    namespace = namespaces()
    shown = subprocess.run(
        [sys.executable, "-c", "import os; print(os.stat('/proc/self/ns/net').st_ino)"],
        preexec_fn=namespace.enter,
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(shown.stdout) == namespace.inode != os.stat("/proc/self/ns/net").st_ino
    same = NetNamespace.of_process(os.getpid())
    assert same.inode == os.stat("/proc/self/ns/net").st_ino
    same.close()
    # Only the loopback, and it is up.
    with namespace.listen("::1", 0) as six:
        assert six.getsockname()[1] > 0


# Binds 127.0.0.1:80 as a user that is not root, and says so.
LOW_PORT = """
import os, socket
os.setgid(65534)
os.setuid(65534)
with socket.socket() as server:
    server.bind(("127.0.0.1", 80))
    print("listening on 80 as", os.getuid())
"""


def test_any_user_may_listen_on_a_low_port_inside_and_only_there(
    namespaces: Callable[[], NetNamespace],
) -> None:
    # A revision's containerPort 80 is its $PORT, and the app is no root (the sandbox).
    namespace = namespaces()
    inside = subprocess.run(
        [sys.executable, "-c", LOW_PORT], preexec_fn=namespace.enter, capture_output=True
    )
    assert inside.stdout == b"listening on 80 as 65534\n", inside.stderr
    if lowest_unprivileged_port() > 80:  # the host's setting is untouched
        outside = subprocess.run([sys.executable, "-c", LOW_PORT], capture_output=True)
        assert b"PermissionError" in outside.stderr, outside


def test_networks_furnish_each_revisions_namespace_once_and_undo_it() -> None:
    furnished: list[int] = []
    undone: list[int] = []

    kept_free: list[frozenset[int]] = []

    def furnish(namespace: NetNamespace, keep_free: frozenset[int]) -> Callable[[], None]:
        furnished.append(namespace.inode)
        kept_free.append(keep_free)
        return lambda: undone.append(namespace.inode)

    networks = Networks()
    networks.furnish = furnish
    first = networks.of("a-00001")
    assert networks.of("a-00001") is first and networks.get("a-00001") is first
    second = networks.of("b-00001", frozenset({8080}))  # a container's, on 8080
    assert first.inode != second.inode and furnished == [first.inode, second.inode]
    assert kept_free == [frozenset(), frozenset({8080})]
    assert networks.get("c-00001") is None
    networks.forget("a-00001")
    assert undone == [first.inode] and first.closed and networks.get("a-00001") is None
    with pytest.raises(NamespaceGone):
        first.new_socket()
    networks.close()
    assert undone == [first.inode, second.inode] and second.closed


def test_a_caller_inside_a_namespace_is_known_and_a_lookalike_elsewhere_makes_it_unknown(
    namespaces: Callable[[], NetNamespace],
) -> None:
    """A connection on a revision's own loopback is its instance's; but when another
    namespace holds one with the very same addresses and ports (a hostile instance made it
    so), nothing tells which is asking: no one, rather than maybe the other."""
    mine, theirs = namespaces(), namespaces()
    with mine.listen("127.0.0.1", 0) as server:
        port = server.getsockname()[1]
        with theirs.listen("127.0.0.1", port) as lookalike:
            source = free_port()
            callers = []
            try:
                caller = start_caller(mine, port, source)
                callers.append(caller)
                accepted, peer = server.accept()
                with accepted:
                    members = {caller.pid: "mine"}
                    server_address = ("127.0.0.1", port)
                    assert connection_owner(peer, server_address, members) == "mine"
                    impostor = start_caller(theirs, port, source)
                    callers.append(impostor)
                    accepted_there, _ = lookalike.accept()
                    with accepted_there:
                        members[impostor.pid] = "theirs"
                        assert connection_owner(peer, server_address, members) is None
            finally:
                for process in callers:
                    assert process.stdin is not None and process.stdout is not None
                    process.stdin.close()
                    process.stdout.close()
                    process.wait(timeout=10)


def start_caller(namespace: NetNamespace, port: int, source: int) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-c", CALLER, str(port), str(source)],
        preexec_fn=namespace.enter,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "connected"
    return process


def test_an_http_client_reaches_a_server_inside_through_its_transport(
    namespaces: Callable[[], NetNamespace],
) -> None:
    """`services advise --ramp` loads a private instance in its revision's namespace."""
    namespace = namespaces()

    async def exchange() -> list[tuple[int, bytes]]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while (await reader.readuntil(b"\r\n\r\n")).startswith(b"GET"):
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\ninside")
                await writer.drain()

        server = await asyncio.start_server(answer, sock=namespace.listen("127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        limits = httpx.Limits(max_connections=2, max_keepalive_connections=2)
        answers = []
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{port}",
            transport=NamespaceTransport(namespace, limits),
            timeout=5,
        ) as client:
            for _ in range(3):  # the second and third on the kept-alive connection
                response = await client.get("/")
                answers.append((response.status_code, response.content))
        server.close()
        return answers

    assert asyncio.run(exchange()) == [(200, b"inside")] * 3


def test_an_instance_of_no_revision_has_a_namespace_until_it_is_gone(tmp_path: Path) -> None:
    """A job's task or a worker pool's instance (no revision): a namespace of its own, dropped
    with it (and its slirp4netns)."""
    sandbox, said = probe_sandbox("auto", tmp_path / "home")
    if sandbox is None:
        pytest.skip(said)
    networks = Networks()
    runtime = ProcessRuntime(sandbox=sandbox, networks=networks)
    lines: list[str] = []

    async def scenario() -> None:
        runtime.open()
        try:
            spec = InstanceSpec(
                name="job-task0-1",
                argv=["readlink", "/proc/self/ns/net"],
                env={"PATH": os.environ["PATH"]},
                cwd=tmp_path,
                port=0,
            )
            instance = await runtime.start(spec, lambda stream, line: lines.append(line))
            namespace = networks.get("job-task0-1")
            assert namespace is not None
            inode = namespace.inode
            assert await asyncio.wait_for(instance.wait(), 30) == 0
            assert lines == [f"net:[{inode}]"], lines
            for _ in range(100):  # dropped as its process exits: at once, or a turn later
                if networks.get("job-task0-1") is None:
                    break
                await asyncio.sleep(0.01)
            assert networks.get("job-task0-1") is None and namespace.closed
            assert "its own network namespace" in runtime.mode("job")[1]
        finally:
            runtime.close()

    asyncio.run(scenario())


def test_probes_go_into_the_instances_namespace(
    namespaces: Callable[[], NetNamespace], tmp_path: Path
) -> None:
    """TCP and HTTP probes connect inside; an exec probe's command runs inside."""
    namespace = namespaces()

    async def probes() -> list[ProbeResult]:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            writer.close()

        server = await asyncio.start_server(answer, sock=namespace.listen("0.0.0.0", 0))
        port = server.sockets[0].getsockname()[1]
        inside = ProbeTarget(port, {"PATH": os.environ["PATH"]}, tmp_path, namespace)
        outside = ProbeTarget(port, {"PATH": os.environ["PATH"]}, tmp_path)
        own = f"net:[{namespace.inode}]"
        command = ("sh", "-c", f'test "$(readlink /proc/self/ns/net)" = "{own}"')
        results = [
            await run_probe(Probe(), inside),
            await run_probe(Probe(action=ProbeAction.HTTP, path="/ready"), inside),
            await run_probe(Probe(action=ProbeAction.EXEC, command=command), inside),
            await run_probe(Probe(), outside),
            await run_probe(Probe(action=ProbeAction.EXEC, command=command), outside),
        ]
        server.close()
        return results

    results = asyncio.run(probes())
    assert [result.ok for result in results] == [True, True, True, False, False], results
