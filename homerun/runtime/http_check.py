"""An HTTP GET probe (Kubernetes' and Knative's `httpGet`) over HTTP/1.1, or over HTTP/2
cleartext for an instance deployed with --use-http2 (Knative probes an h2c port with h2c):
ready when the status is 200-399, as Kubernetes counts it.

    answer = await check_http("127.0.0.1", port, path="/ready", headers=[], http2=False,
                              within=1.0)
    answer.ready, answer.reason
"""

from __future__ import annotations

import asyncio
from typing import NamedTuple

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import httptools

_USER_AGENT = b"homerun-probe"  # Kubernetes sends kube-probe/VERSION
_MAX_HEAD_BYTES = 64 * 1024


class ProbeAnswer(NamedTuple):
    ready: bool
    reason: str  # empty when ready


async def check_http(
    host: str,
    port: int,
    *,
    path: str,
    headers: list[tuple[str, str]],
    http2: bool,
    within: float,
) -> ProbeAnswer:
    """One GET on a new connection, answered within `within` seconds."""
    for name, value in headers:
        if not name or any(char in name + value for char in "\r\n\0") or ":" in name:
            return ProbeAnswer(False, f"the probe's header {name!r} is not a valid HTTP header")
    if not path.startswith("/") or any(char.isspace() for char in path):
        return ProbeAnswer(False, f"the probe's path {path!r} must start with / and hold no space")
    call = _get_h2c if http2 else _get_http11
    try:
        status = await asyncio.wait_for(call(host, port, path, headers), within)
    except TimeoutError:
        return ProbeAnswer(False, f"GET {path} was not answered within {within:g} s")
    except OSError as error:
        return ProbeAnswer(False, f"cannot connect: {error.strerror or error}")
    except (h2.exceptions.ProtocolError, httptools.HttpParserError) as error:
        protocol = "HTTP/2 (h2c)" if http2 else "HTTP/1.1"
        return ProbeAnswer(False, f"GET {path}: the answer is not {protocol}: {error}")
    if status is None:
        return ProbeAnswer(False, f"GET {path}: the connection closed before an answer")
    if 200 <= status < 400:
        return ProbeAnswer(True, "")
    return ProbeAnswer(False, f"GET {path} answered {status}")


class _Head:
    """httptools callbacks: the status, once the head is read."""

    def __init__(self) -> None:
        self.complete = False

    def on_headers_complete(self) -> None:
        self.complete = True


async def _get_http11(
    host: str, port: int, path: str, headers: list[tuple[str, str]]
) -> int | None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        names = {name.lower() for name, _ in headers}
        lines = [f"GET {path} HTTP/1.1"]
        if "host" not in names:
            lines.append(f"host: {host}:{port}")
        if "user-agent" not in names:
            lines.append(f"user-agent: {_USER_AGENT.decode()}")
        lines += [f"{name}: {value}" for name, value in headers]
        lines.append("connection: close")
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        head = _Head()
        parser = httptools.HttpResponseParser(head)
        read = 0
        while not head.complete:
            data = await reader.read(65536)
            if not data:
                return None
            read += len(data)
            if read > _MAX_HEAD_BYTES and not head.complete:
                raise httptools.HttpParserError("a response head over 64 KiB")
            parser.feed_data(data)
        return int(parser.get_status_code())
    finally:
        writer.close()


async def _get_h2c(host: str, port: int, path: str, headers: list[tuple[str, str]]) -> int | None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        connection = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        connection.initiate_connection()
        stream_id = connection.get_next_available_stream_id()
        authority = next(
            (value for name, value in headers if name.lower() == "host"), f"{host}:{port}"
        )
        request = [
            (b":method", b"GET"), (b":scheme", b"http"), (b":authority", authority.encode()),
            (b":path", path.encode()), (b"user-agent", _USER_AGENT),
        ]  # fmt: skip
        request += [
            (name.lower().encode(), value.encode())
            for name, value in headers
            if name.lower() not in ("host", "user-agent")
        ]
        connection.send_headers(stream_id, request, end_stream=True)
        writer.write(connection.data_to_send())
        while True:
            data = await reader.read(65536)
            if not data:
                return None
            for event in connection.receive_data(data):
                if isinstance(event, h2.events.ResponseReceived) and event.stream_id == stream_id:
                    for name, value in event.headers or []:
                        if name == b":status":
                            return int(value)
                if isinstance(event, h2.events.StreamReset) and event.stream_id == stream_id:
                    return None
            writer.write(connection.data_to_send())
    finally:
        writer.close()
