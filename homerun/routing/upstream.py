"""Keep-alive connections to instances, pooled per instance: each carries one exchange at a
time and reads its response back to the client."""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, cast

import httptools

from homerun.routing._http import HOP_BY_HOP, UPSTREAM_FULL, without_named
from homerun.routing.throttler import Endpoint

if TYPE_CHECKING:
    from homerun.routing.exchange import Exchange
    from homerun.routing.proxy import Router

logger = logging.getLogger(__name__)


class _InvalidResponse(Exception):
    """The instance answered in a way no request of ours asked for."""


def take_idle(endpoint: Endpoint) -> UpstreamConnection | None:
    idle = endpoint.idle_connections
    while idle:
        # The most recently used first: the least likely to have hit the app's keep-alive timeout.
        upstream: UpstreamConnection = idle.pop()
        upstream.idle = False
        if not upstream.closed:
            return upstream
    return None


class UpstreamConnection(asyncio.Protocol):
    """A keep-alive connection to one instance: one exchange at a time, then back to the pool."""

    def __init__(self, router: Router, endpoint: Endpoint) -> None:
        # Per-connection state
        self.router = router
        self.endpoint = endpoint
        self.transport = cast(asyncio.Transport, None)
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: Exchange | None = None
        self.reused = False  # the current exchange took it from the pool
        self.idle = False  # in endpoint.idle_connections
        self.closed = False
        self.reading_paused = False
        self.tunnelling = False

        # Per-response state
        self.received_any = False
        # Bytes for the client, written once per read: a small response's head and body
        # leave in one write rather than two.
        self.to_client: list[bytes] = []
        self.reason = b""
        # Forwarded headers as name, ": ", value, CRLF: joined once, never formatted one by one.
        self.header_pieces: list[bytes] = []
        self.connection_options: bytes | None = None
        self.upgrade_protocol = b""
        self.has_content_length = False
        self.is_chunked = False
        self.interim = False
        self.rechunk = False
        self.body_until_eof = False
        self.keep_alive = False

    # -- asyncio.Protocol -----------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.router.upstreams.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.router.upstreams.discard(self)
        if self.idle:
            self.idle = False
            try:
                self.endpoint.idle_connections.remove(self)
            except ValueError:
                pass
        exchange = self.exchange
        if exchange is None:
            return
        if self.tunnelling:
            exchange.finish(reuse_upstream=False, close_client=True)
        elif exchange.response_started:
            if self.body_until_eof and exc is None:
                self._response_complete()  # the close is how this response ends
            else:
                exchange.finish(reuse_upstream=False, close_client=True)  # truncated
        elif (
            self.reused
            and not self.received_any
            and not exchange.has_body
            and not exchange.is_upgrade
            and not exchange.retried
        ):
            self.exchange = None
            exchange.retry()
        else:
            exchange.instance_lost()

    def eof_received(self) -> None:
        # The transport closes itself and connection_lost() follows in a later callback; until
        # then this connection must not be taken from the pool.
        self.closed = True

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if exchange is None:
            # An idle connection has nothing to say; whatever this is, do not reuse it.
            self.abort()
            return
        if self.tunnelling:
            exchange.client.write(data)
            return
        if not self.received_any:
            self.received_any = True
            lease = exchange.lease
            if lease is not None and (
                lease.waited_since is not None or lease.endpoint.limiter is not None
            ):
                # A request that queued: its cold-start latency; --concurrency auto: the
                # instance's latency, which its limit follows.
                lease.first_byte()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.flush()
            early_bytes = data[upgrade.args[0] :]
            if early_bytes:
                exchange.client.write(early_bytes)
            return
        except httptools.HttpParserError as error:
            if isinstance(error, httptools.HttpParserCallbackError) and not isinstance(
                error.__context__, _InvalidResponse
            ):
                logger.error("proxy bug while reading a response", exc_info=error.__context__)
            self.flush()
            if self.exchange is not None:
                self.exchange.fail(502, "the instance sent an invalid response")
            else:
                self.abort()
            return
        if self.to_client:
            self.flush()

    def pause_writing(self) -> None:
        # The instance is not reading the request body as fast as the client sends it.
        if self.exchange is not None:
            self.exchange.client.pause_reading(UPSTREAM_FULL)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client.resume_reading(UPSTREAM_FULL)

    # -- httptools callbacks --------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.exchange is None:
            raise _InvalidResponse("a response nobody asked for")
        self.reason = b""
        self.header_pieces = []
        self.connection_options = None
        self.upgrade_protocol = b""
        self.has_content_length = False
        self.is_chunked = False
        self.rechunk = False
        self.body_until_eof = False

    def on_status(self, reason: bytes) -> None:
        self.reason += reason

    def on_header(self, name: bytes, value: bytes) -> None:
        lower_name = name.lower()
        if lower_name in HOP_BY_HOP:
            if lower_name == b"connection":
                options = self.connection_options
                self.connection_options = value if options is None else options + b"," + value
            elif lower_name == b"transfer-encoding":
                self.is_chunked = value.rstrip().lower().endswith(b"chunked")
            elif lower_name == b"upgrade":
                self.upgrade_protocol = value
            return
        if lower_name == b"content-length":
            self.has_content_length = True
        self.header_pieces += (name, b": ", value, b"\r\n")

    def on_headers_complete(self) -> None:
        exchange = self.exchange
        if exchange is None:
            return
        status = self.parser.get_status_code()
        header_pieces = self.header_pieces
        if self.connection_options is not None:
            header_pieces = without_named(header_pieces, self.connection_options)
        headers = b"".join(header_pieces)
        status_line = b"HTTP/1.1 %d %s\r\n" % (status, self.reason)
        if status < 200 and status != 101:
            # 100 Continue, 103 Early Hints: the final response follows on this connection.
            # HTTP/1.0 clients do not know interim responses (RFC 9110 section 15.2).
            self.interim = True
            if not exchange.http_10:
                self.to_client.append(b"%s%s\r\n" % (status_line, headers))
            return
        self.interim = False
        if status == 101:
            if not exchange.is_upgrade:
                raise _InvalidResponse("101 Switching Protocols to a request that did not ask")
            self.tunnelling = True
            exchange.response_started = True
            exchange.status = 101
            self.to_client.append(
                b"%s%sconnection: upgrade\r\nupgrade: %s\r\n\r\n"
                % (status_line, headers, self.upgrade_protocol)
            )
            return
        exchange.response_started = True
        exchange.status = status
        has_body = not (exchange.is_head or status == 204 or status == 304)
        framing = b""
        if has_body and not self.has_content_length:
            if exchange.http_10:
                exchange.close_client = True  # the close marks the end of the body
            else:
                framing = b"transfer-encoding: chunked\r\n"
                self.rechunk = True
        self.body_until_eof = has_body and not self.has_content_length and not self.is_chunked
        self.keep_alive = self.parser.should_keep_alive()
        if exchange.close_client:
            connection = b"connection: close\r\n"
        elif exchange.http_10:
            connection = b"connection: keep-alive\r\n"
        else:
            connection = b""
        self.to_client.append(b"%s%s%s%s\r\n" % (status_line, headers, framing, connection))
        if exchange.is_head:
            # httptools cannot be told that a response to HEAD has no body and would wait for
            # Content-Length bytes that never come: the next response gets a fresh parser.
            self.parser = httptools.HttpResponseParser(self)
            self._response_complete()

    def on_body(self, body: bytes) -> None:
        if self.exchange is None:
            return
        if self.rechunk:
            self.to_client.append(b"%x\r\n%s\r\n" % (len(body), body))
        else:
            self.to_client.append(body)

    def on_message_complete(self) -> None:
        if self.exchange is None or self.interim or self.tunnelling:
            return
        self._response_complete()

    # -- what exchanges call --------------------------------------------------------------

    def attach(self, exchange: Exchange, reused: bool) -> None:
        self.exchange = exchange
        self.reused = reused
        self.received_any = False
        if exchange.client.writing_paused:
            self.pause_reading()

    def detach(self, reuse: bool) -> None:
        if self.to_client:
            self.flush()
        self.exchange = None
        if reuse and not self.closed and not self.endpoint.draining:
            # Reading goes on while idle, so that a close by the instance is noticed.
            if self.reading_paused:
                self.resume_reading()
            self.idle = True
            self.endpoint.idle_connections.append(self)
        else:
            self.abort()

    def write(self, data: bytes) -> None:
        # is_closing() covers the moment between a reset by the peer and connection_lost(),
        # when uvloop raises on a write.
        if not self.closed and not self.transport.is_closing():
            self.transport.write(data)

    def flush(self) -> None:
        to_client = self.to_client
        exchange = self.exchange
        if to_client and exchange is not None:
            data = to_client[0] if len(to_client) == 1 else b"".join(to_client)
            to_client.clear()
            exchange.response_bytes += len(data)
            exchange.client.write(data)

    def pause_reading(self) -> None:
        if not self.reading_paused and not self.closed:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self.closed:
            self.reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        """Close an idle connection (the throttler does this for an instance that stopped)."""
        if not self.closed:
            self.closed = True
            self.transport.close()

    def abort(self) -> None:
        # The app sees the disconnect at once (uvicorn cancels the request) instead of
        # finishing work nobody will read.
        if not self.closed:
            self.closed = True
            self.transport.abort()

    # -- internals ------------------------------------------------------------------------

    def _response_complete(self) -> None:
        exchange = self.exchange
        assert exchange is not None
        if self.rechunk:
            self.to_client.append(b"0\r\n\r\n")
        self.flush()
        # A request body still coming in would be read as the next request: close instead.
        exchange.finish(
            reuse_upstream=self.keep_alive and exchange.request_complete,
            close_client=exchange.close_client or not exchange.request_complete,
        )
