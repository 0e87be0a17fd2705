"""The proxy between real clients and a real uvicorn instance, on both event loops.

A few failure modes (an instance that closes a pooled connection, answers garbage or dies
mid-body) need a peer that misbehaves on cue; those are small raw TCP servers in the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NamedTuple

import httpx
import pytest
import uvloop
from fakes import free_port, loopback_listener
from websockets.asyncio.client import connect as websocket_connect

from homerun.access.guard import AccessPolicy, guard_for
from homerun.access.tokens import TokenAuthority
from homerun.routing.proxy import Router
from homerun.routing.throttler import Endpoint, Throttler
from homerun.routing.types import Route, RouteError

TRACEPARENT = re.compile(r"^00-[0-9a-f]{32}-[0-9a-f]{16}-01$")
Address = tuple[str, int]


# -- fixtures ----------------------------------------------------------------------------


Run = Callable[[Callable[[], Awaitable[None]]], None]


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Run:
    """Runs a scenario on a fresh event loop of either kind, bounded in time."""
    loop_factory = uvloop.new_event_loop if request.param == "uvloop" else asyncio.new_event_loop

    def run(scenario: Callable[[], Awaitable[None]]) -> None:
        async def bounded() -> None:
            await asyncio.wait_for(scenario(), 20)

        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(bounded())

    return run


class Proxy:
    """A Router on a free port, in front of one endpoint of one revision.

    Hosts: svc.test (the route under test), patient.test (same revision, long timeout),
    down.test (a RouteError), anything else is unknown (404).
    """

    def __init__(
        self,
        upstream: Address,
        *,
        capacity: int = 10,
        timeout: float = 10.0,
        max_body_bytes: int = 32 * 1024 * 1024,
        http2: bool = False,
        **router_options: Any,
    ) -> None:
        self.throttler = Throttler("svc-00001-abc", lambda: None, time.monotonic, http2=http2)
        self.endpoint = Endpoint("svc-00001-abc-1", upstream[0], upstream[1], capacity)
        self.throttler.add(self.endpoint)
        self.routes = {
            "svc.test": Route("svc", "svc-00001-abc", self.throttler, timeout),
            "patient.test": Route("svc", "svc-00001-abc", self.throttler, 60.0),
        }
        self.router = Router(self.resolve, max_body_bytes=max_body_bytes, **router_options)

    def resolve(self, host: str) -> Route | RouteError:
        name = host.rsplit(":", 1)[0]
        if name == "down.test":
            return RouteError(503, "service down has no ready revision")
        return self.routes.get(name) or RouteError(404, f"no service answers at {host}")

    async def __aenter__(self) -> Proxy:
        await self.router.start("127.0.0.1", free_port())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.router.close()

    @property
    def port(self) -> int:
        return self.router.port

    def client(self, host: str = "svc.test", **options: Any) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{self.port}", headers={"host": host}, timeout=10, **options
        )

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)


class Response(NamedTuple):
    status: int
    headers: dict[str, str]  # lower-case names; a repeated header keeps its last value
    body: bytes


async def read_response(reader: asyncio.StreamReader, *, head: bool = False) -> Response:
    """Reads one response the way a strict client would, from a raw connection."""
    status_line = await reader.readuntil(b"\r\n")
    status = int(status_line.split()[1])
    headers = {}
    while (line := await reader.readuntil(b"\r\n")) != b"\r\n":
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    if head or status < 200 or status in (204, 304):
        return Response(status, headers, b"")
    if headers.get("transfer-encoding") == "chunked":
        pieces = []
        while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
            pieces.append(await reader.readexactly(size))
            assert await reader.readexactly(2) == b"\r\n"
        assert await reader.readexactly(2) == b"\r\n"
        return Response(status, headers, b"".join(pieces))
    if "content-length" in headers:
        return Response(status, headers, await reader.readexactly(int(headers["content-length"])))
    return Response(status, headers, await reader.read())


async def until(condition: Callable[[], bool], what: str, within: float = 5.0) -> None:
    """Waits (bounded) for state that the event loop reaches on its own."""
    deadline = asyncio.get_running_loop().time() + within
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def unique_tag() -> str:
    """The instance outlives each test: requests carry a tag so that their counts stay apart."""
    return uuid.uuid4().hex


async def stats(instance: Address, tag: str) -> dict[str, int]:
    """What the instance saw for requests tagged `tag`, asked directly (not through the router)."""
    async with httpx.AsyncClient() as direct:
        response = await direct.get(f"http://{instance[0]}:{instance[1]}/stats?tag={tag}")
        result: dict[str, int] = response.json()
        return result


@contextlib.asynccontextmanager
async def raw_instance(
    handle: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]],
) -> AsyncIterator[Address]:
    """A TCP server that speaks whatever `handle` writes: an instance that misbehaves on cue."""
    handlers: set[asyncio.Task[None]] = set()

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        handlers.add(handler)
        # Cancelled at the end of the test: return quietly (asyncio.streams logs a cancelled
        # handler task as an error on Python 3.11).
        with contextlib.suppress(
            ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError
        ):
            await handle(reader, writer)
        writer.close()

    server = await asyncio.start_server(tracked, sock=loopback_listener())
    try:
        yield ("127.0.0.1", int(server.sockets[0].getsockname()[1]))
    finally:
        server.close()
        for handler in handlers:
            handler.cancel()
        await asyncio.gather(*handlers)
        await server.wait_closed()


async def read_request(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    match = re.search(rb"(?i)\r\ncontent-length: *(\d+)", head)
    if match:
        await reader.readexactly(int(match[1]))
    return head


def closed_port() -> Address:
    return ("127.0.0.1", free_port())  # bound once, now closed: connections are refused


# -- routing and the router's own answers --------------------------------------------------


def test_routes_by_host_and_answers_errors_itself(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            async with proxy.client() as client:
                response = await client.get("/hello")
                assert response.status_code == 200 and response.text == "hello"
            async with proxy.client("nowhere.test") as client:
                response = await client.get("/hello")
                assert response.status_code == 404
                assert response.headers["content-type"].startswith("text/plain")
                assert response.text == "no service answers at nowhere.test\n"
                # The router's answer keeps the connection: the next request still works.
                assert (await client.get("/hello")).status_code == 404
            async with proxy.client("down.test") as client:
                response = await client.get("/hello")
                assert response.status_code == 503
                assert "no ready revision" in response.text

            reader, writer = await proxy.connect()
            writer.write(b"GET /hello HTTP/1.1\r\n\r\n")
            raw = await read_response(reader)
            assert raw.status == 400 and raw.headers["connection"] == "close"
            assert await reader.read() == b""
            writer.close()

    run(scenario)


def test_malformed_requests_get_400_and_a_close(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            reader, writer = await proxy.connect()
            writer.write(b"NOT HTTP AT ALL\r\n\r\n")
            assert (await read_response(reader)).status == 400
            assert await reader.read() == b""
            writer.close()

            # Headers without end, and a method a reverse proxy does not serve.
            for endless_head in (
                b"GET / HTTP/1.1\r\nHost: svc.test\r\n" + b"X-Many: headers\r\n" * 10_000,
                b"GET / HTTP/1.1\r\nHost: svc.test\r\nX-Big: " + b"a" * 2_000_000,
            ):
                reader, writer = await proxy.connect()
                writer.write(endless_head)
                assert (await read_response(reader)).status == 431
                assert await reader.read() == b""
                writer.close()
            reader, writer = await proxy.connect()
            writer.write(b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n")
            assert (await read_response(reader)).status == 405
            assert await reader.read() == b""
            writer.close()

            # A broken chunked body, after the request already went to the instance.
            reader, writer = await proxy.connect()
            writer.write(
                b"POST /upload HTTP/1.1\r\nHost: svc.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5\r\nhello\r\nZZ\r\n"
            )
            assert (await read_response(reader)).status == 400
            assert await reader.read() == b""
            writer.close()
            await until(lambda: proxy.endpoint.in_flight == 0, "the slot to come back")

    run(scenario)


def test_revision_that_cannot_start_answers_its_status(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            # A revision with no instance: asked for one, the supervisor fails to start it.
            loop = asyncio.get_running_loop()

            def start_fails() -> None:
                message = "revision broken-00001-xyz failed to start"
                loop.call_soon(throttler.fail_waiters, 503, message)

            throttler = Throttler("broken-00001-xyz", start_fails, time.monotonic)
            proxy.routes["broken.test"] = Route("broken", "broken-00001-xyz", throttler, 5.0)
            async with proxy.client("broken.test") as client:
                response = await client.get("/")
                assert response.status_code == 503
                assert response.text == "revision broken-00001-xyz failed to start\n"

    run(scenario)


# -- connections ---------------------------------------------------------------------------


def test_keep_alive_and_pipelined_requests_in_order(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            reader, writer = await proxy.connect()
            host = b"Host: svc.test\r\n"
            writer.write(
                b"GET /hello HTTP/1.1\r\n" + host + b"\r\n"
                b"POST /upload HTTP/1.1\r\n" + host + b"Content-Length: 3\r\n\r\nabc"
                b"GET /nothing-here HTTP/1.1\r\nHost: nowhere.test\r\n\r\n"
                b"GET /sse?events=2&interval=0 HTTP/1.1\r\n" + host + b"\r\n"
            )
            first = await read_response(reader)
            second = await read_response(reader)
            third = await read_response(reader)
            fourth = await read_response(reader)
            assert (first.status, first.body) == (200, b"hello")
            assert json.loads(second.body)["bytes"] == 3
            assert third.status == 404
            assert fourth.body == b"data: 0\n\ndata: 1\n\n"
            # Still open for more.
            writer.write(b"GET /hello HTTP/1.1\r\n" + host + b"\r\n")
            assert (await read_response(reader)).body == b"hello"
            writer.close()

    run(scenario)


def test_http_10_clients(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            # Without keep-alive: one response, then the close.
            reader, writer = await proxy.connect()
            writer.write(b"GET /hello HTTP/1.0\r\nHost: svc.test\r\n\r\n")
            assert (await read_response(reader)).body == b"hello"
            assert await reader.read() == b""
            writer.close()

            # With keep-alive: a sized response keeps the connection; a streamed one cannot be
            # chunked for HTTP/1.0, so its end is the close.
            reader, writer = await proxy.connect()
            writer.write(b"GET /hello HTTP/1.0\r\nHost: svc.test\r\nConnection: keep-alive\r\n\r\n")
            response = await read_response(reader)
            assert response.body == b"hello"
            assert response.headers["connection"] == "keep-alive"
            writer.write(
                b"GET /sse?events=3&interval=0 HTTP/1.0\r\nHost: svc.test\r\n"
                b"Connection: keep-alive\r\n\r\n"
            )
            response = await read_response(reader)
            assert "transfer-encoding" not in response.headers
            assert response.headers["connection"] == "close"
            assert response.body == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
            writer.close()

    run(scenario)


def test_instance_connections_are_pooled(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            async with proxy.client() as client:
                ports = {(await client.get("/peer")).text for _ in range(5)}
            assert len(ports) == 1, "each request should reuse the same instance connection"
            assert len(proxy.endpoint.idle_connections) == 1
            assert proxy.endpoint.in_flight == 0

    run(scenario)


def test_a_pooled_connection_the_instance_closed_is_retried_once(run: Run) -> None:
    connections = 0

    async def answer_once_per_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Keep-alive in words, but the second request on a connection finds it closed: the race
        # with an instance's keep-alive timeout.
        nonlocal connections
        connections += 1
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await read_request(reader)

    async def scenario() -> None:
        async with raw_instance(answer_once_per_connection) as address, Proxy(address) as proxy:
            async with proxy.client() as client:
                assert (await client.get("/")).text == "ok"
                assert (await client.get("/")).text == "ok"  # retried on a new connection
                assert connections == 2
                # A request with a body may have reached the app: it is not sent twice.
                response = await client.post("/", content=b"data")
                assert response.status_code == 502
                assert connections == 2
            await until(lambda: proxy.endpoint.in_flight == 0, "the slot to come back")

    run(scenario)


# -- bodies --------------------------------------------------------------------------------


def test_server_sent_events_arrive_one_by_one(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy, proxy.client() as client:
            arrivals = []
            params = {"events": 4, "interval": 0.25}
            async with client.stream("GET", "/sse", params=params) as response:
                assert response.headers["content-type"] == "text/event-stream"
                assert response.headers["transfer-encoding"] == "chunked"
                async for line in response.aiter_lines():
                    if line.startswith("data:"):
                        arrivals.append(time.monotonic())
            assert len(arrivals) == 4
            gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:], strict=False)]
            # Written 0.25 s apart; a buffering proxy would deliver them together at the end.
            assert min(gaps) > 0.1, gaps

    run(scenario)


def test_request_bodies_stream_with_either_framing(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        body = bytes(range(256)) * 12_000  # 3 MB
        digest = hashlib.sha256(body).hexdigest()
        async with Proxy(instance) as proxy, proxy.client() as client:
            sized = await client.post("/upload", content=body)
            assert sized.json() == {"bytes": len(body), "sha256": digest}

            async def pieces() -> AsyncIterator[bytes]:
                for start in range(0, len(body), 100_000):
                    yield body[start : start + 100_000]

            chunked = await client.post("/upload", content=pieces())
            assert chunked.json() == {"bytes": len(body), "sha256": digest}

    run(scenario)


def test_bodies_stream_both_ways_at_once(run: Run, instance: Address) -> None:
    """Each piece of the request comes back before the next is sent: nothing waits for the end."""

    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            reader, writer = await proxy.connect()
            writer.write(
                b"POST /echo HTTP/1.1\r\nHost: svc.test\r\nTransfer-Encoding: chunked\r\n\r\n"
            )
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and b"transfer-encoding: chunked" in head
            for number in range(3):
                piece = b"piece %d" % number
                writer.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                assert await reader.readuntil(b"\r\n") == b"%x\r\n" % len(piece)
                assert await reader.readexactly(len(piece) + 2) == piece + b"\r\n"
            writer.write(b"0\r\n\r\n")
            assert await reader.readexactly(5) == b"0\r\n\r\n"
            writer.close()

    run(scenario)


def test_a_slow_reader_pauses_the_instance_instead_of_filling_memory(
    run: Run, instance: Address
) -> None:
    async def scenario() -> None:
        size = 64 * 1024 * 1024
        async with Proxy(instance) as proxy:
            reader, writer = await proxy.connect()
            writer.write(b"GET /big?bytes=%d&sized=1 HTTP/1.1\r\nHost: svc.test\r\n\r\n" % size)
            await until(
                lambda: any(upstream.reading_paused for upstream in proxy.router.upstreams),
                "the router to stop reading the instance",
            )
            (client_connection,) = proxy.router.clients
            assert client_connection.transport.get_write_buffer_size() < 4 * 1024 * 1024
            response = await read_response(reader)
            assert len(response.body) == size
            writer.close()

    run(scenario)


def test_an_instance_not_reading_pauses_the_client(run: Run) -> None:
    async def never_read(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(30)

    async def scenario() -> None:
        size = 64 * 1024 * 1024
        async with (
            raw_instance(never_read) as address,
            Proxy(address, max_body_bytes=size) as proxy,
        ):
            reader, writer = await proxy.connect()
            writer.write(b"POST / HTTP/1.1\r\nHost: svc.test\r\nContent-Length: %d\r\n\r\n" % size)
            piece = b"x" * 1024 * 1024
            for _ in range(size // len(piece)):
                writer.write(piece)
                if writer.transport.get_write_buffer_size() > 8 * len(piece):
                    break  # the router stopped reading us
                await asyncio.sleep(0)
            (client_connection,) = proxy.router.clients
            await until(
                lambda: client_connection.read_pauses != 0, "the router to pause the client"
            )
            (upstream,) = proxy.router.upstreams
            assert upstream.transport.get_write_buffer_size() < 4 * 1024 * 1024
            writer.transport.abort()

    run(scenario)


def test_body_limit(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        limit = 1024 * 1024
        # A declared size over the limit is refused without contacting the instance (here: a
        # port nobody listens on, which would give 502).
        async with Proxy(closed_port(), max_body_bytes=limit) as proxy:
            reader, writer = await proxy.connect()
            writer.write(
                b"POST /upload HTTP/1.1\r\nHost: svc.test\r\nContent-Length: %d\r\n\r\n"
                % (limit + 1)
            )
            raw = await read_response(reader)
            assert raw.status == 413 and raw.headers["connection"] == "close"
            assert await reader.read() == b""
            writer.close()

        # A chunked body that grows past it, already on its way to the instance.
        async with Proxy(instance, max_body_bytes=limit) as proxy, proxy.client() as client:

            async def pieces() -> AsyncIterator[bytes]:
                for _ in range(4):
                    yield b"y" * (limit // 2)

            response = await client.post("/upload", content=pieces())
            assert response.status_code == 413
            under = await client.post("/upload", content=b"z" * limit)
            assert under.json()["bytes"] == limit
            await until(lambda: proxy.endpoint.in_flight == 0, "the slot to come back")

    run(scenario)


# -- special responses ---------------------------------------------------------------------


def test_head_204_304_have_no_body_and_keep_the_connection(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            reader, writer = await proxy.connect()
            writer.write(b"HEAD /hello HTTP/1.1\r\nHost: svc.test\r\n\r\n")
            response = await read_response(reader, head=True)
            assert response.status == 200 and response.headers["content-length"] == "5"
            for status in (204, 304):
                writer.write(b"GET /status/%d HTTP/1.1\r\nHost: svc.test\r\n\r\n" % status)
                assert (await read_response(reader)).status == status
            # Had a body byte slipped through, this response would not parse.
            writer.write(b"GET /hello HTTP/1.1\r\nHost: svc.test\r\n\r\n")
            assert (await read_response(reader)).body == b"hello"
            # HEAD again, on the pooled connection that answered the first one.
            writer.write(b"HEAD /hello HTTP/1.1\r\nHost: svc.test\r\n\r\n")
            assert (await read_response(reader, head=True)).status == 200
            writer.write(b"GET /hello HTTP/1.1\r\nHost: svc.test\r\n\r\n")
            assert (await read_response(reader)).body == b"hello"
            writer.close()

    run(scenario)


def test_100_continue_comes_from_the_instance(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            reader, writer = await proxy.connect()
            writer.write(
                b"POST /upload HTTP/1.1\r\nHost: svc.test\r\nContent-Length: 10\r\n"
                b"Expect: 100-continue\r\n\r\n"
            )
            interim = await read_response(reader)
            assert interim.status == 100
            writer.write(b"0123456789")
            final = await read_response(reader)
            assert final.status == 200 and json.loads(final.body)["bytes"] == 10
            writer.close()

    run(scenario)


def test_websocket_is_tunnelled(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            async with websocket_connect(
                "ws://svc.test/ws", host="127.0.0.1", port=proxy.port, proxy=None
            ) as websocket:
                assert proxy.endpoint.in_flight == 1
                for message in ("hello", "olá", "x" * 70_000):
                    await websocket.send(message)
                    assert await websocket.recv() == f"echo: {message}"
                await websocket.send(b"\x00\x01binary")
                assert await websocket.recv() == b"\x00\x01binary"
            await until(lambda: proxy.endpoint.in_flight == 0, "the tunnel's slot to come back")
            # The tunnel's connection is never pooled.
            assert proxy.endpoint.idle_connections == []

    run(scenario)


# -- headers -------------------------------------------------------------------------------


def test_forwarding_headers_and_hop_by_hop_ones(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy, proxy.client() as client:
            sent = {
                "X-Forwarded-For": "203.0.113.7",
                "X-Forwarded-Proto": "https",
                "Forwarded": "for=203.0.113.7",
                "Connection": "keep-alive, X-Hop-Only",
                "X-Hop-Only": "1",
                "Keep-Alive": "timeout=5",
                "TE": "trailers",
                "Proxy-Connection": "keep-alive",
                "X-Custom": "kept  as is",
            }
            response = await client.get("/headers?a=1&b=%20", headers=sent)
            seen = response.json()
            assert seen["path"] == "/headers"
            headers = dict(seen["headers"])
            names = [name for name, _ in seen["headers"]]
            assert headers["host"] == "svc.test"
            assert headers["x-forwarded-for"] == "203.0.113.7, 127.0.0.1"
            assert names.count("x-forwarded-proto") == 1 and headers["x-forwarded-proto"] == "http"
            assert (
                headers["forwarded"] == 'for=203.0.113.7, for=127.0.0.1;proto=http;host="svc.test"'
            )
            assert TRACEPARENT.match(headers["traceparent"])
            assert headers["x-custom"] == "kept  as is"
            for hop_by_hop in ("x-hop-only", "keep-alive", "te", "proxy-connection", "connection"):
                assert hop_by_hop not in headers

            traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            kept = dict(
                (await client.get("/headers", headers={"traceparent": traceparent})).json()[
                    "headers"
                ]
            )
            assert kept["traceparent"] == traceparent
            # Cloud Run's own header names the same trace and span (the span in decimal).
            span = int("00f067aa0ba902b7", 16)
            assert kept["x-cloud-trace-context"] == f"4bf92f3577b34da6a3ce929d0e0e4736/{span};o=1"
            other = dict((await client.get("/headers")).json()["headers"])
            assert other["traceparent"].split("-")[1] != headers["traceparent"].split("-")[1]
            trace_id, parent_id = other["traceparent"].split("-")[1:3]
            assert other["x-cloud-trace-context"] == f"{trace_id}/{int(parent_id, 16)};o=1"
            cloud = "105445aa7843bc8bf206b12000100000/1;o=1"
            from_cloud = dict(
                (await client.get("/headers", headers={"x-cloud-trace-context": cloud})).json()[
                    "headers"
                ]
            )
            assert from_cloud["x-cloud-trace-context"] == cloud
            assert from_cloud["traceparent"] == (
                "00-105445aa7843bc8bf206b12000100000-0000000000000001-01"
            )

    run(scenario)


# -- access --------------------------------------------------------------------------------


def test_a_guarded_route_answers_401_and_403_itself(run: Run, instance: Address) -> None:
    """The guard decides before any instance is involved; a 401 asks for a Bearer token."""
    authority = TokenAuthority(b"k" * 32, "http://test")
    policy = AccessPolicy(
        "svc", False, False, frozenset({"user:alice"}), frozenset({"http://private.test"})
    )

    async def scenario() -> None:
        proxy = Proxy(instance)
        proxy.router = Router(
            proxy.resolve, forwarded_authorization=authority.forwarded_authorization
        )
        route = proxy.routes["svc.test"]
        proxy.routes["private.test"] = route._replace(guard=guard_for(policy, authority))
        tag = unique_tag()
        async with proxy, proxy.client("private.test") as client:
            refused = await client.get(f"/hello?tag={tag}")
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "private" in refused.text
            bob = authority.mint("user:bob", "http://private.test")
            denied = await client.get(
                f"/hello?tag={tag}", headers={"Authorization": f"Bearer {bob}"}
            )
            assert denied.status_code == 403 and "user:bob" in denied.text
            assert "/hello" not in await stats(instance, tag)  # nothing reached the app

            alice = authority.mint("user:alice", "http://private.test")
            seen = await client.get("/headers", headers={"Authorization": f"Bearer {alice}"})
            assert seen.status_code == 200
            headers = dict(seen.json()["headers"])
            head, claims, _ = alice.split(".")
            unsigned = f"Bearer {head}.{claims}.SIGNATURE_REMOVED_BY_HOMERUN"
            assert headers["authorization"] == unsigned

            # Cloud Run's X-Serverless-Authorization carries the token when Authorization is
            # the app's own; the app's header passes as it is.
            both = await client.get(
                "/headers",
                headers={
                    "X-Serverless-Authorization": f"Bearer {alice}",
                    "Authorization": "Basic x",
                },
            )
            assert both.status_code == 200
            headers = dict(both.json()["headers"])
            assert headers["authorization"] == "Basic x"
            assert headers["x-serverless-authorization"].endswith(".SIGNATURE_REMOVED_BY_HOMERUN")

        # Two Authorization headers are one too many, public route or not.
        async with proxy:
            reader, writer = await proxy.connect()
            writer.write(
                b"GET /hello HTTP/1.1\r\nHost: svc.test\r\nAuthorization: Bearer a\r\n"
                b"Authorization: Bearer b\r\n\r\n"
            )
            assert (await read_response(reader)).status == 400
            writer.close()

    run(scenario)


def test_internal_routes_look_up_the_caller_once_per_connection(
    run: Run, instance: Address
) -> None:
    authority = TokenAuthority(b"k" * 32, "http://test")
    policy = AccessPolicy("svc", True, True, frozenset({"allUsers"}), frozenset())
    looked_up: list[tuple[Address, Address]] = []

    def identify(peer: Address, server: Address) -> str | None:
        looked_up.append((peer, server))
        return "serviceAccount:caller" if len(looked_up) == 1 else None

    async def scenario() -> None:
        proxy = Proxy(instance)
        proxy.router = Router(proxy.resolve, identify_caller=identify)
        proxy.routes["internal.test"] = proxy.routes["svc.test"]._replace(
            guard=guard_for(policy, authority)
        )
        async with proxy:
            async with proxy.client("internal.test") as first:  # an instance's connection
                for _ in range(3):
                    assert (await first.get("/hello")).status_code == 200
                # Public routes never ask.
                assert (await first.get("/hello", headers={"host": "svc.test"})).status_code == 200
            async with proxy.client("internal.test") as second:  # anyone else's
                refused = await second.get("/hello")
                assert refused.status_code == 403 and "internal" in refused.text
            port = proxy.port
        assert len(looked_up) == 2
        peer, server = looked_up[0]
        assert peer[0] == "127.0.0.1" and server == ("127.0.0.1", port)

    run(scenario)


# -- timeouts and failures -----------------------------------------------------------------


def test_request_timeout(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        tag = unique_tag()
        async with Proxy(instance, capacity=1, timeout=0.5) as proxy:
            async with proxy.client() as client:
                started = time.monotonic()
                response = await client.get("/slow", params={"seconds": 5, "tag": tag})
                assert response.status_code == 504
                assert time.monotonic() - started < 2
                # The instance saw the request go away, and the connection stays usable.
                await until(lambda: proxy.endpoint.in_flight == 0, "the slot to come back")
                assert (await client.get("/hello")).status_code == 200

                # Once the response started, a timeout can only cut the connection.
                with pytest.raises(httpx.RemoteProtocolError):
                    async with client.stream("GET", "/sse?events=20&interval=0.1") as stream:
                        async for _ in stream.aiter_bytes():
                            pass

            # Waiting for a slot counts: a patient request holds the only one.
            async with proxy.client("patient.test") as patient, proxy.client() as impatient:
                holder = asyncio.ensure_future(patient.get("/slow", params={"seconds": 1.5}))
                await until(lambda: proxy.endpoint.in_flight == 1, "the holder to take the slot")
                started = time.monotonic()
                assert (await impatient.get("/hello")).status_code == 504
                assert time.monotonic() - started < 1.2
                assert (await holder).status_code == 200
            assert (await stats(instance, tag)).get("disconnected") == 1

    run(scenario)


def test_instance_failures_give_502_or_a_cut_connection(run: Run) -> None:
    async def close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)

    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"SMTP READY\r\n\r\n")
        await writer.drain()

    async def die_mid_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b")
        await writer.drain()

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        # An old-style response with no length: its end is the close.
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of ")
        await writer.drain()
        writer.write(b"it")

    async def scenario() -> None:
        async with Proxy(closed_port()) as proxy, proxy.client() as client:
            response = await client.get("/")
            assert response.status_code == 502
            assert "cannot connect to the instance" in response.text
        for handler in (close_at_once, garbage):
            async with raw_instance(handler) as address, Proxy(address) as proxy:
                async with proxy.client() as client:
                    assert (await client.get("/")).status_code == 502
                assert proxy.endpoint.in_flight == 0
        async with raw_instance(die_mid_body) as address, Proxy(address) as proxy:
            async with proxy.client() as client:
                with pytest.raises(httpx.RemoteProtocolError):
                    await client.get("/")
            await until(lambda: proxy.endpoint.in_flight == 0, "the slot to come back")
        async with raw_instance(until_close) as address, Proxy(address) as proxy:
            async with proxy.client() as client:
                response = await client.get("/")
                assert response.text == "all of it"
                assert response.headers["transfer-encoding"] == "chunked"
            assert proxy.endpoint.in_flight == 0

    run(scenario)


def test_a_refused_connection_goes_back_to_the_throttler(run: Run, instance: Address) -> None:
    # An instance that exited still in the routing (the supervisor has not seen its exit yet):
    # the request waits a moment and is picked again instead of failing with 502.
    async def scenario() -> None:
        # First available (concurrency 1): the dead instance is picked first until it leaves.
        async with Proxy(closed_port(), capacity=1) as proxy, proxy.client() as client:
            alive = Endpoint("svc-00001-abc-2", instance[0], instance[1], 1)
            proxy.throttler.add(alive)
            loop = asyncio.get_running_loop()
            loop.call_later(0.03, proxy.throttler.remove, proxy.endpoint)  # what exit does
            response = await client.get("/hello")
            assert response.status_code == 200, response.text
            assert (proxy.endpoint.in_flight, alive.in_flight) == (0, 0)
        # Round robin (concurrency 10): the next pick is the other instance.
        async with Proxy(closed_port(), capacity=10) as proxy, proxy.client() as client:
            alive = Endpoint("svc-00001-abc-2", instance[0], instance[1], 10)
            proxy.throttler.add(alive)
            responses = await asyncio.gather(*(client.get("/hello") for _ in range(6)))
            assert [response.status_code for response in responses] == [200] * 6
            assert (proxy.endpoint.in_flight, alive.in_flight) == (0, 0)

    run(scenario)


def test_a_request_an_instance_died_holding_is_not_run_again_elsewhere(
    run: Run, instance: Address
) -> None:
    # The second request goes out on the pooled connection and the instance dies with it. The
    # router tries that instance once more (it may only have closed an idle connection), but
    # does not send the request to another instance: the app may have acted on it.
    async def scenario() -> None:
        requests = 0
        server: asyncio.Server | None = None

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal requests
            await read_request(reader)
            requests += 1
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            await writer.drain()
            await read_request(reader)
            requests += 1
            assert server is not None
            server.close()  # the instance dies with the request in hand...
            proxy.throttler.remove(proxy.endpoint)  # ...and the supervisor sees it at once
            writer.transport.abort()

        server = await asyncio.start_server(handle, sock=loopback_listener())
        address = ("127.0.0.1", int(server.sockets[0].getsockname()[1]))
        proxy = Proxy(address, capacity=1)
        async with proxy, proxy.client() as client:
            alive = Endpoint("svc-00001-abc-2", instance[0], instance[1], 1)
            proxy.throttler.add(alive)
            tag = unique_tag()
            assert (await client.get("/hello", params={"tag": tag})).status_code == 200
            response = await client.get("/hello", params={"tag": tag})
            assert response.status_code == 502, response.text
            assert requests == 2
            assert "/hello" not in await stats(instance, tag)  # none went to the other instance
        await server.wait_closed()

    run(scenario)


# -- clients that leave ---------------------------------------------------------------------


def test_client_leaving_while_the_instance_works_frees_the_slot(
    run: Run, instance: Address
) -> None:
    async def scenario() -> None:
        tag = unique_tag()
        async with Proxy(instance, capacity=1) as proxy:
            reader, writer = await proxy.connect()
            writer.write(
                b"GET /slow?seconds=30&tag=%s HTTP/1.1\r\nHost: svc.test\r\n\r\n" % tag.encode()
            )
            await until(
                lambda: proxy.endpoint.in_flight == 1 and proxy.endpoint.idle_connections == [],
                "the request to take the slot",
            )
            for _ in range(500):  # the app, not the router, says when it has the request
                if (await stats(instance, tag)).get("started") == 1:
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the request never reached the app")
            writer.close()
            started = time.monotonic()
            async with proxy.client() as client:
                assert (await client.get("/hello")).status_code == 200
            assert time.monotonic() - started < 2
            assert proxy.endpoint.in_flight == 0
            # The half-used connection was closed, not pooled: the app saw the disconnect.
            await until(
                lambda: len(proxy.router.upstreams) == 1, "the abandoned connection to close"
            )
            counts = await stats(instance, tag)
            assert counts.get("disconnected") == 1

    run(scenario)


def test_a_request_that_waited_reports_its_wait_at_the_first_byte(
    run: Run, instance: Address
) -> None:
    async def scenario() -> None:
        async with Proxy(instance, capacity=1) as proxy, proxy.client() as client:
            holder = asyncio.ensure_future(client.get("/slow", params={"seconds": 0.3}))
            await until(lambda: proxy.endpoint.in_flight == 1, "the holder to take the slot")
            assert (await client.get("/hello")).status_code == 200
            assert (await holder).status_code == 200
            # Only the request that found no free slot waited; it waited for the holder.
            (wait,) = proxy.throttler.waits
            assert 0.1 < wait < 5

    run(scenario)


def test_client_leaving_while_queued_frees_its_place(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance, capacity=1) as proxy:
            holder_reader, holder = await proxy.connect()
            holder.write(b"GET /slow?seconds=30 HTTP/1.1\r\nHost: svc.test\r\n\r\n")
            await until(lambda: proxy.endpoint.in_flight == 1, "the holder to take the slot")
            _, queued = await proxy.connect()
            queued.write(b"GET /hello HTTP/1.1\r\nHost: svc.test\r\n\r\n")
            await until(lambda: proxy.throttler.queue_length == 1, "the second request to queue")
            queued.close()
            await until(lambda: proxy.throttler.queue_length == 0, "the queue to forget it")
            holder.close()
            started = time.monotonic()
            async with proxy.client() as client:
                assert (await client.get("/hello")).status_code == 200
            assert time.monotonic() - started < 2
            assert proxy.endpoint.in_flight == 0

    run(scenario)


def test_client_leaving_mid_response_frees_the_slot(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance, capacity=1) as proxy:
            reader, writer = await proxy.connect()
            writer.write(b"GET /sse?events=100&interval=0.1 HTTP/1.1\r\nHost: svc.test\r\n\r\n")
            received = b""
            while b"data:" not in received:
                received += await reader.read(4096)
            writer.close()
            started = time.monotonic()
            async with proxy.client() as client:
                assert (await client.get("/hello")).status_code == 200
            assert time.monotonic() - started < 2
            assert proxy.endpoint.in_flight == 0
            assert len(proxy.endpoint.idle_connections) == 1

    run(scenario)


def test_close_ends_client_and_instance_connections(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        proxy = Proxy(instance)
        async with proxy:
            port = proxy.port
            reader, writer = await proxy.connect()
            writer.write(b"GET /slow?seconds=30 HTTP/1.1\r\nHost: svc.test\r\n\r\n")
            await until(
                lambda: len(proxy.router.upstreams) == 1, "the request to reach the instance"
            )
        assert await reader.read() == b""
        writer.close()
        assert proxy.endpoint.in_flight == 0
        assert not proxy.router.clients and not proxy.router.upstreams
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)

    run(scenario)
