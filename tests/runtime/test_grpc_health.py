"""The gRPC health check against a real grpcio server (grpc.health.v1), and the messages it
writes and reads checked against protobuf's own encoding."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from fakes import free_port, grpc_echo, loopback_listener
from grpc_health.v1 import health_pb2

from homerun.runtime.grpc_health import check_health, decode_status, encode_request
from homerun.runtime.http_check import ProbeAnswer


@pytest.fixture(scope="module")
def grpc_server() -> Iterator[int]:
    with grpc_echo() as (_, port):
        yield port


def check(port: int, service: str = "", timeout: float = 5.0) -> ProbeAnswer:
    return asyncio.run(check_health("127.0.0.1", port, service=service, within=timeout))


def test_a_serving_server_is_ready(grpc_server: int) -> None:
    assert check(grpc_server) == ProbeAnswer(True, "")


def test_what_is_not_ready_says_why(grpc_server: int) -> None:
    assert check(grpc_server, "warming") == ProbeAnswer(False, "the server says NOT_SERVING")
    unknown = check(grpc_server, "no.such.Service")
    assert not unknown.ready and "grpc-status 5" in unknown.reason  # NOT_FOUND
    closed = check(free_port())
    assert not closed.ready and closed.reason.startswith("cannot connect")


def test_a_server_that_is_not_http2_is_not_ready() -> None:
    with loopback_listener() as listener:
        port = listener.getsockname()[1]

        async def scenario() -> ProbeAnswer:
            async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
                await reader.read(100)
                writer.write(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n")
                await writer.drain()
                writer.close()

            listener.setblocking(False)
            server = await asyncio.start_server(answer, sock=listener)
            async with server:
                return await check_health("127.0.0.1", port, service="", within=5)

        answer = asyncio.run(scenario())
    assert not answer.ready
    assert "does not speak HTTP/2" in answer.reason or "closed the connection" in answer.reason


def test_messages_match_protobuf() -> None:
    for service in ("", "test.Echo", "x" * 300):
        request = health_pb2.HealthCheckRequest(service=service).SerializeToString()
        assert encode_request(service) == b"\x00" + len(request).to_bytes(4, "big") + request
    for status in (0, 1, 2, 3):
        message = health_pb2.HealthCheckResponse(status=status).SerializeToString()
        assert decode_status(b"\x00" + len(message).to_bytes(4, "big") + message) == status
    assert decode_status(b"\x01\x00\x00\x00\x00") is None  # compressed: not ours
    assert decode_status(b"\x00\x00\x00\x00\x05\x08") is None  # shorter than it says
