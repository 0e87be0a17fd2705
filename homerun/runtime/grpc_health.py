"""The gRPC health check (grpc.health.v1.Health/Check) over h2c, as Kubernetes' and Cloud
Run's `grpc` probes make it: an instance is ready when its server answers SERVING for the
service named (empty: the server as a whole).

    answer = await check_health("127.0.0.1", port, service="", timeout=1.0)
    answer.ready            # True when the status is SERVING
    answer.reason           # otherwise what was wrong, for the deploy's message

No generated code: the request and the answer are one-field protobuf messages, written and
read here (field 1, a string in the request and an enum in the answer).
"""

from __future__ import annotations

import asyncio

import h2.config
import h2.connection
import h2.events
import h2.exceptions

from homerun.runtime.http_check import ProbeAnswer
from homerun.runtime.netns import NetNamespace, open_connection

_PATH = b"/grpc.health.v1.Health/Check"
# HealthCheckResponse.ServingStatus
_STATUSES = {0: "UNKNOWN", 1: "SERVING", 2: "NOT_SERVING", 3: "SERVICE_UNKNOWN"}
_MAX_ANSWER_BYTES = 64 * 1024


def encode_request(service: str) -> bytes:
    """A HealthCheckRequest in a gRPC message frame (uncompressed, length-prefixed)."""
    name = service.encode()
    message = (b"\x0a" + _varint(len(name)) + name) if name else b""
    return b"\x00" + len(message).to_bytes(4, "big") + message


def decode_status(frame: bytes) -> int | None:
    """The status of a HealthCheckResponse in a gRPC message frame; None if unreadable."""
    if len(frame) < 5 or frame[0] != 0:
        return None
    size = int.from_bytes(frame[1:5], "big")
    message = frame[5 : 5 + size]
    if len(message) != size:
        return None
    status = 0  # proto3: a field left out holds its default
    at = 0
    while at < len(message):
        key, at = _read_varint(message, at)
        if key is None:
            return None
        field, kind = key >> 3, key & 7
        if kind == 0:
            value, at = _read_varint(message, at)
            if value is None:
                return None
            if field == 1:
                status = value
        elif kind == 2:
            length, at = _read_varint(message, at)
            if length is None:
                return None
            at += length
        else:
            return None
    return status


async def check_health(
    host: str, port: int, *, service: str, within: float, network: NetNamespace | None = None
) -> ProbeAnswer:
    """One Check call on a new connection (inside `network`, the revision's own network
    namespace, when there is one), answered within `within` seconds."""
    try:
        return await asyncio.wait_for(_check(host, port, service, network), within)
    except TimeoutError:
        return ProbeAnswer(False, f"no answer to grpc.health.v1.Health/Check within {within:g} s")
    except OSError as error:
        return ProbeAnswer(False, f"cannot connect: {error.strerror or error}")
    except h2.exceptions.ProtocolError as error:
        return ProbeAnswer(False, f"the server does not speak HTTP/2 (h2c): {error}")


async def _check(host: str, port: int, service: str, network: NetNamespace | None) -> ProbeAnswer:
    reader, writer = await open_connection(host, port, network)
    try:
        connection = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        connection.initiate_connection()
        stream_id = connection.get_next_available_stream_id()
        connection.send_headers(
            stream_id,
            [
                (b":method", b"POST"), (b":scheme", b"http"),
                (b":authority", b"%s:%d" % (host.encode(), port)), (b":path", _PATH),
                (b"content-type", b"application/grpc"), (b"te", b"trailers"),
            ],
        )  # fmt: skip
        connection.send_data(stream_id, encode_request(service), end_stream=True)
        writer.write(connection.data_to_send())
        body = b""
        grpc_status = None
        grpc_message = b""
        while True:
            data = await reader.read(65536)
            if not data:
                return ProbeAnswer(False, "the server closed the connection before it answered")
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.DataReceived) and event.stream_id == stream_id:
                    body += event.data or b""
                    if len(body) > _MAX_ANSWER_BYTES:
                        return ProbeAnswer(False, "the health answer is too large")
                    connection.acknowledge_received_data(
                        event.flow_controlled_length or 0, stream_id
                    )
                elif isinstance(
                    event, h2.events.ResponseReceived | h2.events.TrailersReceived
                ) and (event.stream_id == stream_id):
                    for name, value in event.headers or []:
                        if name == b"grpc-status":
                            grpc_status = value
                        elif name == b"grpc-message":
                            grpc_message = value
                elif isinstance(event, h2.events.StreamReset) and event.stream_id == stream_id:
                    return ProbeAnswer(False, "the server reset the health check's stream")
                elif isinstance(event, h2.events.StreamEnded) and event.stream_id == stream_id:
                    return _answer(grpc_status, grpc_message, body)
            writer.write(connection.data_to_send())
    finally:
        writer.close()


def _answer(grpc_status: bytes | None, grpc_message: bytes, body: bytes) -> ProbeAnswer:
    if grpc_status != b"0":
        if grpc_status == b"12":
            return ProbeAnswer(False, "the server has no grpc.health.v1.Health service")
        detail = f": {grpc_message.decode(errors='replace')}" if grpc_message else ""
        code = grpc_status.decode() if grpc_status else "none"
        return ProbeAnswer(False, f"the health check failed with grpc-status {code}{detail}")
    status = decode_status(body)
    if status is None:
        return ProbeAnswer(False, "the health answer is not a HealthCheckResponse")
    if status == 1:
        return ProbeAnswer(True, "")
    return ProbeAnswer(False, f"the server says {_STATUSES.get(status) or status}")


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _read_varint(data: bytes, at: int) -> tuple[int | None, int]:
    value = shift = 0
    while at < len(data) and shift < 64:
        byte = data[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
    return None, at
