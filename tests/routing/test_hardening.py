"""Hostile and broken requests at the router: each gets its status and none desynchronises
the connection to the instance (a real uvicorn app that counts what reaches it)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Coroutine

import pytest
from fakes import free_port

from homerun.routing.proxy import HEADER_TIMEOUT_SECONDS, KEEPALIVE_TIMEOUT_SECONDS, Router
from homerun.routing.throttler import Endpoint, Throttler
from homerun.routing.types import Route, RouteError


class Harness:
    def __init__(
        self,
        upstream: tuple[str, int],
        *,
        header_timeout: float = HEADER_TIMEOUT_SECONDS,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT_SECONDS,
    ) -> None:
        throttler = Throttler("svc-00001-abc", lambda: None, time.monotonic)
        throttler.add(Endpoint("svc-00001-abc-1", upstream[0], upstream[1], 10))
        self.route = Route("svc", "svc-00001-abc", throttler, 10.0)
        self.router = Router(
            self.resolve, header_timeout=header_timeout, keepalive_timeout=keepalive_timeout
        )

    def resolve(self, host: str) -> Route | RouteError:
        if host.split(":")[0] == "svc.test":
            return self.route
        return RouteError(404, f"no service answers at {host}")

    async def __aenter__(self) -> Harness:
        await self.router.start("127.0.0.1", free_port())
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.router.close()

    async def exchange(self, raw: bytes, *, wait: float = 5.0) -> bytes:
        """Send raw bytes, read until the router closes or stops talking."""
        reader, writer = await asyncio.open_connection("127.0.0.1", self.router.port)
        writer.write(raw)
        await writer.drain()
        received = b""
        with contextlib.suppress(TimeoutError, ConnectionError):
            while chunk := await asyncio.wait_for(reader.read(65536), wait):
                received += chunk
        writer.close()
        return received

    async def seen(self, tag: str) -> dict[str, int]:
        response = await self.exchange(
            f"GET /stats?tag={tag} HTTP/1.1\r\nHost: svc.test\r\nConnection: close\r\n\r\n".encode()
        )
        return json.loads(response.split(b"\r\n\r\n", 1)[1]) if response else {}


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/1.1 ") else 0


def run(coroutine: Coroutine[object, object, None]) -> None:
    asyncio.run(asyncio.wait_for(coroutine, 30))


@pytest.mark.parametrize(
    ("name", "head"),
    [
        ("content-length with transfer-encoding",
         b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled"),
        ("two content-lengths", b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"),
        ("bad chunk size", b"Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"),
        ("negative content-length", b"Content-Length: -1\r\n\r\n"),
    ],
)  # fmt: skip
def test_smuggling_attempts_get_400_and_reach_no_instance(
    instance: tuple[str, int], name: str, head: bytes
) -> None:
    tag = uuid.uuid4().hex

    async def scenario() -> None:
        async with Harness(instance) as harness:
            raw = b"POST /upload?tag=%s HTTP/1.1\r\nHost: svc.test\r\n%s" % (tag.encode(), head)
            response = await harness.exchange(raw)
            assert status_of(response) == 400, (name, response[:200])
            assert b"connection: close" in response.lower()
            # Only the question itself reached the app under this tag.
            assert await harness.seen(tag) == {"/stats": 1}

    run(scenario())


def test_oversized_url_gets_414(instance: tuple[str, int]) -> None:
    async def scenario() -> None:
        async with Harness(instance) as harness:
            raw = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: svc.test\r\n\r\n"
            assert status_of(await harness.exchange(raw)) == 414

    run(scenario())


def test_too_many_or_too_large_headers_get_431(instance: tuple[str, int]) -> None:
    async def scenario() -> None:
        async with Harness(instance) as harness:
            many = b"".join(b"X-H%d: v\r\n" % n for n in range(150))
            raw = b"GET /hello HTTP/1.1\r\nHost: svc.test\r\n" + many + b"\r\n"
            assert status_of(await harness.exchange(raw)) == 431
            large = b"X-Big: " + b"v" * 70_000 + b"\r\n"
            raw = b"GET /hello HTTP/1.1\r\nHost: svc.test\r\n" + large + b"\r\n"
            assert status_of(await harness.exchange(raw)) == 431

    run(scenario())


@pytest.mark.parametrize(
    "host", [b"svc.test\x00evil", b"svc test", b"svc.test:80:80", b"user@svc.test", b""]
)
def test_invalid_host_headers_get_400(instance: tuple[str, int], host: bytes) -> None:
    async def scenario() -> None:
        async with Harness(instance) as harness:
            raw = b"GET /hello HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"
            assert status_of(await harness.exchange(raw)) == 400

    run(scenario())


def test_absolute_form_routes_by_its_authority_and_reaches_the_app_as_a_path(
    instance: tuple[str, int],
) -> None:
    async def scenario() -> None:
        async with Harness(instance) as harness:
            authority = f"svc.test:{harness.router.port}".encode()
            raw = (
                b"GET http://" + authority + b"/headers?x=1 HTTP/1.1\r\nHost: other.test\r\n"
                b"Connection: close\r\n\r\n"
            )
            response = await harness.exchange(raw)
            assert status_of(response) == 200
            payload = json.loads(response.split(b"\r\n\r\n", 1)[1])
            assert payload["path"] == "/headers"
            assert ["host", authority.decode()] in payload["headers"]
            bad = b"GET ftp://svc.test/ HTTP/1.1\r\nHost: svc.test\r\n\r\n"
            assert status_of(await harness.exchange(bad)) == 400

    run(scenario())


def test_slowloris_is_cut_off_after_the_header_timeout(instance: tuple[str, int]) -> None:
    async def scenario() -> None:
        async with Harness(instance, header_timeout=0.5) as harness:
            reader, writer = await asyncio.open_connection("127.0.0.1", harness.router.port)
            started = time.monotonic()
            head = b"GET /hello HTTP/1.1\r\nHost: svc.test\r\nX-Slow: "
            response = b""
            for byte in head + b"a" * 100:
                writer.write(bytes([byte]))
                with contextlib.suppress(TimeoutError):
                    response += await asyncio.wait_for(reader.read(4096), 0.05)
                if response or time.monotonic() - started > 5:
                    break
            elapsed = time.monotonic() - started
            assert status_of(response) == 408
            assert elapsed < 3  # cut near 0.5 s (plus the once-a-second sweep), not after
            writer.close()

    run(scenario())


def test_silent_and_idle_connections_are_closed(instance: tuple[str, int]) -> None:
    async def scenario() -> None:
        async with Harness(instance, header_timeout=0.5, keepalive_timeout=1.0) as harness:
            # Connected, never sent anything: closed after the header timeout.
            reader, writer = await asyncio.open_connection("127.0.0.1", harness.router.port)
            assert await asyncio.wait_for(reader.read(), 5) == b""
            writer.close()
            # One request, then idle: closed after the keep-alive timeout.
            reader, writer = await asyncio.open_connection("127.0.0.1", harness.router.port)
            writer.write(b"GET /hello HTTP/1.1\r\nHost: svc.test\r\n\r\n")
            first = await asyncio.wait_for(reader.readuntil(b"hello"), 5)
            assert status_of(first) == 200
            started = time.monotonic()
            assert await asyncio.wait_for(reader.read(), 5) == b""
            assert time.monotonic() - started >= 0.9
            writer.close()

    run(scenario())
