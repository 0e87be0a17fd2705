"""HTTP/2 from clients (h2c with prior knowledge and by `Upgrade: h2c`) through the router to
a real HTTP/1.1 instance (uvicorn), with httpx's HTTP/2 client and with the h2 library over a
raw socket for what a well-behaved client never sends."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import socket
from collections.abc import AsyncIterator, Callable

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.settings
import httpx
import pytest
from hpack import Encoder
from hyperframe.frame import Frame, GoAwayFrame, HeadersFrame, RstStreamFrame

from homerun.routing.http2 import RESET_BUDGET, too_many_resets
from homerun.routing.types import RequestRecord

from .test_proxy import Address, Proxy, Run, run, stats, unique_tag, until

__all__ = ["run"]  # a fixture, used by name

Headers = list[tuple[bytes, bytes]]


def h2_client(proxy: Proxy, host: str = "svc.test") -> httpx.AsyncClient:
    """httpx speaking HTTP/2 with prior knowledge (h2c) to the router."""
    return httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{proxy.port}",
        headers={"host": host},
        http1=False,
        http2=True,
        timeout=10,
    )


class RawH2:
    """An HTTP/2 client on the h2 library over a plain socket: it sends what it is told."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        config = h2.config.H2Configuration(client_side=True, header_encoding=None)
        self.h2 = h2.connection.H2Connection(config=config)
        self.events: list[h2.events.Event] = []
        self.closed = False

    @classmethod
    async def open(cls, proxy: Proxy, *, preface: bool = True) -> RawH2:
        reader, writer = await proxy.connect()
        client = cls(reader, writer)
        if preface:
            client.h2.initiate_connection()
            client.flush()
        return client

    def flush(self) -> None:
        self.writer.write(self.h2.data_to_send())

    def request(
        self, path: str = "/hello", *, host: bytes = b"svc.test", method: bytes = b"GET",
        extra: Headers | None = None, end: bool = True,
    ) -> int:  # fmt: skip
        stream_id = self.h2.get_next_available_stream_id()
        headers = [
            (b":method", method), (b":scheme", b"http"), (b":authority", host),
            (b":path", path.encode()), *(extra or []),
        ]  # fmt: skip
        self.h2.send_headers(stream_id, headers, end_stream=end)
        self.flush()
        return stream_id

    async def read_until(self, done: Callable[[], bool], within: float = 10.0) -> None:
        async def loop() -> None:
            while not done():
                data = await self.reader.read(65536)
                if not data:
                    self.closed = True
                    return
                self.events += self.h2.receive_data(data)
                self.flush()

        await asyncio.wait_for(loop(), within)

    def settled(self) -> bool:
        """The router's SETTINGS came (they are in force from here)."""
        return bool(self.of(h2.events.RemoteSettingsChanged))

    def of(self, kind: type, stream_id: int | None = None) -> list[h2.events.Event]:
        return [
            event
            for event in self.events
            if isinstance(event, kind)
            and (stream_id is None or getattr(event, "stream_id", None) == stream_id)
        ]

    async def response(self, stream_id: int) -> tuple[dict[bytes, bytes], bytes]:
        await self.read_until(
            lambda: (
                bool(self.of(h2.events.StreamEnded, stream_id))
                or bool(self.of(h2.events.StreamReset, stream_id))
                or self.closed
            )
        )
        received = self.of(h2.events.ResponseReceived, stream_id)
        assert received, f"no response on stream {stream_id}: {self.events}"
        headers = dict(received[-1].headers)  # type: ignore[attr-defined]
        body = b"".join(event.data for event in self.of(h2.events.DataReceived, stream_id))  # type: ignore[attr-defined]
        for event in self.of(h2.events.DataReceived, stream_id):
            self.h2.acknowledge_received_data(event.flow_controlled_length, stream_id)  # type: ignore[attr-defined]
        return headers, body

    async def goaway(self) -> h2.events.ConnectionTerminated:
        await self.read_until(lambda: bool(self.of(h2.events.ConnectionTerminated)) or self.closed)
        terminated = self.of(h2.events.ConnectionTerminated)
        assert terminated, f"no GOAWAY: {self.events}"
        event = terminated[0]
        assert isinstance(event, h2.events.ConnectionTerminated)
        return event

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()


# -- translation ---------------------------------------------------------------------------


def test_prior_knowledge_h2c_to_an_http11_instance(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        records: list[RequestRecord] = []
        async with (
            Proxy(instance, on_request=records.append) as proxy,
            h2_client(proxy) as client,
        ):
            response = await client.get("/hello")
            assert response.http_version == "HTTP/2"
            assert response.status_code == 200 and response.text == "hello"
            # The request log says which protocol the client spoke.
            assert records[-1][10] == b"HTTP/2" and records[-1][5] == 200
            # Many streams at once on one connection, each its own request to the instance.
            responses = await asyncio.gather(*(client.get("/hello") for _ in range(30)))
            assert [each.text for each in responses] == ["hello"] * 30
            assert len(proxy.router.http2_connections) == 1

            seen = (await client.get("/headers", headers={"cookie": "a=1"})).json()
            headers = dict((name, value) for name, value in seen["headers"])
            assert headers["host"] == "svc.test"
            assert headers["x-forwarded-for"] == "127.0.0.1"
            assert headers["x-forwarded-proto"] == "http"
            assert headers["forwarded"] == 'for=127.0.0.1;proto=http;host="svc.test"'
            assert "traceparent" in headers and headers["cookie"] == "a=1"
            assert "connection" not in headers  # no HTTP/2 header leaks as HTTP/1.1's

            # HEAD, 204 and 304: headers alone, the stream ended at once.
            head = await client.head("/hello")
            assert head.status_code == 200 and head.content == b""
            assert head.headers["content-length"] == "5"
            assert (await client.get("/status/204")).status_code == 204
            assert (await client.get("/status/304")).status_code == 304

        async with Proxy(instance) as proxy, h2_client(proxy, "nowhere.test") as client:
            response = await client.get("/hello")
            assert response.status_code == 404
            assert response.text == "no service answers at nowhere.test\n"
            assert "connection" not in response.headers
            assert (await client.get("/hello")).status_code == 404  # the connection stays

    run(scenario)


def test_bodies_both_ways_with_flow_control(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy, h2_client(proxy) as client:
            body = bytes(range(256)) * 12_000  # 3 MiB: past every window and the body buffer
            response = await client.post("/upload", content=body)
            assert response.json() == {
                "bytes": len(body),
                "sha256": hashlib.sha256(body).hexdigest(),
            }

            async def pieces() -> AsyncIterator[bytes]:
                for _ in range(20):
                    yield b"z" * 10_000

            # No Content-Length: the instance gets it chunked.
            response = await client.post("/upload", content=pieces())
            assert response.json()["bytes"] == 200_000

            big = await client.get("/big?bytes=5000000")
            assert len(big.content) == 5_000_000
            sized = await client.get("/big?bytes=300000&sized=1")
            assert sized.headers["content-length"] == "300000" and len(sized.content) == 300_000

            # Server-sent events arrive as written, not at the end.
            async with client.stream("GET", "/sse?events=3&interval=0.3") as stream:
                started = asyncio.get_running_loop().time()
                first = await anext(stream.aiter_bytes())
                assert first == b"data: 0\n\n"
                assert asyncio.get_running_loop().time() - started < 0.25

    run(scenario)


def test_a_client_that_does_not_read_pauses_the_instance(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            client = await RawH2.open(proxy)
            stream_id = client.request("/big?bytes=50000000")
            # The client never acknowledges: its windows (64 KiB) close, the router holds at
            # most its limit for it and stops reading the instance.
            await client.read_until(lambda: len(client.of(h2.events.DataReceived)) > 0)
            await asyncio.sleep(0.5)
            (connection,) = proxy.router.http2_connections
            (stream,) = connection.streams.values()
            assert stream.writing_paused and stream.pending_bytes < 2 * 1024 * 1024
            assert stream_id == 1
            await client.close()

    run(scenario)


def test_upgrade_h2c_from_http11(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            reader, writer = await proxy.connect()
            client = RawH2(reader, writer)
            settings = client.h2.initiate_upgrade_connection()
            writer.write(
                b"GET /headers HTTP/1.1\r\nHost: svc.test\r\n"
                b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                b"HTTP2-Settings: %s\r\nX-Mine: yes\r\n\r\n" % settings
            )
            switching = await reader.readuntil(b"\r\n\r\n")
            assert switching.startswith(b"HTTP/1.1 101 ")
            assert b"upgrade: h2c" in switching.lower()
            client.flush()  # the client's preface and settings
            headers, body = await client.response(1)
            assert headers[b":status"] == b"200"
            seen = json.loads(body)
            names = [name for name, _ in seen["headers"]]
            assert ["x-mine", "yes"] in seen["headers"]
            assert "http2-settings" not in names and "upgrade" not in names
            # Then more streams on the same connection.
            stream_id = client.request("/hello")
            assert (await client.response(stream_id))[1] == b"hello"
            await client.close()

            # An upgrade request with a body stays HTTP/1.1 (the instance answers it).
            reader, writer = await proxy.connect()
            writer.write(
                b"POST /upload HTTP/1.1\r\nHost: svc.test\r\n"
                b"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n"
                b"HTTP2-Settings: %s\r\nContent-Length: 2\r\n\r\nhi" % settings
            )
            answer = await reader.readuntil(b"\r\n\r\n")
            assert answer.startswith(b"HTTP/1.1 200 ")
            writer.close()

    run(scenario)


# -- the same limits as HTTP/1.1, and HTTP/2's own attacks ----------------------------------


def test_header_rules_and_limits_as_over_http11(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance, max_body_bytes=1000) as proxy:
            client = await RawH2.open(proxy)
            many = [(b"x-h%d" % number, b"v") for number in range(101)]
            headers, _ = await client.response(client.request(extra=many))
            assert headers[b":status"] == b"431"
            headers, _ = await client.response(client.request("/" + "a" * 9000))
            assert headers[b":status"] == b"414"
            headers, _ = await client.response(client.request(host=b"svc.test:1"))
            assert headers[b":status"] == b"404"  # another port, as over HTTP/1.1
            headers, _ = await client.response(client.request(host=b"bad host!"))
            assert headers[b":status"] == b"400"
            stream_id = client.h2.get_next_available_stream_id()
            connect = [(b":method", b"CONNECT"), (b":authority", b"example.com:443")]
            client.h2.send_headers(stream_id, connect)
            client.flush()
            headers, _ = await client.response(stream_id)
            assert headers[b":status"] == b"405"
            stream_id = client.request(
                "/upload", method=b"POST", extra=[(b"content-length", b"5000")], end=False
            )
            headers, _ = await client.response(stream_id)
            assert headers[b":status"] == b"413"
            # The connection has lived through all of it.
            assert (await client.response(client.request()))[1] == b"hello"
            await client.close()

    run(scenario)


def test_smuggling_by_content_length_or_transfer_encoding_is_refused(
    run: Run, instance: Address
) -> None:
    async def scenario() -> None:
        tag = unique_tag()
        async with Proxy(instance) as proxy:
            # Content-Length 5 with 30 bytes of DATA: the rest would be a second request over
            # HTTP/1.1. The stream is refused and nothing past the 5 bytes reaches the app.
            client = await RawH2.open(proxy)
            stream_id = client.request(
                f"/upload?tag={tag}", method=b"POST", extra=[(b"content-length", b"5")], end=False
            )
            smuggled = b"helloGET /hello?tag=%s HTTP/1.1\r\n\r\n" % tag.encode()
            client.h2.send_data(stream_id, smuggled, end_stream=True)
            client.flush()
            await client.read_until(
                lambda: (
                    bool(
                        client.of(h2.events.StreamReset)
                        or client.of(h2.events.ConnectionTerminated)
                    )
                    or client.closed
                )
            )
            await client.close()

            # Transfer-Encoding is connection-specific: not allowed in HTTP/2 at all. Nor are
            # a Host that names another host than :authority (which would route?), a header
            # value with CR LF in it, or two :path.
            for hostile in (
                [(b"transfer-encoding", b"chunked")],
                [(b"host", b"other.test")],
                [(b"x-split", b"a\r\nGET /hello HTTP/1.1")],
                [(b":path", b"/hello")],
            ):
                client = await RawH2.open(proxy)
                await client.read_until(client.settled)
                block = Encoder().encode(
                    [(b":method", b"POST"), (b":scheme", b"http"), (b":authority", b"svc.test"),
                     (b":path", f"/upload?tag={tag}".encode()), *hostile]
                )  # fmt: skip
                client.writer.write(_frame(1, 0x4 | 0x1, 1, block))  # END_HEADERS, END_STREAM
                terminated = await client.goaway()
                assert terminated.error_code == h2.errors.ErrorCodes.PROTOCOL_ERROR
                await client.close()
            await asyncio.sleep(0.2)
            assert set(await stats(instance, tag)) == {"/stats"}  # none reached the app

    run(scenario)


def _frame(kind: int, flags: int, stream_id: int, payload: bytes) -> bytes:
    return (
        len(payload).to_bytes(3, "big")
        + bytes((kind, flags))
        + stream_id.to_bytes(4, "big")
        + payload
    )


def test_hpack_bomb_is_refused_before_it_expands(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            client = await RawH2.open(proxy)
            # One 4 KiB entry in the dynamic table, then 10,000 one-byte references to it:
            # 10 KiB on the wire, 40 MB decoded.
            encoder = Encoder()
            first = encoder.encode(
                [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"svc.test"),
                 (b":path", b"/hello"), (b"x-bomb", b"b" * 4000)]
            )  # fmt: skip
            reference = encoder.encode([(b"x-bomb", b"b" * 4000)])
            assert len(reference) == 1
            block = first + reference * 10_000
            pieces = [block[at : at + 16384] for at in range(0, len(block), 16384)]
            frames = _frame(1, 0x1, 1, pieces[0])  # HEADERS with END_STREAM, more to come
            for number, piece in enumerate(pieces[1:], 1):
                frames += _frame(9, 0x4 if number == len(pieces) - 1 else 0, 1, piece)
            client.writer.write(frames)
            terminated = await client.goaway()
            assert terminated.error_code in (
                h2.errors.ErrorCodes.ENHANCE_YOUR_CALM,
                h2.errors.ErrorCodes.PROTOCOL_ERROR,
            )
            await client.read_until(lambda: client.closed, within=5)  # and the router hangs up
            await client.close()

    run(scenario)


def test_too_many_concurrent_streams_are_refused(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        tag = unique_tag()
        async with Proxy(instance, capacity=200) as proxy:
            client = await RawH2.open(proxy)
            await client.read_until(client.settled)
            settings = client.of(h2.events.RemoteSettingsChanged)[0]
            announced = settings.changed_settings[h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS]  # type: ignore[attr-defined]
            assert announced.new_value == 100
            # A client that ignores the limit: 150 slow requests at once, written raw.
            encoder = Encoder()
            frames = b""
            for number in range(150):
                block = encoder.encode(
                    [(b":method", b"GET"), (b":scheme", b"http"), (b":authority", b"svc.test"),
                     (b":path", b"/slow?seconds=20&tag=%s" % tag.encode())]
                )  # fmt: skip
                frames += _frame(1, 0x4 | 0x1, 1 + 2 * number, block)
            client.writer.write(frames)
            await client.read_until(
                lambda: (
                    bool(client.of(h2.events.ConnectionTerminated))
                    or len(client.of(h2.events.StreamReset)) >= 50
                    or client.closed
                )
            )
            await until(lambda: proxy.endpoint.in_flight <= 100, "at most 100 in flight")
            assert proxy.endpoint.in_flight <= 100
            await client.close()
            await until(lambda: proxy.endpoint.in_flight == 0, "the slots to come back")

    run(scenario)


def test_a_ping_flood_from_a_client_that_reads_nothing_stays_bounded(
    run: Run, instance: Address
) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            client = await RawH2.open(proxy)
            await client.read_until(client.settled)
            (connection,) = proxy.router.http2_connections
            # Small kernel buffers on both ends, so that what piles up is the router's own.
            router_socket = connection.transport.get_extra_info("socket")
            router_socket.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            client_socket = client.writer.get_extra_info("socket")
            client_socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            ping = _frame(6, 0, 0, b"12345678")
            # 2.5 MB of PINGs, each answered by a PING ACK the client never reads.
            for _ in range(10):
                client.writer.write(ping * 15_000)
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)
            assert connection.writing_paused
            assert connection.transport.get_write_buffer_size() < 1024 * 1024
            await client.close()

    run(scenario)


def test_rapid_reset_gets_goaway(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            client = await RawH2.open(proxy)
            for _ in range(RESET_BUDGET + 20):
                stream_id = client.request("/slow?seconds=10", end=True)
                client.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            client.flush()
            terminated = await client.goaway()
            assert terminated.error_code == h2.errors.ErrorCodes.ENHANCE_YOUR_CALM
            await client.close()
            await until(lambda: proxy.endpoint.in_flight == 0, "the slots to come back")

    run(scenario)


def test_reset_budget_is_for_attackers_only() -> None:
    assert not too_many_resets(RESET_BUDGET, RESET_BUDGET)
    assert too_many_resets(RESET_BUDGET + 1, RESET_BUDGET + 1)
    # A long-lived client that cancels a call now and then is not cut off.
    assert not too_many_resets(RESET_BUDGET * 3, RESET_BUDGET * 10)


def test_a_reset_stream_frees_its_slot_and_the_app_sees_it(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        tag = unique_tag()
        async with Proxy(instance, capacity=1) as proxy:
            client = await RawH2.open(proxy)
            stream_id = client.request(f"/slow?seconds=30&tag={tag}")
            for _ in range(500):
                if (await stats(instance, tag)).get("started") == 1:
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the request never reached the app")
            client.h2.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
            client.flush()
            await until(lambda: proxy.endpoint.in_flight == 0, "the slot to come back")
            assert (await client.response(client.request()))[1] == b"hello"
            for _ in range(200):
                if (await stats(instance, tag)).get("disconnected") == 1:
                    break
                await asyncio.sleep(0.01)
            else:
                pytest.fail("the app never saw the disconnect")
            await client.close()

    run(scenario)


def test_drain_sends_goaway_and_lets_streams_finish(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance) as proxy:
            client = await RawH2.open(proxy)
            slow = client.request("/slow?seconds=0.5")
            await until(lambda: proxy.endpoint.in_flight == 1, "the request to start")
            drained = asyncio.ensure_future(proxy.router.drain(5))
            # The h2 library stops reading at a GOAWAY (any later frame is an error to it),
            # so what follows is read as raw frames: the response still comes on stream 1.
            received = await asyncio.wait_for(client.reader.read(), 5)  # to the close
            frames = []
            while received:
                frame, length = Frame.parse_frame_header(memoryview(received[:9]))
                frame.parse_body(memoryview(received[9 : 9 + length]))
                frames.append(frame)
                received = received[9 + length :]
            (goaway,) = [frame for frame in frames if isinstance(frame, GoAwayFrame)]
            assert goaway.error_code == 0 and goaway.last_stream_id == slow
            after = frames[frames.index(goaway) + 1 :]
            assert any(
                isinstance(frame, HeadersFrame) and frame.stream_id == slow for frame in after
            )
            assert "END_STREAM" in after[-1].flags and after[-1].stream_id == slow
            assert not any(isinstance(frame, RstStreamFrame) for frame in frames)
            await asyncio.wait_for(drained, 5)
            assert not proxy.router.http2_connections
            await client.close()

    run(scenario)


def test_an_idle_h2_connection_is_closed(run: Run, instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(instance, keepalive_timeout=0.5) as proxy:
            client = await RawH2.open(proxy)
            assert (await client.response(client.request()))[1] == b"hello"
            terminated = await client.goaway()
            assert terminated.error_code == h2.errors.ErrorCodes.NO_ERROR
            await client.close()

    run(scenario)
