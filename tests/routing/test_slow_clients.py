"""Slow clients cost the router a buffer, never an instance's slot for long: bodies read whole
before a slot is taken, the body timeout and minimum rate (408), the send timeout for clients
that stop reading; and the Host's port, the 502 of an instance that exited. A real uvicorn app
behind a real Router on loopback, on both event loops."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import uvloop
from fakes import free_port, loopback_listener

from homerun.routing.proxy import Router
from homerun.routing.table import InvalidPort, parse_host, split_port
from homerun.routing.throttler import Endpoint, Throttler
from homerun.routing.types import RequestRecord, Route, RouteError

Address = tuple[str, int]
Run = Callable[[Callable[[], Awaitable[None]]], None]
# Record fields (homerun.routing.types.RequestRecord)
STATUS, SERVICE = 5, 12


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    loop_factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run(scenario: Callable[[], Awaitable[None]]) -> None:
        async def bounded() -> None:
            await asyncio.wait_for(scenario(), 30)

        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(bounded())

    return run


class Proxy:
    """A Router on a free port in front of one revision of concurrency `capacity` (one endpoint
    unless `upstream` is None: a revision scaled to zero). Host svc.test routes to it."""

    def __init__(self, upstream: Address | None, *, capacity: int = 1, **options: Any) -> None:
        self.demands = 0
        self.throttler = Throttler("svc-00001-abc", self._demand, time.monotonic)
        self.endpoint = Endpoint("svc-00001-abc-1", *(upstream or ("127.0.0.1", 1)), capacity)
        if upstream is not None:
            self.throttler.add(self.endpoint)
        self.route = Route("svc", "svc-00001-abc", self.throttler, 60.0)
        self.records: list[RequestRecord] = []
        self.router = Router(self.resolve, on_request=self.records.append, **options)

    def _demand(self) -> None:
        self.demands += 1

    def resolve(self, host: str) -> Route | RouteError:
        if host.rsplit(":", 1)[0] == "svc.test":
            return self.route
        return RouteError(404, f"no service answers at {host}")

    async def __aenter__(self) -> Proxy:
        await self.router.start("127.0.0.1", free_port())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.router.close()

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.router.port)

    async def get(self, path: bytes, host: bytes = b"svc.test") -> tuple[int, bytes]:
        """One request on its own connection: status and body."""
        reader, writer = await self.connect()
        writer.write(b"GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n" % (path, host))
        response = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        return status_of(response), response.partition(b"\r\n\r\n")[2]


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


async def until(condition: Callable[[], bool], what: str, within: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


class Trickler:
    """A client that sends a request head, then its body a byte at a time, one a second."""

    def __init__(self, proxy: Proxy, size: int = 100, head: bytes = b"") -> None:
        self.proxy = proxy
        self.size = size
        self.head = head
        self.response = b""
        self.answered_at: float | None = None

    async def __call__(self) -> None:
        reader, writer = await self.proxy.connect()
        writer.write(
            b"POST /upload HTTP/1.1\r\nHost: svc.test\r\nContent-Length: %d\r\n%s\r\n"
            % (self.size, self.head)
        )
        try:
            for _ in range(min(self.size, 10)):  # bounded: 10 bytes, 10 s at most
                writer.write(b"x")
                with contextlib.suppress(TimeoutError):
                    self.response += await asyncio.wait_for(reader.read(4096), 1.0)
                if self.response:
                    break
            if self.response:
                self.answered_at = time.monotonic()
                with contextlib.suppress(TimeoutError, ConnectionError):
                    self.response += await asyncio.wait_for(reader.read(), 3)
        except ConnectionError:
            pass
        finally:
            writer.close()


# -- bodies read whole before a slot --------------------------------------------------------


def test_a_trickling_body_takes_no_slot_and_gets_408(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        # Concurrency 1: a trickler holding the slot would make every other request wait.
        async with Proxy(instance, body_timeout=1.0, body_min_rate=100) as proxy:
            trickler = Trickler(proxy)
            started = time.monotonic()
            trickling = asyncio.ensure_future(trickler())
            await asyncio.sleep(0.3)  # its head and first byte are in
            asked = time.monotonic()
            assert await proxy.get(b"/hello") == (200, b"hello")
            assert time.monotonic() - asked < 0.5, "the normal request waited for a slot"
            assert proxy.endpoint.in_flight == 0 and proxy.throttler.meter.concurrency == 0
            await trickling
            # 1 s + 2 bytes / 100 bytes/s allowed, seen by the once-a-second sweep.
            assert status_of(trickler.response) == 408, trickler.response
            assert b"slower than 100 bytes/s" in trickler.response
            assert b"connection: close" in trickler.response
            assert trickler.answered_at is not None
            assert 1.0 <= trickler.answered_at - started < 3.5
            # The request log has it, under its service.
            slow = [record for record in proxy.records if record[STATUS] == 408]
            assert len(slow) == 1 and slow[0][SERVICE] == "svc"
            assert proxy.endpoint.in_flight == 0

    run(scenario)


def test_a_body_that_stops_gets_408_after_the_body_timeout(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        # No minimum rate: only the time between two reads counts.
        async with Proxy(instance, body_timeout=1.0, body_min_rate=0) as proxy:
            reader, writer = await proxy.connect()
            started = time.monotonic()
            writer.write(
                b"POST /upload HTTP/1.1\r\nHost: svc.test\r\nContent-Length: 10\r\n\r\nabc"
            )
            response = await asyncio.wait_for(reader.read(), 5)
            assert status_of(response) == 408
            assert b"no request body bytes came for 1 s" in response
            # Progress is looked at once a second: a stall shows between 1 and 2 sweeps late.
            assert 1.0 <= time.monotonic() - started < 4.0
            writer.close()

    run(scenario)


def test_many_tricklers_make_no_demand_for_instances(run: Run) -> None:
    async def scenario() -> None:
        # A revision at zero instances: a request that took a slot (or waited for one) would
        # ask the autoscaler for an instance.
        async with Proxy(None) as proxy:
            writers = []
            for _ in range(20):
                _, writer = await proxy.connect()
                writer.write(
                    b"POST /upload HTTP/1.1\r\nHost: svc.test\r\nContent-Length: 100\r\n\r\nx"
                )
                writers.append(writer)
            await until(lambda: len(proxy.router.clients) == 20, "20 clients")
            for writer in writers:
                writer.write(b"y")
                await writer.drain()
            await asyncio.sleep(0.2)
            assert proxy.demands == 0
            assert proxy.throttler.meter.concurrency == 0
            assert proxy.throttler.queue_length == 0
            for writer in writers:
                writer.close()

    run(scenario)


def test_a_buffered_body_arrives_whole_and_expect_continue_is_answered_by_the_router(
    run: Run, instance: Address
) -> None:
    async def scenario() -> None:
        body = bytes(range(256)) * 1000
        async with Proxy(instance) as proxy:
            reader, writer = await proxy.connect()
            writer.write(
                b"POST /upload HTTP/1.1\r\nHost: svc.test\r\nContent-Length: %d\r\n"
                b"Expect: 100-continue\r\n\r\n" % len(body)
            )
            assert await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5) == (
                b"HTTP/1.1 100 Continue\r\n\r\n"
            )
            half = len(body) // 2
            writer.write(body[:half])
            await writer.drain()
            await asyncio.sleep(0.1)
            assert proxy.endpoint.in_flight == 0  # no slot while the body comes in
            writer.write(body[half:])
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200"), head  # no second 100 from the instance
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            payload = json.loads(await reader.readexactly(length))
            assert payload == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
            writer.close()

    run(scenario)


def test_a_body_over_the_buffer_streams_as_before(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        body = b"z" * (1024 * 1024)
        async with Proxy(instance, body_buffer_bytes=64 * 1024) as proxy:
            reader, writer = await proxy.connect()
            writer.write(
                b"POST /upload HTTP/1.1\r\nHost: svc.test\r\nContent-Length: %d\r\n\r\n" % len(body)
            )
            writer.write(body[:100_000])
            # It took its slot at its head and is on its way to the instance, body unfinished.
            await until(lambda: proxy.endpoint.in_flight == 1, "the request to take its slot")
            writer.write(body[100_000:])
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
            assert head.startswith(b"HTTP/1.1 200"), head
            length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
            payload = json.loads(await reader.readexactly(length))
            assert payload == {"bytes": len(body), "sha256": hashlib.sha256(body).hexdigest()}
            writer.close()
            await until(lambda: proxy.endpoint.in_flight == 0, "the slot to come back")

    run(scenario)


def test_a_streamed_body_that_stalls_gives_its_slot_back(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        options: dict[str, Any] = {"body_buffer_bytes": 10, "body_timeout": 1.0}
        async with Proxy(instance, **options) as proxy:
            reader, writer = await proxy.connect()
            writer.write(
                b"POST /upload HTTP/1.1\r\nHost: svc.test\r\nContent-Length: 100\r\n\r\nab"
            )
            await until(lambda: proxy.endpoint.in_flight == 1, "the request to take its slot")
            response = await asyncio.wait_for(reader.read(), 5)
            assert status_of(response) == 408
            assert proxy.endpoint.in_flight == 0
            assert not proxy.endpoint.idle_connections  # its half-sent request is not reused
            assert await proxy.get(b"/hello") == (200, b"hello")
            writer.close()

    run(scenario)


# -- clients that stop reading --------------------------------------------------------------


def test_a_client_that_stops_reading_gives_its_slot_back_after_the_send_timeout(
    run: Run, instance: Address
) -> None:
    async def scenario() -> None:
        async with Proxy(instance, send_timeout=1.0) as proxy:
            client = socket.socket()
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            client.setblocking(False)
            await asyncio.get_running_loop().sock_connect(client, ("127.0.0.1", proxy.router.port))
            size = 200 * 1024 * 1024
            request = b"GET /big?bytes=%d&sized=1 HTTP/1.1\r\nHost: svc.test\r\n\r\n" % size
            await asyncio.get_running_loop().sock_sendall(client, request)
            # It is read by nobody from here on.
            await until(lambda: proxy.endpoint.in_flight == 1, "the response to start")
            await until(
                lambda: any(each.writing_paused for each in proxy.router.clients),
                "the router's buffer to the client to fill",
            )
            paused_at = time.monotonic()
            await until(lambda: proxy.endpoint.in_flight == 0, "the slot to come back", 5.0)
            assert 0.9 <= time.monotonic() - paused_at < 3.5
            assert not proxy.endpoint.idle_connections  # mid-response: closed, not pooled
            await until(lambda: not proxy.router.clients, "the client's connection to go")
            assert await proxy.get(b"/hello") == (200, b"hello")
            client.close()

    run(scenario)


# -- the Host's port ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("svc.localhost", ("svc.localhost", None)),
        ("svc.localhost:8080", ("svc.localhost", 8080)),
        ("svc.localhost:1", ("svc.localhost", 1)),
        ("svc.localhost:65535", ("svc.localhost", 65535)),
        ("[::1]", ("[::1]", None)),
        ("[::1]:8080", ("[::1]", 8080)),
        ("127.0.0.1:80", ("127.0.0.1", 80)),
    ],
)
def test_split_port(host: str, expected: tuple[str, int | None]) -> None:
    assert split_port(host) == expected


@pytest.mark.parametrize(
    "host",
    ["svc.localhost:99999", "svc.localhost:0", "svc.localhost:", "svc.localhost:8o", "[::1]:"],
)
def test_split_port_refuses_what_is_not_a_port(host: str) -> None:
    with pytest.raises(InvalidPort):
        split_port(host)


def test_parse_host_keeps_ports_and_ipv6_apart_and_refuses_invalid_ports() -> None:
    assert parse_host("tag---svc.localhost:8080", "localhost") == ("svc", "tag")
    assert parse_host("svc.localhost:99999", "localhost") is None
    assert parse_host("svc.localhost:", "localhost") is None
    assert parse_host("[::1]:8080", "localhost") is None
    assert parse_host("svc.example.com:443", "example.com") == ("svc", None)


def test_a_host_naming_another_port_is_not_routed(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            port = proxy.router.port
            other = 1 if port != 1 else 2
            assert await proxy.get(b"/hello", b"svc.test") == (200, b"hello")
            assert await proxy.get(b"/hello", b"svc.test:%d" % port) == (200, b"hello")
            status, body = await proxy.get(b"/hello", b"svc.test:%d" % other)
            assert status == 404 and b"listens on port %d" % port in body
            for invalid in (b"99999", b"0"):
                status, body = await proxy.get(b"/hello", b"svc.test:" + invalid)
                assert status == 400 and b"port is not valid" in body
            # An absolute target's authority is held to the same rule.
            own = b"http://svc.test:%d/hello" % port
            assert await proxy.get(own, b"elsewhere.test") == (200, b"hello")
            foreign = b"http://svc.test:%d/hello" % other
            assert (await proxy.get(foreign, b"svc.test"))[0] == 404
            assert (await proxy.get(b"http://svc.test/hello", b"x.test")) == (200, b"hello")
            # An IPv6 literal's colons are not a port: it reaches the resolver (unknown here).
            assert (await proxy.get(b"/hello", b"[::1]"))[0] == 404
            assert (await proxy.get(b"/hello", b"[::1]:%d" % port))[0] == 404
            assert (await proxy.get(b"/hello", b"[::1]:99999"))[0] == 400

    run(scenario)


# -- an instance that exits ------------------------------------------------------------------


async def read_request(reader: asyncio.StreamReader) -> None:
    await reader.readuntil(b"\r\n\r\n")


def test_a_request_held_by_an_instance_that_exits_says_so(run: Run) -> None:
    async def scenario() -> None:
        proxies: list[Proxy] = []  # the one in front of this instance, once made

        async def die_on_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            await read_request(reader)
            server.close()  # the instance exits with the request in hand
            writer.transport.abort()
            proxies[0].throttler.remove(proxies[0].endpoint)  # and the supervisor sees it

        server = await asyncio.start_server(die_on_second, sock=loopback_listener())
        address = ("127.0.0.1", int(server.sockets[0].getsockname()[1]))
        proxies.append(Proxy(address))
        async with proxies[0] as proxy:
            reader, writer = await proxy.connect()
            request = b"GET /hello HTTP/1.1\r\nHost: svc.test\r\n\r\n"
            writer.write(request)
            await reader.readuntil(b"ok")
            # The second goes out on the pooled connection: tried once more, refused.
            writer.write(request)
            response = await asyncio.wait_for(reader.readuntil(b"request\n"), 5)
            assert status_of(response) == 502
            assert b"the instance exited while handling the request" in response
            assert b"refused" not in response
            writer.close()
        await server.wait_closed()

    run(scenario)


def test_a_fresh_connection_lost_with_its_instance_says_it_exited(run: Run) -> None:
    async def scenario() -> None:
        proxies: list[Proxy] = []  # the one in front of the instance being tried

        async def die(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.transport.abort()
            exited = proxies[-1]  # the supervisor sees the exit a moment later
            asyncio.get_running_loop().call_later(0.05, exited.throttler.remove, exited.endpoint)

        async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.transport.abort()  # the instance lives on: only this connection closed

        for handler, message in (
            (die, b"the instance exited while handling the request"),
            (hang_up, b"the instance closed the connection before it answered"),
        ):
            server = await asyncio.start_server(handler, sock=loopback_listener())
            address = ("127.0.0.1", int(server.sockets[0].getsockname()[1]))
            proxies.append(Proxy(address))
            async with proxies[-1] as proxy:
                status, body = await proxy.get(b"/hello")
                assert status == 502 and message in body, body
                assert proxy.endpoint.in_flight == 0
            server.close()
            await server.wait_closed()

    run(scenario)
