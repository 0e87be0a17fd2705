"""One client's connection: parses its requests with httptools, checks and rewrites their
heads, and answers them in the order they came."""

from __future__ import annotations

import asyncio
import logging
import re
from collections import deque
from typing import TYPE_CHECKING, cast

import httptools

from homerun.routing._h2c import after_preface, upgrade_request
from homerun.routing._hosts import port_refusal, split_absolute
from homerun.routing._http import (
    BODY_BUFFER_FULL,
    HOP_BY_HOP,
    PIPELINED,
    UNPARSABLE,
    UPSTREAM_FULL,
)
from homerun.routing.exchange import Exchange
from homerun.routing.forwarding import HEAD_FORMATS, replace_host, upstream_head
from homerun.routing.types import RouteError

if TYPE_CHECKING:
    from homerun.routing.proxy import Router

logger = logging.getLogger(__name__)

# Request headers that need more than passing through: read, rewritten, or dropped.
_REQUEST_HEADERS_OF_INTEREST = HOP_BY_HOP | {
    b"host", b"content-length", b"x-forwarded-for", b"x-forwarded-proto", b"forwarded",
    b"traceparent", b"x-cloud-trace-context", b"user-agent", b"authorization",
    b"x-serverless-authorization", b"expect",
}  # fmt: skip
# An Authorization header given twice (it is a singleton field, RFC 9110 section 11.6.2); a
# header value cannot hold NUL, so this never collides with a real one.
_DUPLICATE = b"\0"

# How long a connection closed in the middle of a request body still swallows that body.
_LINGER_SECONDS = 2.0
# llhttp accepts headers without end; past this a client gets 431 (nginx allows 4 x 8 KiB).
# httptools hands over a header only once its value ends, so a value that never ends is caught
# by the coarser count of bytes read while a head is incomplete (a read is at most 256 KiB).
_MAX_REQUEST_HEAD_BYTES = 64 * 1024
_MAX_INCOMPLETE_HEAD_READ_BYTES = 1024 * 1024
_HEAD_TOO_LARGE = "request line and headers over 64 KiB, or over 100 header fields"
_MAX_HEADER_COUNT = 100
# A longer request target gets 414 (nginx's large_client_header_buffers holds 8 KiB).
_MAX_URL_BYTES = 8 * 1024
# What a Host header may hold: a DNS name or an IP literal, and a port.
_VALID_HOST = re.compile(rb"^(?:[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")


class _UrlTooLong(Exception):
    """A request target past _MAX_URL_BYTES."""


class _HeadTooLarge(Exception):
    """A request line and headers past _MAX_REQUEST_HEAD_BYTES."""


class ClientConnection(asyncio.Protocol):
    """One client's connection: parses its requests and answers them in the order they came."""

    def __init__(
        self, router: Router, protocol: bytes = b"HTTP/1.1", scheme: bytes = b"http"
    ) -> None:
        # Per-connection state
        self.router = router
        self.protocol = protocol  # what the client spoke, for the request log (HTTP/2: a stream)
        self.scheme = scheme  # https on the router's TLS port
        self.head_format = HEAD_FORMATS[scheme]
        self.loop = asyncio.get_running_loop()
        self.transport = cast(asyncio.Transport, None)
        self.parser = httptools.HttpRequestParser(self)
        self.client_address = b""  # as X-Forwarded-For names it
        self.forwarded_node = b""  # as Forwarded names it: for=1.2.3.4 or for="[::1]"
        self.node_host = b""  # the Host of the last request, and its Forwarded element
        self.node = b""
        self.exchanges: deque[Exchange] = deque()  # the first is in flight, the rest pipelined
        self.tunnel: Exchange | None = None  # after an upgrade request the bytes are not HTTP
        self.read_pauses = 0
        self.held_back = False  # reading was paused since the last sweep (not the client's fault)
        self.writing_paused = False
        self.writing_paused_at = 0.0  # since then the client has taken none of its response
        self.closed = False
        self.lingering: asyncio.TimerHandle | None = None
        self.idle_since = self.loop.time()  # no request on it since then
        self.head_started = 0.0  # while a request's line and headers come in
        self.header_count = 0
        self.requests = 0  # heads read on this connection
        self.caller_known = False  # whether self.caller was looked up (once per connection)
        self.caller: str | None = None
        # An `Upgrade: h2c` request taken: (HTTP2-Settings, the request as HTTP/2 headers).
        self.h2c_upgrade: tuple[bytes, list[tuple[bytes, bytes]]] | None = None

        # Per-request state, while the parser reads a request
        self.parsing: Exchange | None = None  # from the end of the head to the end of the body
        self.url = b""
        # Forwarded headers as name, ": ", value, CRLF: joined once, never formatted one by one.
        self.header_pieces: list[bytes] = []
        self.in_head = False
        self.head_bytes = 0
        self.head_read_bytes = 0
        self.host: bytes | None = None
        self.host_count = 0
        self.content_length = 0
        self.chunked = False
        self.connection_options: bytes | None = None
        self.upgrade_protocol = b""
        self.forwarded_for: bytes | None = None
        self.forwarded: bytes | None = None
        self.traceparent: bytes | None = None
        self.cloud_trace: bytes | None = None  # X-Cloud-Trace-Context
        self.trace = b""  # the traceparent forwarded (routing/trace.py), for the request log
        self.user_agent = b""
        self.authorization: bytes | None = None
        self.serverless_authorization: bytes | None = None
        self.expect_continue = False

        # Per-body state, while a request body comes in (the sweep's view of its progress)
        self.body_since = 0.0  # when it began, or when the router last held the client back
        self.body_base = 0  # bytes received by then
        self.body_seen = 0  # bytes received at the last sweep that saw progress
        self.body_progress_at = 0.0  # and when that was

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        address = peer[0] if isinstance(peer, tuple) else "unknown"
        self.client_address = address.encode()
        self.forwarded_node = (
            b'for="[%s]"' % self.client_address if ":" in address else b"for=" + self.client_address
        )
        self.router.clients.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.router.clients.discard(self)
        if self.lingering is not None:
            self.lingering.cancel()
        self._abort_exchanges()

    def data_received(self, data: bytes) -> None:
        if self.tunnel is not None:
            self.tunnel.send(data)
            return
        if self.closed:
            return
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            early_bytes = data[upgrade.args[0] :]
            http2_bytes = None
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, _HeadTooLarge):
                self._unparsable(431, _HEAD_TOO_LARGE)
            elif isinstance(error.__context__, _UrlTooLong):
                self._unparsable(414, f"request target over {_MAX_URL_BYTES} bytes")
            else:
                logger.error("proxy bug while reading a request", exc_info=error.__context__)
                self._unparsable(400, "malformed request")
            return
        except httptools.HttpParserError:
            http2_bytes = self._http2_preface(data)
            if http2_bytes is None:
                self._unparsable(400, "malformed request")
                return
        else:
            if self.in_head:
                self.head_read_bytes += len(data)
                if self.head_read_bytes > _MAX_INCOMPLETE_HEAD_READ_BYTES:
                    self._unparsable(431, _HEAD_TOO_LARGE)
            return
        # Another protocol takes over: outside the except clauses, so that what goes wrong in
        # it is not chained to the parser's exception.
        if http2_bytes is None:
            self._start_tunnel(early_bytes)
        else:
            self._hand_over()
            self.router.serve_http2(self.transport, http2_bytes, self.scheme)

    def pause_writing(self) -> None:
        # The client reads the response slower than the instance writes it: stop reading the
        # instance until the client catches up (or the send timeout gives up on it).
        self.writing_paused = True
        self.writing_paused_at = self.loop.time()
        upstream = self.exchanges[0].upstream if self.exchanges else None
        if upstream is not None:
            upstream.pause_reading()

    def resume_writing(self) -> None:
        self.writing_paused = False
        upstream = self.exchanges[0].upstream if self.exchanges else None
        if upstream is not None:
            upstream.resume_reading()

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        self.url = b""
        self.header_pieces = []
        self.in_head = True
        self.head_started = self.loop.time()
        self.header_count = 0
        self.head_bytes = 0
        self.head_read_bytes = 0
        self.host = None
        self.host_count = 0
        self.content_length = 0
        self.chunked = False
        self.connection_options = None
        self.upgrade_protocol = b""
        self.forwarded_for = None
        self.forwarded = None
        self.traceparent = None
        self.cloud_trace = None
        self.trace = b""
        self.user_agent = b""
        self.authorization = None
        self.serverless_authorization = None
        self.expect_continue = False

    def on_url(self, url: bytes) -> None:
        self.url += url
        if len(self.url) > _MAX_URL_BYTES:
            raise _UrlTooLong

    def on_header(self, name: bytes, value: bytes) -> None:
        self.head_bytes += len(name) + len(value)
        self.header_count += 1
        if self.head_bytes > _MAX_REQUEST_HEAD_BYTES or self.header_count > _MAX_HEADER_COUNT:
            raise _HeadTooLarge
        lower_name = name.lower()
        if lower_name not in _REQUEST_HEADERS_OF_INTEREST:
            self.header_pieces += (name, b": ", value, b"\r\n")
        elif lower_name == b"host":
            self.host = value
            self.host_count += 1
            self.header_pieces += (name, b": ", value, b"\r\n")
        elif lower_name == b"content-length":
            # llhttp has checked that it is digits and that there is only one.
            self.content_length = int(value)
            self.header_pieces += (name, b": ", value, b"\r\n")
        elif lower_name == b"transfer-encoding":
            # llhttp rejects a request whose last coding is not chunked.
            self.chunked = True
        elif lower_name == b"connection":
            options = self.connection_options
            self.connection_options = value if options is None else options + b"," + value
        elif lower_name == b"upgrade":
            self.upgrade_protocol = value
        elif lower_name == b"x-forwarded-for":
            hops = self.forwarded_for
            self.forwarded_for = value if hops is None else hops + b", " + value
        elif lower_name == b"forwarded":
            hops = self.forwarded
            self.forwarded = value if hops is None else hops + b", " + value
        elif lower_name == b"traceparent":
            self.traceparent = value  # forwarded by upstream_head, with X-Cloud-Trace-Context
        elif lower_name == b"x-cloud-trace-context":
            self.cloud_trace = value
        elif lower_name == b"user-agent":
            self.user_agent = value
            self.header_pieces += (name, b": ", value, b"\r\n")
        elif lower_name == b"authorization":
            self.authorization = value if self.authorization is None else _DUPLICATE
        elif lower_name == b"x-serverless-authorization":
            # Cloud Run's header for the ID token when the app wants Authorization for itself.
            once = self.serverless_authorization is None
            self.serverless_authorization = value if once else _DUPLICATE
        elif lower_name == b"expect":
            # 100-continue is answered by whoever reads the body first: the router for a body it
            # buffers, else the instance (on_headers_complete puts the header back).
            if value.strip().lower() == b"100-continue":
                self.expect_continue = True
            else:
                self.header_pieces += (name, b": ", value, b"\r\n")
        # keep-alive, proxy-connection, te, trailer, x-forwarded-proto: dropped

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.closed:
            return
        parser = self.parser
        router = self.router
        method = parser.get_method()
        is_upgrade = parser.should_upgrade() and method != b"CONNECT"
        has_body = self.chunked or self.content_length > 0
        if is_upgrade and self._upgrades_to_http2(method, has_body):
            return
        exchange = Exchange(
            self,
            is_head=method == b"HEAD",
            keep_alive=parser.should_keep_alive() and not is_upgrade,
            http_10=parser.get_http_version() == "1.0",
            has_body=has_body,
            chunked=self.chunked,
            is_upgrade=is_upgrade,
        )
        self.requests += 1
        if has_body:
            # A body of declared size up to the buffer is read whole before the request takes a
            # slot. A chunked one streams from its head: its size is not known, and client and
            # app may be talking both ways at once (each piece answered as it comes).
            exchange.streams_body = self.chunked or self.content_length > router.body_buffer_bytes
            if self.expect_continue:
                if exchange.streams_body:
                    self.header_pieces += (b"expect", b": ", b"100-continue", b"\r\n")
                else:
                    exchange.expects_continue = not exchange.http_10
            self.body_since = self.body_progress_at = exchange.arrival
            self.body_base = self.body_seen = 0
        host = self.host
        url = self.url
        if url[:1] != b"/" and url != b"*" and method != b"CONNECT":
            # The absolute form (GET http://svc.localhost/path): RFC 9112 section 3.2.2 has a
            # server accept it and take the host from it, ignoring any Host header.
            authority, path = split_absolute(url)
            if authority is None:
                exchange.error = (400, "the request target must be a path or an http(s) URL")
                exchange.close_client = True
            else:
                host, self.url = authority, path
                self.host_count = 1
                replace_host(self.header_pieces, authority)
        if exchange.error is not None:
            pass
        elif host is None or self.host_count > 1:
            exchange.error = (400, "the request needs exactly one Host header")
            exchange.close_client = True  # malformed: trust nothing else on this connection
        elif not _VALID_HOST.match(host):
            exchange.error = (400, "the Host header is not a host name or address")
            exchange.close_client = True
        elif method == b"CONNECT":
            exchange.error = (405, "this router does not proxy CONNECT")
            exchange.close_client = True  # the parser takes what follows for a tunnel
        elif (
            b":" in host
            and not host.endswith(router.port_suffix)
            and (refusal := port_refusal(host, router.ports)) is not None
        ):
            # The port is part of the service's URL: svc.localhost:99999 is not this router.
            exchange.error = refusal
            if refusal[0] == 400:
                exchange.close_client = True  # as for any invalid Host
        elif self.content_length > router.max_body_bytes:
            exchange.error = (413, f"request body over {router.max_body_bytes} bytes")
            exchange.close_client = True  # its body stays unread
        elif self.authorization is _DUPLICATE or self.serverless_authorization is _DUPLICATE:
            exchange.error = (400, "the request has more than one Authorization header")
        else:
            destination = router.resolve(host.decode("latin-1"))
            guard = None if isinstance(destination, RouteError) else destination.guard
            if guard is not None:
                credentials = self.serverless_authorization or self.authorization
                denial = guard(credentials, self.calling_instance)
                if denial is not None:
                    destination = denial
            if isinstance(destination, RouteError):
                document = None
                if destination.status == 404 and method in (b"GET", b"HEAD"):
                    document = router.platform_document(host, self.url)
                if document is not None:  # answered as an error is, with 200 and JSON
                    exchange.error = (200, document.decode())
                else:
                    exchange.error = (destination.status, destination.message)
            else:
                exchange.route = destination
                exchange.head = upstream_head(self, method, host, is_upgrade)
        # What the request log says of this request.
        exchange.method = method
        exchange.url = self.url
        exchange.host = host or b""
        exchange.user_agent = self.user_agent
        exchange.trace = self.trace
        exchange.request_bytes = len(self.url) + self.head_bytes
        self.parsing = exchange
        self.exchanges.append(exchange)
        if len(self.exchanges) > 1:
            self.pause_reading(PIPELINED)
        elif exchange.error is None and not exchange.has_body:
            return  # the common case: it starts at the end of its (empty) body
        self.advance()

    def on_body(self, body: bytes) -> None:
        exchange = self.parsing
        if exchange is not None:
            exchange.receive_body(body)

    def on_message_complete(self) -> None:
        exchange = self.parsing
        if exchange is None:
            return
        self.parsing = None
        exchange.request_complete = True
        if exchange.chunked:
            exchange.send(b"0\r\n\r\n")
        self.advance()

    # -- what exchanges and upstream connections call --------------------------------------

    def write(self, data: bytes) -> None:
        # is_closing() covers the moment between a reset by the peer and connection_lost(),
        # when uvloop raises on a write.
        if not self.closed and not self.transport.is_closing():
            self.transport.write(data)

    def pause_reading(self, reason: int) -> None:
        """Stop reading from the client for `reason` (one of the bits in _http)."""
        if not self.read_pauses and not self.closed:
            self.transport.pause_reading()
        self.read_pauses |= reason
        self.held_back = True

    def resume_reading(self, reasons: int) -> None:
        """Drop `reasons`; reading resumes once no reason to pause is left."""
        if self.read_pauses & reasons:
            self.read_pauses &= ~reasons
            if not self.read_pauses and not self.closed:
                self.transport.resume_reading()

    def advance(self) -> None:
        """Start the oldest request once it can start; answer the router's own errors at once.

        A request starts when its body is complete, or at its head when it has a body to stream
        (one too large for the buffer). Pipelined requests wait their turn, so that responses go
        out in request order.
        """
        exchanges = self.exchanges
        while exchanges and not self.closed:
            exchange = exchanges[0]
            if exchange.started:
                break
            if exchange.error is None:
                if exchange.request_complete or exchange.streams_body:
                    exchange.start()
                elif exchange.expects_continue:
                    # The client waits for this before it sends the body the router buffers.
                    exchange.expects_continue = False
                    self.write(b"HTTP/1.1 100 Continue\r\n\r\n")
                break
            if not (exchange.request_complete or exchange.has_body):
                break
            exchanges.popleft()
            if exchange.answer_error():
                self.close()
                return
        if self.read_pauses and len(exchanges) <= 1:
            self.resume_reading(PIPELINED)

    def exchange_finished(self, exchange: Exchange, close: bool) -> None:
        if self.closed:
            return
        if close:
            self.close()
            return
        if self.exchanges and self.exchanges[0] is exchange:
            self.exchanges.popleft()
        if self.tunnel is exchange:
            self.tunnel = None
        if self.exchanges:
            self.resume_reading(UPSTREAM_FULL | BODY_BUFFER_FULL)
            self.advance()
            return
        self.idle_since = self.loop.time()
        if self.read_pauses:
            self.resume_reading(UPSTREAM_FULL | BODY_BUFFER_FULL | PIPELINED)

    def check_timeouts(self, now: float) -> None:
        if self.writing_paused and now - self.writing_paused_at > self.router.send_timeout:
            self._cut_off_reader()
            return
        if self.closed or self.tunnel is not None:
            return
        if self.in_head:
            if now - self.head_started > self.router.header_timeout:
                # A head this slow is an attack or a broken client: answer and hang up.
                self._unparsable(408, "request headers not received in time")
        elif self.parsing is not None:
            self._check_body(now, self.parsing)
        elif not self.exchanges:
            # A connection that never sent a request gets the header timeout, not keep-alive's.
            limit = self.router.keepalive_timeout if self.requests else self.router.header_timeout
            if now - self.idle_since > limit:
                self.close()

    def calling_instance(self) -> str | None:
        """The homerun instance that opened this connection (its member), or None."""
        if not self.caller_known:
            self.caller_known = True
            identify = self.router.identify_caller
            transport = self.transport
            peer = transport.get_extra_info("peername")
            server = transport.get_extra_info("sockname")
            if identify is not None and isinstance(peer, tuple) and isinstance(server, tuple):
                self.caller = identify((peer[0], peer[1]), (server[0], server[1]))
        return self.caller

    def close(self) -> None:
        """Close once what was written has gone out."""
        if self.closed:
            return
        self.closed = True
        transport = self.transport
        unread_input = self.parsing is not None or self.read_pauses & UNPARSABLE
        if unread_input and not transport.is_closing() and transport.can_write_eof():
            # The client may still be sending what nobody will read. Closing now would make the
            # kernel answer its next bytes with a reset, which can destroy the response still
            # in flight (the 413 it should see). As nginx does: send FIN, then discard what
            # comes for a while (data_received drops it) before the real close.
            transport.write_eof()
            if self.read_pauses:
                self.read_pauses = 0
                transport.resume_reading()
            self.lingering = self.loop.call_later(_LINGER_SECONDS, transport.abort)
        else:
            self.transport.close()
        self._abort_exchanges()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.transport.abort()
        self._abort_exchanges()

    # -- internals ------------------------------------------------------------------------

    def _start_tunnel(self, early_bytes: bytes) -> None:
        # The parser stopped after an upgrade request; what follows is the new protocol, sent
        # on once the instance agrees (or dropped with the connection when it does not).
        if self.h2c_upgrade is not None and not self.closed:
            settings, request = self.h2c_upgrade
            self._hand_over()
            self.router.upgrade_to_http2(self.transport, settings, request, early_bytes)
            return
        if self.closed or not self.exchanges:
            return
        self.tunnel = self.exchanges[-1]
        if early_bytes:
            self.tunnel.send(early_bytes)

    def _http2_preface(self, data: bytes) -> bytes | None:
        """A client with prior knowledge of HTTP/2 (h2c): the bytes for the HTTP/2 side."""
        if self.requests or self.exchanges or not self.in_head or self.url != b"*":
            return None
        return after_preface(data, self.head_read_bytes)

    def _upgrades_to_http2(self, method: bytes, has_body: bool) -> bool:
        """Take an `Upgrade: h2c` request (RFC 7540 section 3.2): its response comes as HTTP/2
        on stream 1. One with a body, or behind other requests, stays HTTP/1.1 (the server
        may ignore an upgrade); so does one over TLS, where ALPN chooses (RFC 9113 3.2)."""
        if self.upgrade_protocol.strip().lower() != b"h2c" or has_body or self.exchanges:
            return False
        duplicate = self.authorization is _DUPLICATE or self.serverless_authorization is _DUPLICATE
        if self.scheme != b"http" or self.host is None or self.host_count != 1 or duplicate:
            return False
        taken_out = (
            (b"x-forwarded-for", self.forwarded_for),
            (b"forwarded", self.forwarded),
            (b"authorization", self.authorization),
            (b"x-serverless-authorization", self.serverless_authorization),
        )
        forwarded = [(name, value) for name, value in taken_out if value is not None]
        upgrade = upgrade_request(method, self.url, self.host, self.header_pieces, forwarded)
        if upgrade is None:
            return False
        self.h2c_upgrade = upgrade
        self.parsing = None
        return True

    def alpn_http2(self) -> None:
        """On the TLS port, a client that chose h2 by ALPN: HTTP/2 from its first byte."""
        self._hand_over()
        self.router.serve_http2(self.transport, b"", self.scheme)

    def _hand_over(self) -> None:
        """This connection speaks HTTP/2 from now on: another protocol object takes it."""
        self.closed = True
        self.parsing = None
        self.router.clients.discard(self)
        if self.read_pauses:
            self.read_pauses = 0
            self.transport.resume_reading()

    def _check_body(self, now: float, exchange: Exchange) -> None:
        """408 for a body that stalls for the body timeout, or comes slower than the minimum
        rate allows: a body of N bytes gets body_timeout + N / body_min_rate seconds."""
        if self.read_pauses or self.held_back:
            # The router held the client back (a full instance or buffer, a request before it):
            # time it was not let to send is not held against it, so its clocks start again.
            self.held_back = False
            self.body_since = self.body_progress_at = now
            self.body_base = self.body_seen = exchange.body_received
            return
        if exchange.finished or not self.exchanges or self.exchanges[0] is not exchange:
            return  # answered already, or waiting behind another request
        router = self.router
        received = exchange.body_received
        if received != self.body_seen:
            self.body_seen = received
            self.body_progress_at = now
        elif now - self.body_progress_at > router.body_timeout:
            exchange.reject_slow_body(f"no request body bytes came for {router.body_timeout:g} s")
            return
        if router.body_min_rate > 0:
            allowed = router.body_timeout + (received - self.body_base) / router.body_min_rate
            if now - self.body_since > allowed:
                exchange.reject_slow_body(
                    f"the request body came slower than {router.body_min_rate:g} bytes/s"
                )

    def _cut_off_reader(self) -> None:
        """The client has taken nothing for the send timeout while the router holds more for
        it: end its requests (their slots go back, the instance connections mid-response are
        closed) and drop the connection. A close would wait for a buffer that never drains."""
        self.closed = True
        self.transport.abort()
        self._abort_exchanges()

    def _unparsable(self, status: int, message: str) -> None:
        """Answer a request that cannot be read, then close: nothing after it can be parsed."""
        self.pause_reading(UNPARSABLE)
        exchange = self.parsing
        if exchange is not None:
            self.parsing = None
            exchange.fail(400, "malformed request body", close=True)
            self.advance()  # one still reading its body into the buffer is answered here
            return
        exchange = Exchange(
            self, is_head=False, keep_alive=False, http_10=False, has_body=False,
            chunked=False, is_upgrade=False,
        )  # fmt: skip
        exchange.error = (status, message)
        exchange.request_complete = True
        self.exchanges.append(exchange)
        self.advance()

    def _abort_exchanges(self) -> None:
        self.parsing = None
        exchanges, self.exchanges = self.exchanges, deque()
        for exchange in exchanges:
            exchange.abort()
