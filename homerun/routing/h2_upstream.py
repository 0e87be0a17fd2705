"""HTTP/2 cleartext (h2c) to instances of a revision deployed with `--use-http2` (Knative's
port name `h2c`), as gRPC servers need.

An exchange (exchange.py) speaks HTTP/1.1 to its upstream, whatever the client spoke: it writes
the request head and body as HTTP/1.1 bytes and reads the response as HTTP/1.1 bytes written
to its client. An `UpstreamStream` stands where a pooled `UpstreamConnection` would: it reads
that request (httptools) and sends it as one stream of a multiplexed h2c connection to the
instance (`Http2Upstream`, pooled per instance, a stream per request in flight), and writes
the response back as HTTP/1.1: chunked, with the instance's trailers (grpc-status,
grpc-message) in the last chunk. A client on HTTP/2 gets them back as a trailing HEADERS frame
(h2_stream.py), so a gRPC call keeps its status end to end.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import TYPE_CHECKING, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import httptools

from homerun.routing._http import HOP_BY_HOP, UPSTREAM_FULL

if TYPE_CHECKING:
    from homerun.routing.exchange import Exchange
    from homerun.routing.proxy import Router
    from homerun.routing.throttler import Endpoint

logger = logging.getLogger(__name__)

_CONFIG = h2.config.H2Configuration(client_side=True, header_encoding=None)
# Request body bytes held for an instance whose window is shut before the client is paused.
_HELD_BODY_LIMIT = 256 * 1024
# Response bytes the instance may send ahead of a client that reads slowly, per stream.
_STREAM_WINDOW = 1024 * 1024
_FORWARDED_HEADERS_TO_SKIP = HOP_BY_HOP | {b"host"}


def take_stream(endpoint: Endpoint) -> Http2Upstream | None:
    """A pooled h2c connection to the instance with room for one more stream."""
    for connection in endpoint.http2_connections:
        if connection.has_room():
            return cast(Http2Upstream, connection)
    return None


class Http2Upstream(asyncio.Protocol):
    """One h2c connection to an instance, carrying many exchanges' streams at once."""

    def __init__(self, router: Router, endpoint: Endpoint) -> None:
        self.router = router
        self.endpoint = endpoint
        self.transport = cast(asyncio.Transport, None)
        self.h2 = h2.connection.H2Connection(config=_CONFIG)
        self.streams: dict[int, UpstreamStream] = {}
        self.closed = False
        self.closing = False  # close once the last stream is done
        self.to_flush: list[UpstreamStream] = []  # streams with response bytes this read

    def has_room(self) -> bool:
        if self.closed or self.closing:
            return False
        limit = self.h2.remote_settings.max_concurrent_streams
        return len(self.streams) < limit

    # -- asyncio.Protocol -------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.h2.initiate_connection()
        self.h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: _STREAM_WINDOW})
        self._write_out()
        self.router.http2_upstreams.add(self)
        self.endpoint.http2_connections.append(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.router.http2_upstreams.discard(self)
        if self in self.endpoint.http2_connections:
            self.endpoint.http2_connections.remove(self)
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.lost()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.h2.receive_data(data)
        except h2.exceptions.ProtocolError as error:
            logger.info("an instance broke HTTP/2: %s", error)
            self.abort()
            return
        for event in events:
            stream_id = getattr(event, "stream_id", None)
            stream = self.streams.get(stream_id) if stream_id else None
            if isinstance(
                event, h2.events.ResponseReceived | h2.events.InformationalResponseReceived
            ):
                if stream is not None:
                    stream.response(cast(list[tuple[bytes, bytes]], event.headers))
            elif isinstance(event, h2.events.DataReceived):
                length = event.flow_controlled_length or 0
                if stream is None:
                    self._acknowledge(stream_id or 0, length)
                else:
                    stream.data(event.data or b"", length)
            elif isinstance(event, h2.events.TrailersReceived):
                if stream is not None:
                    stream.trailers = cast(list[tuple[bytes, bytes]], event.headers)
            elif isinstance(event, h2.events.StreamEnded):
                if stream is not None:
                    stream.ended()
            elif isinstance(event, h2.events.StreamReset):
                if stream is not None:
                    self.streams.pop(stream.stream_id, None)
                    stream.reset_by_instance()
            elif isinstance(event, h2.events.WindowUpdated):
                targets = [stream] if stream is not None else list(self.streams.values())
                for target in targets:
                    if target is not None:
                        target.flush_body()
            elif isinstance(event, h2.events.RemoteSettingsChanged):
                for target in list(self.streams.values()):
                    target.flush_body()
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.closing = True  # streams up to its last id may still finish
        # What one read brought goes to each client in one write: a response's head and its
        # end together (gRPC's trailers-only answer stays one HEADERS frame to an h2 client).
        to_flush, self.to_flush = self.to_flush, []
        for touched in to_flush:
            touched.flush()
        self._write_out()
        self._close_if_done()

    # -- streams ----------------------------------------------------------------------

    def open_stream(
        self, stream: UpstreamStream, headers: list[tuple[bytes, bytes]], end: bool
    ) -> int:
        stream_id = self.h2.get_next_available_stream_id()
        self.streams[stream_id] = stream
        self.h2.send_headers(stream_id, headers, end_stream=end)
        self._write_out()
        return stream_id

    def forget(self, stream: UpstreamStream, *, cancel: bool) -> None:
        if self.streams.pop(stream.stream_id, None) is not None and cancel and not self.closed:
            try:
                self.h2.reset_stream(stream.stream_id, h2.errors.ErrorCodes.CANCEL)
            except h2.exceptions.ProtocolError:
                pass
            self._write_out()
        self._close_if_done()

    def _acknowledge(self, stream_id: int, length: int) -> None:
        if length and not self.closed:
            try:
                self.h2.acknowledge_received_data(length, stream_id)
            except h2.exceptions.ProtocolError:
                pass

    def _write_out(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed and not self.transport.is_closing():
            self.transport.write(data)

    def _close_if_done(self) -> None:
        if not self.streams and (self.closing or self.endpoint.draining):
            self.close()

    def close(self) -> None:
        """Close once no stream is left (the throttler does this for an instance that stops)."""
        self.closing = True
        if self.streams or self.closed:
            return
        self.closed = True
        try:
            self.h2.close_connection()
        except h2.exceptions.ProtocolError:
            pass
        self._write_out()
        self.transport.close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()


class UpstreamStream:
    """One exchange's request on an h2c connection, read from and written as HTTP/1.1."""

    def __init__(self, connection: Http2Upstream) -> None:
        self.connection = connection
        self.h2 = connection.h2
        self.exchange: Exchange | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.stream_id = 0
        self.url = b""
        self.request_headers: list[tuple[bytes, bytes]] = []
        self.authority = b""
        self.body: deque[bytes] = deque()  # request body waiting for the instance's window
        self.body_bytes = 0
        self.body_end = False
        self.request_sent = False
        self.client_paused = False
        # The response
        self.rechunk = False
        self.no_body = False
        self.trailers: list[tuple[bytes, bytes]] = []
        self.reading_paused = False
        self.unacknowledged = 0  # response bytes taken while the client did not read
        self.out: list[bytes] = []  # for the client, written at the end of the read
        self.done = False
        self.closed = False  # as UpstreamConnection.closed: not to be written to

    # -- what exchanges call (as on UpstreamConnection) --------------------------------

    def attach(self, exchange: Exchange, reused: bool) -> None:
        self.exchange = exchange
        if exchange.client.writing_paused:
            self.pause_reading()

    def detach(self, reuse: bool) -> None:
        self.flush()
        self.exchange = None
        if not self.done:
            self.done = True
            self.connection.forget(self, cancel=True)

    def write(self, data: bytes) -> None:
        if self.done:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.exchange is not None:
                self.exchange.fail(400, "malformed request body")

    def flush(self) -> None:
        out, exchange = self.out, self.exchange
        if out and exchange is not None:
            data = out[0] if len(out) == 1 else b"".join(out)
            out.clear()
            exchange.response_bytes += len(data)
            exchange.client.write(data)

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            held, self.unacknowledged = self.unacknowledged, 0
            if held and not self.done:
                self.connection._acknowledge(self.stream_id, held)
                self.connection._write_out()

    # -- httptools callbacks: the request as the exchange wrote it ---------------------

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        lower_name = name.lower()
        if lower_name == b"host":
            self.authority = value
        elif lower_name not in _FORWARDED_HEADERS_TO_SKIP:
            self.request_headers.append((lower_name, value))

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        headers = [
            (b":method", self.parser.get_method()),
            (b":scheme", b"http"),
            (b":authority", self.authority),
            (b":path", self.url),
            *self.request_headers,
            (b"te", b"trailers"),  # gRPC servers want it; it asks nothing of anyone else
        ]
        self.request_headers = []
        end = not exchange.has_body
        try:
            self.stream_id = self.connection.open_stream(self, headers, end)
        except h2.exceptions.ProtocolError as error:
            self.done = True
            exchange.fail(400, f"the request cannot go to the instance as HTTP/2: {error}")
            return
        self.request_sent = end

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.body_bytes += len(body)
        self.flush_body()

    def on_message_complete(self) -> None:
        if not self.request_sent:
            self.body_end = True
            self.flush_body()

    # -- what the connection calls -----------------------------------------------------

    def flush_body(self) -> None:
        """Send what the instance's windows allow of the request body."""
        if self.done or self.request_sent or not self.stream_id:
            return
        h2_connection = self.h2
        body = self.body
        try:
            while body:
                window = min(
                    h2_connection.local_flow_control_window(self.stream_id),
                    h2_connection.max_outbound_frame_size,
                )
                if window <= 0:
                    break
                data = body[0]
                if len(data) > window:
                    body[0] = data[window:]
                    data = data[:window]
                else:
                    body.popleft()
                self.body_bytes -= len(data)
                h2_connection.send_data(self.stream_id, data)
            if not body and self.body_end:
                h2_connection.end_stream(self.stream_id)
                self.request_sent = True
        except h2.exceptions.ProtocolError:
            return  # the stream was reset; its end comes as an event
        self.connection._write_out()
        exchange = self.exchange
        if exchange is None:
            return
        full = self.body_bytes > _HELD_BODY_LIMIT
        if full != self.client_paused:
            self.client_paused = full
            if full:
                exchange.client.pause_reading(UPSTREAM_FULL)
            else:
                exchange.client.resume_reading(UPSTREAM_FULL)

    def response(self, headers: list[tuple[bytes, bytes]]) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        status = 0
        pieces: list[bytes] = []
        has_content_length = False
        for name, value in headers:
            if name == b":status":
                status = int(value)
            elif name[:1] != b":" and name not in HOP_BY_HOP:
                has_content_length = has_content_length or name == b"content-length"
                if name == b"grpc-status":
                    exchange.grpc_status = value  # a trailers-only answer
                pieces += (name, b": ", value, b"\r\n")
        lease = exchange.lease
        if lease is not None and lease.waited_since is not None:
            lease.first_byte()
        status_line = b"HTTP/1.1 %d \r\n" % status
        if status < 200:
            if not exchange.http_10:
                self._to_client(b"%s%s\r\n" % (status_line, b"".join(pieces)))
            return
        exchange.response_started = True
        exchange.status = status
        self.no_body = exchange.is_head or status == 204 or status == 304
        framing = b""
        if not self.no_body and not has_content_length:
            if exchange.http_10:
                exchange.close_client = True  # the close marks the end of the body
            else:
                framing = b"transfer-encoding: chunked\r\n"
                self.rechunk = True
        if exchange.close_client:
            connection = b"connection: close\r\n"
        elif exchange.http_10:
            connection = b"connection: keep-alive\r\n"
        else:
            connection = b""
        self._to_client(b"%s%s%s%s\r\n" % (status_line, b"".join(pieces), framing, connection))

    def data(self, data: bytes, length: int) -> None:
        exchange = self.exchange
        if exchange is None or self.no_body:
            self.connection._acknowledge(self.stream_id, length)
            return
        if self.reading_paused:
            self.unacknowledged += length
        else:
            self.connection._acknowledge(self.stream_id, length)
        if data:
            self._to_client(b"%x\r\n%s\r\n" % (len(data), data) if self.rechunk else data)

    def ended(self) -> None:
        exchange = self.exchange
        self.done = True
        self.connection.forget(self, cancel=False)
        if exchange is None:
            return
        if not exchange.response_started:
            exchange.fail(502, "the instance ended the stream without a response")
            return
        for name, value in self.trailers:
            if name == b"grpc-status":
                exchange.grpc_status = value
        if self.rechunk:
            trailers = b"".join(
                b"%s: %s\r\n" % (name, value) for name, value in self.trailers if name[:1] != b":"
            )
            self._to_client(b"0\r\n%s\r\n" % trailers)
        self.flush()
        exchange.finish(
            reuse_upstream=True,
            close_client=exchange.close_client or not exchange.request_complete,
        )

    def reset_by_instance(self) -> None:
        self.done = True
        exchange = self.exchange
        if exchange is None:
            return
        if exchange.response_started:
            exchange.finish(reuse_upstream=False, close_client=True)
        else:
            exchange.fail(502, "the instance reset the stream before it answered")

    def lost(self) -> None:
        """The h2c connection closed under this stream."""
        self.done = True
        exchange = self.exchange
        if exchange is None:
            return
        if exchange.response_started:
            exchange.finish(reuse_upstream=False, close_client=True)
        else:
            exchange.instance_lost()

    def _to_client(self, data: bytes) -> None:
        if not self.out:
            self.connection.to_flush.append(self)
        self.out.append(data)
