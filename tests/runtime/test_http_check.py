"""The HTTP GET probe against real servers: uvicorn over HTTP/1.1, and the router's h2c port in
front of it for the HTTP/2 form (as an instance deployed with --use-http2 is probed)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest
from fakes import free_port, loopback_listener, proxy_app

from homerun.routing.proxy import Router
from homerun.routing.throttler import Endpoint, Throttler
from homerun.routing.types import Route, RouteError
from homerun.runtime.http_check import ProbeAnswer, check_http


@pytest.fixture(scope="module")
def app_port() -> Iterator[int]:
    with proxy_app() as (_, port):
        yield port


def probe(port: int, path: str, *, http2: bool = False, **options: object) -> ProbeAnswer:
    headers = options.pop("headers", [])
    assert isinstance(headers, list)
    return asyncio.run(
        check_http("127.0.0.1", port, path=path, headers=headers, http2=http2, within=5.0)
    )


def test_200_to_399_is_ready(app_port: int) -> None:
    assert probe(app_port, "/hello") == ProbeAnswer(True, "")
    assert probe(app_port, "/status/204").ready
    assert probe(app_port, "/status/302").ready
    assert probe(app_port, "/status/500") == ProbeAnswer(False, "GET /status/500 answered 500")
    assert probe(app_port, "/nothing-here") == ProbeAnswer(False, "GET /nothing-here answered 404")


def test_the_probe_sends_its_headers(app_port: int) -> None:
    # proxy_app's /headers answers 200 with what it got; a header with CR LF is refused first.
    assert probe(app_port, "/headers", headers=[("X-Probe", "yes")]).ready
    refused = probe(app_port, "/hello", headers=[("X-Bad", "a\r\nInjected: 1")])
    assert not refused.ready and "not a valid HTTP header" in refused.reason
    assert not probe(app_port, "no-slash").ready


def test_what_does_not_answer_is_not_ready() -> None:
    closed = probe(free_port(), "/")
    assert not closed.ready and closed.reason.startswith("cannot connect")

    async def silent() -> ProbeAnswer:
        held: list[asyncio.StreamWriter] = []

        async def hold(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            held.append(writer)  # reads the request, never answers

        server = await asyncio.start_server(hold, sock=loopback_listener())
        async with server:
            port = server.sockets[0].getsockname()[1]
            answer = await check_http(
                "127.0.0.1", port, path="/", headers=[], http2=False, within=0.3
            )
            for writer in held:
                writer.close()
                await writer.wait_closed()
            return answer

    answer = asyncio.run(silent())
    assert answer == ProbeAnswer(False, "GET / was not answered within 0.3 s")


def test_the_h2c_form_against_an_http2_server(app_port: int) -> None:
    async def scenario() -> tuple[ProbeAnswer, ProbeAnswer, ProbeAnswer]:
        throttler = Throttler("svc-1", lambda: None, time.monotonic)
        throttler.add(Endpoint("svc-1-a", "127.0.0.1", app_port, 10))
        route = Route("svc", "svc-1", throttler, 10.0)
        router = Router(lambda host: route if host == "svc.test" else RouteError(404, "no"))
        await router.start("127.0.0.1", free_port())
        try:
            port = router.port
            host = [("Host", "svc.test")]
            ready = await check_http(
                "127.0.0.1", port, path="/hello", headers=host, http2=True, within=5
            )
            failing = await check_http(
                "127.0.0.1", port, path="/status/503", headers=host, http2=True, within=5
            )
            # An HTTP/1.1-only server does not understand the h2c preface.
            http11 = await check_http(
                "127.0.0.1", app_port, path="/hello", headers=[], http2=True, within=5
            )
        finally:
            await router.close()
        return ready, failing, http11

    ready, failing, http11 = asyncio.run(scenario())
    assert ready == ProbeAnswer(True, "")
    assert failing == ProbeAnswer(False, "GET /status/503 answered 503")
    assert not http11.ready
