"""HTTP/2 from clients: a client connection that spoke HTTP/2 (the h2c preface, an
`Upgrade: h2c` request, or ALPN `h2` on TLS), on the `h2` library's state machine.

Each request stream is translated to HTTP/1.1 for the instance, as Cloud Run's front end
does: the stream gets a ClientConnection of its own over a StreamTransport (h2_stream.py),
so the rules and limits of HTTP/1.1 requests apply to it unchanged. The library keeps the
protocol's rules (frames, HPACK, flow-control windows, stream states, header validity:
no connection-specific headers, no CR/LF/NUL, lower-case names, Content-Length against the
DATA received); this module adds the router's limits on top: 100 concurrent streams, header
lists decoded up to 64 KiB, a budget of streams the client resets (rapid reset), a timeout
for an idle connection, and a GOAWAY that lets streams in flight finish at shutdown.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import TYPE_CHECKING, cast

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import GoAwayFrame

from homerun.routing.client import ClientConnection
from homerun.routing.h2_stream import StreamTransport

if TYPE_CHECKING:
    from homerun.routing.proxy import Router

logger = logging.getLogger(__name__)

# Streams a client may have open at once (nginx's http2_max_concurrent_streams is 128, gRPC's
# servers and Google's front end announce 100). The library refuses one more.
MAX_CONCURRENT_STREAMS = 100
# A request's header list, decoded, past this is refused before it is expanded further (an
# HPACK bomb: a large entry in the dynamic table named again and again by one byte). Past
# 64 KiB of names and values (or 100 fields) the request gets 431, as over HTTP/1.1.
MAX_HEADER_LIST_BYTES = 64 * 1024 + 100 * 32
# Request body bytes a stream, and the whole connection, may send ahead of the router.
STREAM_WINDOW = 256 * 1024
CONNECTION_WINDOW = 1024 * 1024
# Rapid reset (CVE-2023-44487): a client that opens streams and resets them at once makes the
# router start requests that nobody waits for. Past this many resets, when they are more than
# half of the streams the client opened, the connection gets GOAWAY ENHANCE_YOUR_CALM.
RESET_BUDGET = 100

_CONFIG = h2.config.H2Configuration(
    client_side=False, header_encoding=None, validate_inbound_headers=True
)
_NO_BODY_METHODS = frozenset((b"GET", b"HEAD", b"DELETE", b"OPTIONS", b"TRACE"))


def too_many_resets(resets: int, opened: int) -> bool:
    """Whether a client that reset `resets` of the `opened` streams it opened is attacking."""
    return resets > RESET_BUDGET and resets * 2 > opened


class InvalidRequest(Exception):
    """A request the router answers itself: (status, message)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def request_head(
    headers: Iterable[tuple[bytes, bytes]], *, has_body: bool
) -> tuple[bytes, bytes, bool]:
    """An HTTP/2 request's headers as an HTTP/1.1 request head: (head, method, chunked body).

    The library has already refused what HTTP/2 forbids (connection-specific headers, a TE
    other than trailers, CR, LF or NUL anywhere, upper-case names, pseudo-headers misplaced,
    missing or repeated); what is left to check is what HTTP/1.1 would read differently.
    """
    method = path = authority = None
    host = None
    content_length: bytes | None = None
    pieces: list[bytes] = []
    for name, value in headers:
        if name[:1] == b":":
            if name == b":method":
                method = value
            elif name == b":path":
                path = value
            elif name == b":authority":
                authority = value
            elif name == b":protocol":
                raise InvalidRequest("extended CONNECT (:protocol) is not supported")
            continue  # :scheme: the instance gets x-forwarded-proto
        if name == b"host":
            if host is not None:
                raise InvalidRequest("the request needs exactly one Host header")
            host = value
            continue
        if name == b"content-length":
            if content_length is not None and content_length != value:
                raise InvalidRequest("the request has two different Content-Length headers")
            content_length = value
            continue
        if name == b"te":
            continue  # "trailers" (the only value HTTP/2 allows) is hop-by-hop
        pieces += (name, b": ", value, b"\r\n")
    if method == b"CONNECT" or path is None:
        raise InvalidRequest("this router does not proxy CONNECT", 405)  # as over HTTP/1.1
    assert method is not None  # the library checked that every request has one
    if any(byte <= 0x20 or byte == 0x7F for byte in path):
        raise InvalidRequest("the :path has a space or a control character")
    if authority is not None and host is not None and host != authority:
        raise InvalidRequest("the Host header names another host than :authority")
    host = authority if authority is not None else host
    framing = b""
    chunked = False
    if content_length is not None:
        if not content_length.isdigit():
            raise InvalidRequest("the Content-Length header is not a number")
        framing = b"content-length: %s\r\n" % content_length
    elif has_body:
        framing = b"transfer-encoding: chunked\r\n"
        chunked = True
    host_line = b"" if host is None else b"host: %s\r\n" % host
    # One request per ClientConnection: `connection: close` ends it after its response.
    head = b"%s %s HTTP/1.1\r\n%s%s%sconnection: close\r\n\r\n" % (
        method, path, host_line, b"".join(pieces), framing,
    )  # fmt: skip
    return head, method, chunked


class Http2Connection(asyncio.Protocol):
    """A client's HTTP/2 connection: its streams go to instances as HTTP/1.1 requests."""

    def __init__(self, router: Router, transport: asyncio.Transport, scheme: bytes) -> None:
        self.router = router
        self.scheme = scheme  # http (h2c) or https (h2 on the TLS port)
        self.loop = asyncio.get_running_loop()
        self.transport = transport
        self.h2 = h2.connection.H2Connection(config=_CONFIG)
        self.streams: dict[int, StreamTransport] = {}
        self.writing_paused = False
        self.closed = False
        self.going_away = False  # GOAWAY sent: streams in flight finish, no new ones
        self.opened = 0
        self.resets = 0
        self.idle_since = self.loop.time()
        self.last_stream_id = 0
        router.http2_connections.add(self)

    # -- starting ---------------------------------------------------------------------

    def start(self, data: bytes) -> None:
        """With prior knowledge: `data` begins with the client's preface."""
        self.h2.initiate_connection()
        self._settle_settings()
        self.data_received(data)

    def start_upgraded(
        self, settings: bytes, request: list[tuple[bytes, bytes]], data: bytes
    ) -> None:
        """After `Upgrade: h2c`: the upgrade request is stream 1, its response comes on it."""
        try:
            self.h2.initiate_upgrade_connection(settings)
        except (h2.exceptions.ProtocolError, ValueError) as error:
            logger.info("an h2c upgrade with invalid HTTP2-Settings: %s", error)
            self.transport.close()
            self.closed = True
            self.router.http2_connections.discard(self)
            return
        self._settle_settings()
        self.opened += 1
        self.last_stream_id = 1
        self._start_stream(1, request, ended=True)
        self._write_out()
        if data:
            self.data_received(data)

    def _settle_settings(self) -> None:
        self.h2.update_settings(
            {
                h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: MAX_CONCURRENT_STREAMS,
                h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: STREAM_WINDOW,
                h2.settings.SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST_BYTES,
            }
        )
        # Applied at once, not when the client acknowledges the settings: an HPACK bomb sent
        # with the preface meets the limit too.
        self.h2.decoder.max_header_list_size = MAX_HEADER_LIST_BYTES
        self.h2.increment_flow_control_window(CONNECTION_WINDOW - 65535)
        self._write_out()

    # -- asyncio.Protocol -------------------------------------------------------------

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        try:
            events = self.h2.receive_data(data)
            for event in events:
                self._handle(event)
        except h2.exceptions.ProtocolError as error:
            code = error.error_code
            logger.info("HTTP/2 connection refused: %s", error)
            self._terminate(code if isinstance(code, int) else h2.errors.ErrorCodes.PROTOCOL_ERROR)
            return
        self._write_out()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.router.http2_connections.discard(self)
        streams, self.streams = self.streams, {}
        for stream in streams.values():
            stream.ended = True
            stream.connection_lost()

    def pause_writing(self) -> None:
        # The client reads nothing: its streams' instances pause, and so does reading from it,
        # or frames the library answers by itself (PING, SETTINGS: floods of CVE-2019-9512
        # and -9515) would pile their answers up here without end.
        self.writing_paused = True
        if not self.closed:
            self.transport.pause_reading()
        for stream in list(self.streams.values()):
            stream.update_writing()

    def resume_writing(self) -> None:
        self.writing_paused = False
        if not self.closed:
            self.transport.resume_reading()
        for stream in list(self.streams.values()):
            stream.update_writing()

    def eof_received(self) -> bool | None:
        return None  # the transport closes; streams in flight are lost with it

    # -- events -----------------------------------------------------------------------

    def _handle(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.RequestReceived):
            assert event.stream_id is not None and event.headers is not None
            self.opened += 1
            if self.going_away:
                self.h2.reset_stream(event.stream_id, h2.errors.ErrorCodes.REFUSED_STREAM)
                return
            self.last_stream_id = event.stream_id
            self._start_stream(
                event.stream_id,
                cast(list[tuple[bytes, bytes]], event.headers),
                ended=event.stream_ended is not None,
            )
        elif isinstance(event, h2.events.DataReceived):
            assert event.stream_id is not None and event.data is not None
            length = event.flow_controlled_length or 0
            stream = self.streams.get(event.stream_id)
            if stream is None or not stream.request_open:
                self._acknowledge(event.stream_id, length)
            else:
                stream.receive_body(event.data, length)
        elif isinstance(event, h2.events.StreamEnded):
            stream = self.streams.get(event.stream_id or 0)
            if stream is not None and stream.request_open:
                stream.end_body()
        elif isinstance(event, h2.events.StreamReset):
            self._client_reset(event.stream_id or 0)
        elif isinstance(event, h2.events.WindowUpdated):
            if event.stream_id:
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    self._flush(stream)
            else:
                for stream in list(self.streams.values()):
                    self._flush(stream)
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for stream in list(self.streams.values()):
                self._flush(stream)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.going_away = True
            if not self.streams:
                self._close()
        # Trailers of a request (TrailersReceived) are dropped as over HTTP/1.1; the stream's
        # end follows as StreamEnded. Priorities, pings and settings acks need nothing here.

    def _start_stream(
        self, stream_id: int, headers: list[tuple[bytes, bytes]], ended: bool
    ) -> None:
        try:
            head, method, chunked = request_head(headers, has_body=not ended)
        except InvalidRequest as invalid:
            self._answer_error(stream_id, invalid.status, str(invalid), ended)
            return
        stream = StreamTransport(
            self,
            stream_id,
            is_head=method == b"HEAD",
            chunked_body=chunked,
            request_open=not ended,
        )
        self.streams[stream_id] = stream
        stream.start(ClientConnection(self.router, b"HTTP/2", self.scheme), head)

    def _client_reset(self, stream_id: int) -> None:
        self.resets += 1
        stream = self.streams.pop(stream_id, None)
        if stream is not None:
            stream.ended = True
            self._give_back(stream)
            stream.connection_lost()
            self._maybe_idle()
        if too_many_resets(self.resets, self.opened):
            logger.info("HTTP/2 client reset %d of %d streams: GOAWAY", self.resets, self.opened)
            self._terminate(h2.errors.ErrorCodes.ENHANCE_YOUR_CALM)

    # -- what streams call ------------------------------------------------------------

    def send_headers(
        self, stream: StreamTransport, headers: list[tuple[bytes, bytes]], *, end_stream: bool
    ) -> None:
        if stream.ended or self.closed:
            return
        try:
            self.h2.send_headers(stream.stream_id, headers, end_stream=end_stream)
        except h2.exceptions.ProtocolError as error:
            self._cannot_send(stream, error)
            return
        if end_stream:
            self._stream_done(stream)
        self._write_out()

    def send_data(self, stream: StreamTransport, data: bytes, *, end_stream: bool = False) -> None:
        if stream.ended or self.closed:
            return
        if data:
            stream.pending.append(data)
            stream.pending_bytes += len(data)
        if end_stream:
            stream.end_pending = True
        try:
            self._flush(stream)
        except h2.exceptions.ProtocolError as error:
            self._cannot_send(stream, error)
            return
        self._write_out()

    def _cannot_send(self, stream: StreamTransport, error: Exception) -> None:
        """The library refused a frame (the stream closed under it, a header HTTP/2 forbids
        from the instance): the stream is cut, the connection and its other streams go on."""
        logger.info("HTTP/2 stream %d cut: %s", stream.stream_id, error)
        self.reset_stream(stream, internal=True)
        stream.closing = True
        self.loop.call_soon(stream.connection_lost)  # not from inside the write that failed

    def reset_stream(self, stream: StreamTransport, *, internal: bool) -> None:
        """Cut a stream whose response cannot be completed (RST_STREAM)."""
        if stream.ended or self.closed:
            return
        code = h2.errors.ErrorCodes.INTERNAL_ERROR if internal else h2.errors.ErrorCodes.CANCEL
        stream.ended = True
        try:
            self.h2.reset_stream(stream.stream_id, code)
        except h2.exceptions.StreamClosedError:
            pass
        self.streams.pop(stream.stream_id, None)
        self._give_back(stream)
        self._write_out()
        self._maybe_idle()

    def acknowledge(self, stream: StreamTransport, length: int) -> None:
        """Body bytes the stream's ClientConnection took: the client may send as many more."""
        if length and not self.closed:
            self._acknowledge(stream.stream_id, length)
            self._write_out()

    # -- the router's calls -----------------------------------------------------------

    def check_timeouts(self, now: float) -> None:
        if self.closed or self.streams:
            return
        router = self.router
        limit = router.keepalive_timeout if self.opened else router.header_timeout
        if now - self.idle_since > limit:
            self._terminate(h2.errors.ErrorCodes.NO_ERROR)

    def go_away(self) -> None:
        """Shutdown: GOAWAY naming the last stream taken; those finish, later ones are refused.

        The frame is written directly: the library's close_connection() would also end the
        streams still answering.
        """
        if self.closed or self.going_away:
            return
        self.going_away = True
        frame = GoAwayFrame(0)
        frame.last_stream_id = self.last_stream_id
        frame.error_code = h2.errors.ErrorCodes.NO_ERROR
        self._write_out()
        self.transport.write(frame.serialize())
        if not self.streams:
            self._close()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()

    # -- internals --------------------------------------------------------------------

    def _flush(self, stream: StreamTransport) -> None:
        """Send what the client's flow-control windows allow of a stream's response."""
        if stream.ended or self.closed:
            return
        h2_connection = self.h2
        stream_id = stream.stream_id
        pending = stream.pending
        while pending:
            window = min(
                h2_connection.local_flow_control_window(stream_id),
                h2_connection.max_outbound_frame_size,
            )
            if window <= 0:
                break
            data = pending[0]
            if len(data) > window:
                pending[0] = data[window:]
                data = data[:window]
            else:
                pending.popleft()
            stream.pending_bytes -= len(data)
            h2_connection.send_data(stream_id, data)
        if not pending and stream.end_pending:
            if stream.trailers:
                h2_connection.send_headers(stream_id, stream.trailers, end_stream=True)
            else:
                h2_connection.end_stream(stream_id)
            self._stream_done(stream)
            return
        stream.update_writing()

    def _stream_done(self, stream: StreamTransport) -> None:
        """The response ended: the stream leaves (a request body still coming is refused)."""
        stream.ended = True
        stream.response_done = True
        self.streams.pop(stream.stream_id, None)
        if stream.request_open:
            # RFC 9113 section 8.1: a complete response may stop the rest of the request.
            stream.request_open = False
            try:
                self.h2.reset_stream(stream.stream_id, h2.errors.ErrorCodes.NO_ERROR)
            except h2.exceptions.StreamClosedError:
                pass
        self._give_back(stream)
        self._maybe_idle()

    def _give_back(self, stream: StreamTransport) -> None:
        """The connection window of body bytes held for a stream that will not read them."""
        held = stream.held_flow()
        if held and not self.closed:
            self._acknowledge(stream.stream_id, held)

    def _acknowledge(self, stream_id: int, length: int) -> None:
        if length:
            try:
                self.h2.acknowledge_received_data(length, stream_id)
            except h2.exceptions.ProtocolError:
                pass

    def _maybe_idle(self) -> None:
        if not self.streams:
            self.idle_since = self.loop.time()
            if self.going_away:
                self._close()

    def _answer_error(self, stream_id: int, status: int, message: str, ended: bool) -> None:
        """The router's own answer to a request it cannot translate (as error_response)."""
        stream = StreamTransport(
            self, stream_id, is_head=False, chunked_body=False, request_open=not ended
        )
        self.streams[stream_id] = stream
        body = message.encode() + b"\n"
        headers = [
            (b":status", b"%d" % status),
            (b"content-type", b"text/plain; charset=utf-8"),
            (b"content-length", b"%d" % len(body)),
        ]
        stream.headers_sent = stream.response_done = True
        self.send_headers(stream, headers, end_stream=False)
        self.send_data(stream, body, end_stream=True)

    def _write_out(self) -> None:
        data = self.h2.data_to_send()
        if data and not self.closed and not self.transport.is_closing():
            self.transport.write(data)

    def _terminate(self, code: int) -> None:
        """GOAWAY with `code` and close: a protocol error, an attack, or an idle connection."""
        try:
            self.h2.close_connection(error_code=code, last_stream_id=self.last_stream_id)
        except h2.exceptions.ProtocolError:
            pass
        self._write_out()
        self._close()

    def _close(self) -> None:
        if not self.closed:
            self._write_out()
            self.closed = True
            self.transport.close()
