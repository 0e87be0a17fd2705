"""One HTTP/2 request stream, seen by the HTTP/1.1 machinery as a connection of its own.

Each stream of a client's HTTP/2 connection (http2.py) gets a `ClientConnection`, the same
one an HTTP/1.1 client gets, with a `StreamTransport` under it: the stream's request is
written to it as an HTTP/1.1 request (one per connection), so every header rule, limit,
timeout, guard and forwarding header of HTTP/1.1 applies unchanged, and the HTTP/1.1
response it writes back is parsed here and sent on the stream as HEADERS and DATA frames.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any

import httptools

if TYPE_CHECKING:
    from homerun.routing.client import ClientConnection
    from homerun.routing.http2 import Http2Connection

# Response headers that mean something for one HTTP/1.1 connection only (RFC 9113 section
# 8.2.2): the router adds `connection: close` and chunked framing of its own.
_NOT_IN_HTTP2 = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"transfer-encoding", b"upgrade", b"te")
)
# Response bytes held for a client whose flow-control window is shut, before the instance is
# paused (as an HTTP/1.1 client's full socket buffer pauses it).
_HELD_RESPONSE_LIMIT = 256 * 1024


class StreamTransport(asyncio.Transport):
    """The transport of one stream's ClientConnection: what it writes becomes HTTP/2 frames."""

    def __init__(
        self,
        connection: Http2Connection,
        stream_id: int,
        *,
        is_head: bool,
        chunked_body: bool,
        request_open: bool,
    ) -> None:
        super().__init__()
        self.connection = connection
        self.stream_id = stream_id
        self.protocol: ClientConnection | None = None
        self.is_head = is_head
        self.chunked_body = chunked_body  # request body bytes go on as chunks
        self.request_open = request_open  # the client may still send body bytes
        self.parser = httptools.HttpResponseParser(self)

        # The request body: held while the ClientConnection does not read, and not yet
        # acknowledged to the client, so that its flow-control window bounds what is held.
        self.reading_paused = False
        self.held_body: deque[tuple[bytes, int]] = deque()
        self.body_ended = False  # the client ended the stream; not yet passed on if held
        self.delivery: asyncio.Handle | None = None

        # The response
        self.headers: list[tuple[bytes, bytes]] = []
        self.interim = False
        self.unsent_headers: list[tuple[bytes, bytes]] | None = None  # see write()
        self.trailers: list[tuple[bytes, bytes]] = []  # after the body (gRPC's status)
        self.in_body = False
        self.headers_sent = False
        self.response_done = False  # the whole response is parsed (maybe not yet all sent)
        self.pending: deque[bytes] = deque()  # DATA waiting for flow-control window
        self.pending_bytes = 0
        self.end_pending = False
        self.writing_paused = False

        # The stream
        self.ended = False  # END_STREAM sent or the stream reset: nothing more goes out
        self.closing = False  # the ClientConnection closed or aborted it
        self.lost = False  # connection_lost() was called

    # -- asyncio.Transport, as ClientConnection uses it ------------------------------------

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.connection.transport.get_extra_info(name, default)

    def is_closing(self) -> bool:
        return self.closing or self.ended

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.response_done or self.ended:
            return
        try:
            self.parser.feed_data(bytes(data))
        except httptools.HttpParserError:
            # The router wrote this response itself, from a parsed one: not expected.
            self.abort()
            return
        # A response's HEADERS wait to the end of the write that brought them, so that one
        # with no body leaves as a single HEADERS frame ending the stream (gRPC's
        # trailers-only answer, an empty 200), and the rest go out at once.
        if self.unsent_headers is not None:
            self._send_final_headers(end_stream=False)

    def can_write_eof(self) -> bool:
        return False

    def write_eof(self) -> None:
        raise NotImplementedError

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        if self.reading_paused:
            self.reading_paused = False
            if (self.held_body or self.body_ended) and self.delivery is None:
                # Never into the protocol from inside its own call, as asyncio's transports.
                self.delivery = self.connection.loop.call_soon(self._deliver_held)

    def is_reading(self) -> bool:
        return not self.reading_paused

    def close(self) -> None:
        """The ClientConnection is done: a response not complete by now is cut (RST_STREAM)."""
        if self.closing:
            return
        self.closing = True
        if not self.response_done:
            self.connection.reset_stream(self, internal=True)
        self.connection.loop.call_soon(self.connection_lost)

    def abort(self) -> None:
        if self.closing and self.lost:
            return
        self.closing = True
        if not (self.response_done and self.headers_sent):
            self.connection.reset_stream(self, internal=True)
        self.connection.loop.call_soon(self.connection_lost)

    # -- what the HTTP/2 connection calls ----------------------------------------------

    def start(self, protocol: ClientConnection, head: bytes) -> None:
        self.protocol = protocol
        protocol.connection_made(self)
        protocol.data_received(head)

    def receive_body(self, data: bytes, flow_controlled_length: int) -> None:
        if self.reading_paused or self.held_body or self.delivery is not None:
            self.held_body.append((data, flow_controlled_length))
            return
        self._pass_body(data)
        self.connection.acknowledge(self, flow_controlled_length)

    def end_body(self) -> None:
        self.request_open = False
        self.body_ended = True
        if not (self.reading_paused or self.held_body or self.delivery is not None):
            self._deliver_held()

    def connection_lost(self) -> None:
        if not self.lost:
            self.lost = True
            if self.delivery is not None:
                self.delivery.cancel()
                self.delivery = None
            protocol = self.protocol
            if protocol is not None:
                protocol.connection_lost(None)

    def held_flow(self) -> int:
        """Body bytes received and never acknowledged (given back when the stream goes)."""
        held = sum(length for _, length in self.held_body)
        self.held_body.clear()
        return held

    def update_writing(self) -> None:
        """Pause the instance while the client's window or socket holds the response back."""
        paused = self.connection.writing_paused or self.pending_bytes > _HELD_RESPONSE_LIMIT
        if paused == self.writing_paused or self.protocol is None or self.lost:
            return
        self.writing_paused = paused
        if paused:
            self.protocol.pause_writing()
        else:
            self.protocol.resume_writing()

    # -- internals --------------------------------------------------------------------

    def _pass_body(self, data: bytes) -> None:
        protocol = self.protocol
        if protocol is None or self.lost or not data:
            return
        protocol.data_received(b"%x\r\n%s\r\n" % (len(data), data) if self.chunked_body else data)

    def _deliver_held(self) -> None:
        self.delivery = None
        while self.held_body and not self.reading_paused and not self.lost:
            data, length = self.held_body.popleft()
            self._pass_body(data)
            self.connection.acknowledge(self, length)
        if self.body_ended and not self.held_body and not self.reading_paused:
            self.body_ended = False
            if self.chunked_body and self.protocol is not None and not self.lost:
                self.protocol.data_received(b"0\r\n\r\n")

    # -- httptools callbacks: the HTTP/1.1 response as the router wrote it ----------------

    def on_message_begin(self) -> None:
        self.headers = []

    def on_header(self, name: bytes, value: bytes) -> None:
        lower_name = name.lower()
        if lower_name not in _NOT_IN_HTTP2:
            (self.trailers if self.in_body else self.headers).append((lower_name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        headers = [(b":status", b"%d" % status), *self.headers]
        if status < 200:
            # 100 Continue, 103 Early Hints: interim HEADERS, the final response follows.
            self.interim = True
            self.connection.send_headers(self, headers, end_stream=False)
            return
        self.interim = False
        self.in_body = True
        if self.is_head or status == 204 or status == 304:
            self.response_done = True  # a HEAD's Content-Length announces no bytes here
            self.headers_sent = True
            self.connection.send_headers(self, headers, end_stream=True)
            return
        self.unsent_headers = headers

    def on_body(self, body: bytes) -> None:
        if self.response_done:
            return
        if self.unsent_headers is not None:
            self._send_final_headers(end_stream=False)
        self.connection.send_data(self, body)

    def on_message_complete(self) -> None:
        if self.interim or self.response_done:
            return
        self.response_done = True
        if self.unsent_headers is not None:
            self._send_final_headers(end_stream=not self.trailers)
            if not self.trailers:
                return
        self.connection.send_data(self, b"", end_stream=True)

    def _send_final_headers(self, *, end_stream: bool) -> None:
        headers, self.unsent_headers = self.unsent_headers, None
        self.headers_sent = True
        if headers is not None:
            self.connection.send_headers(self, headers, end_stream=end_stream)
