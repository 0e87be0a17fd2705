"""gRPC through the router to a real grpcio server speaking h2c (a revision deployed with
--use-http2): unary, server-streaming, client-streaming and bidirectional calls from a real
grpcio client, trailers and grpc-status kept; and an HTTP/1.1 client of the same server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import trustme
from fakes import free_port, grpc_echo
from grpc_health.v1 import health_pb2, health_pb2_grpc

from homerun.access.certificates import CertificateFiles, server_context
from homerun.routing.types import RequestRecord

from .test_proxy import Address, Proxy, Run, read_response, run, until

__all__ = ["run"]  # a fixture, used by name


@pytest.fixture(scope="module")
def grpc_instance() -> Iterator[Address]:
    with grpc_echo() as address:
        yield address


def channel(proxy: Proxy) -> grpc.Channel:
    return grpc.insecure_channel(
        f"127.0.0.1:{proxy.port}",
        options=[("grpc.default_authority", "svc.test"), ("grpc.enable_http_proxy", 0)],
    )


def test_grpc_calls_of_every_kind_through_the_router(run: Run, grpc_instance: Address) -> None:
    async def scenario() -> None:
        records: list[RequestRecord] = []
        async with Proxy(grpc_instance, http2=True, on_request=records.append) as proxy:

            def calls() -> None:
                with channel(proxy) as client:
                    unary = client.unary_unary("/test.Echo/Unary")
                    answer, call = unary.with_call(b"hi", timeout=10)
                    # The router's X-Forwarded-For reached the server as metadata.
                    assert answer == b"echo:hi:127.0.0.1"
                    assert call.code() == grpc.StatusCode.OK
                    assert ("x-trailer", "kept") in call.trailing_metadata()

                    streamed = client.unary_stream("/test.Echo/ServerStream")(b"5", timeout=10)
                    assert list(streamed) == [b"0", b"1", b"2", b"3", b"4"]

                    gathered = client.stream_unary("/test.Echo/ClientStream")
                    assert gathered(iter([b"a", b"b", b"c"]), timeout=10) == b"a,b,c"

                    bidi = client.stream_stream("/test.Echo/Bidi")
                    assert list(bidi(iter([b"x", b"y"]), timeout=10)) == [b"X", b"Y"]

                    with pytest.raises(grpc.RpcError) as failed:
                        client.unary_unary("/test.Echo/Fail")(b"nope", timeout=10)
                    assert failed.value.code() == grpc.StatusCode.NOT_FOUND
                    assert failed.value.details() == "no such thing: nope"

                    health = health_pb2_grpc.HealthStub(client)
                    status = health.Check(health_pb2.HealthCheckRequest(), timeout=10).status
                    assert status == health_pb2.HealthCheckResponse.SERVING

                    # Many calls at once share the router's h2c connection to the instance.
                    results = [unary.future(b"%d" % n, timeout=10) for n in range(40)]
                    assert sorted(each.result() for each in results)[0].startswith(b"echo:")

            await asyncio.to_thread(calls)
            assert len(proxy.router.http2_upstreams) == 1
            assert records and all(record[10] == b"HTTP/2" for record in records)
            assert {record[5] for record in records} == {200}
            # grpc-status from the trailers, or from a trailers-only answer (NOT_FOUND is 5).
            assert {record[15] for record in records} == {b"0", b"5"}
            await until(lambda: proxy.endpoint.in_flight == 0, "the slots to come back")

    run(scenario)


def test_bidirectional_stream_messages_cross_one_by_one(run: Run, grpc_instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(grpc_instance, http2=True) as proxy:

            def conversation() -> None:
                with channel(proxy) as client:
                    bidi = client.stream_stream("/test.Echo/Bidi")
                    outgoing: list[bytes] = []
                    answers = bidi(_lockstep(outgoing), timeout=10)
                    for number, answer in enumerate(answers):
                        # Each answer came before the next request was written: nothing waits
                        # for the end of the stream in either direction.
                        assert answer == b"M%d" % number and len(outgoing) == number + 1

            await asyncio.to_thread(conversation)

    run(scenario)


def _lockstep(outgoing: list[bytes]) -> Iterator[bytes]:
    for number in range(5):
        outgoing.append(b"m%d" % number)
        yield b"m%d" % number
        deadline = time.monotonic() + 0.3  # the answer arrives in the meantime
        while time.monotonic() < deadline:
            time.sleep(0.01)


def test_an_http11_client_gets_the_trailers_in_the_last_chunk(
    run: Run, grpc_instance: Address
) -> None:
    async def scenario() -> None:
        async with Proxy(grpc_instance, http2=True) as proxy:
            reader, writer = await proxy.connect()
            message = b"\x00" + (2).to_bytes(4, "big") + b"hi"  # a gRPC length-prefixed message
            writer.write(
                b"POST /test.Echo/Unary HTTP/1.1\r\nHost: svc.test\r\n"
                b"Content-Type: application/grpc\r\nTE: trailers\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(message), message)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            assert b"transfer-encoding: chunked" in head.lower()
            rest = await asyncio.wait_for(reader.readuntil(b"\r\n0\r\n"), 5)
            assert b"echo:hi" in rest
            trailers = await reader.readuntil(b"\r\n\r\n")
            assert b"grpc-status: 0" in trailers and b"x-trailer: kept" in trailers
            # The connection stays for the next request.
            writer.write(
                b"POST /test.Echo/Nothing HTTP/1.1\r\nHost: svc.test\r\n"
                b"Content-Type: application/grpc\r\nContent-Length: %d\r\n\r\n%s"
                % (len(message), message)
            )
            answer = await read_response(reader)
            assert answer.status == 200 and answer.body == b""
            assert answer.headers.get("grpc-status") == "12"  # UNIMPLEMENTED, trailers-only
            writer.close()

    run(scenario)


def test_a_websocket_upgrade_to_an_h2c_revision_gets_502(run: Run, grpc_instance: Address) -> None:
    async def scenario() -> None:
        async with Proxy(grpc_instance, http2=True) as proxy:
            reader, writer = await proxy.connect()
            writer.write(
                b"GET /ws HTTP/1.1\r\nHost: svc.test\r\nConnection: Upgrade\r\n"
                b"Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
            )
            answer = await read_response(reader)
            assert answer.status == 502 and b"--use-http2" in answer.body
            writer.close()

    run(scenario)


def test_grpc_over_tls_with_alpn_h2(run: Run, grpc_instance: Address, tmp_path: Path) -> None:
    ca = trustme.CA()
    issued = ca.issue_cert("svc.test")
    files = CertificateFiles(tmp_path / "server.crt", tmp_path / "server.key")
    issued.cert_chain_pems[0].write_to_path(str(files.cert))
    issued.private_key_pem.write_to_path(str(files.key))
    context = server_context(files, "config.yaml")

    async def scenario() -> None:
        async with Proxy(grpc_instance, http2=True) as proxy:
            await proxy.router.start_tls("127.0.0.1", free_port(), context)

            def call() -> None:
                credentials = grpc.ssl_channel_credentials(root_certificates=ca.cert_pem.bytes())
                options = [
                    ("grpc.ssl_target_name_override", "svc.test"),
                    ("grpc.default_authority", "svc.test"),
                    ("grpc.enable_http_proxy", 0),
                ]
                address = f"127.0.0.1:{proxy.router.tls_port}"
                with grpc.secure_channel(address, credentials, options=options) as client:
                    answer = client.unary_unary("/test.Echo/Unary")(b"tls", timeout=10)
                    assert answer == b"echo:tls:127.0.0.1"
                    streamed = client.unary_stream("/test.Echo/ServerStream")(b"2", timeout=10)
                    assert list(streamed) == [b"0", b"1"]

            await asyncio.to_thread(call)

    run(scenario)
