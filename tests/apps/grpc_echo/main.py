"""A gRPC service for homerun deploy --use-http2 (grpcio, no generated code: messages are raw
bytes), on h2c at $PORT (or argv[1], run by hand), with the standard health service: the
server itself SERVING, a service named "warming" NOT_SERVING."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from concurrent import futures

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc


def unary(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.set_trailing_metadata((("x-trailer", "kept"),))
    metadata = dict(context.invocation_metadata())
    return b"echo:" + request + b":" + metadata.get("x-forwarded-for", "").encode()


def server_stream(request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
    for number in range(int(request)):
        yield b"%d" % number


def client_stream(requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
    return b",".join(requests)


def bidi(requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
    for request in requests:
        yield request.upper()


def fail(request: bytes, context: grpc.ServicerContext) -> bytes:
    context.abort(grpc.StatusCode.NOT_FOUND, "no such thing: " + request.decode())
    raise AssertionError("abort raises")


def main() -> None:
    port = int(os.environ.get("PORT") or sys.argv[1])
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(unary),
        "ServerStream": grpc.unary_stream_rpc_method_handler(server_stream),
        "ClientStream": grpc.stream_unary_rpc_method_handler(client_stream),
        "Bidi": grpc.stream_stream_rpc_method_handler(bidi),
        "Fail": grpc.unary_unary_rpc_method_handler(fail),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    checker = health.HealthServicer()
    checker.set("", health_pb2.HealthCheckResponse.SERVING)
    checker.set("warming", health_pb2.HealthCheckResponse.NOT_SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    # A container's app listens on its network (GRPC_BIND=0.0.0.0), where podman forwards to.
    server.add_insecure_port(f"{os.environ.get('GRPC_BIND', '127.0.0.1')}:{port}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
