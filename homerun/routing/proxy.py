"""The data plane: an HTTP/1.1 reverse proxy on asyncio protocols and httptools.

Each client connection parses its requests; each request becomes an `_Exchange` that takes a
slot from its revision's throttler, borrows a pooled keep-alive connection to the chosen
instance and then moves bytes both ways from protocol callbacks, so bodies stream without being
held whole. Only the two steps that must wait (a slot, a new connection) run in a task.

    router = Router(resolve, max_body_bytes=32 * 1024 * 1024)
    await router.start("127.0.0.1", 8080)      # binds and listens
    ...
    await router.close()                       # stops listening, closes client and upstream conns
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import socket
import time
from collections import deque
from collections.abc import Callable
from functools import partial
from http import HTTPStatus
from typing import NamedTuple, cast

import httptools

from homerun.routing.throttler import Endpoint, Lease, RevisionUnavailable, Throttler

logger = logging.getLogger(__name__)


class Route(NamedTuple):
    service: str
    revision: str
    throttler: Throttler
    timeout_seconds: float
    # Who may call: None lets everyone through (a public service, ingress all) at the cost of
    # this one test; else guard(authorization, caller) returns a RouteError to refuse.
    guard: Guard | None = None


class RouteError(NamedTuple):
    status: int
    message: str


Resolver = Callable[[str], Route | RouteError]
Address = tuple[str, int]
# guard(the Authorization header's value or None, caller) -> None to let the request through.
# caller() names the homerun instance at the other end of the connection, or None.
Guard = Callable[[bytes | None, Callable[[], str | None]], RouteError | None]

# One finished request, as the router hands it to observers (logs, metrics). A plain tuple:
# building it is the only cost the router pays per request; the observer does the rest later.
#   (arrival, finished) perf_counter times, method, url, host, status, request bytes,
#   response bytes, user agent, client address, HTTP/1.0?, traceparent, service, revision,
#   instance
RequestRecord = tuple[
    float, float, bytes, bytes, bytes, int, int, int, bytes, bytes, bool, bytes,
    str | None, str | None, str | None,
]  # fmt: skip


# Hop-by-hop headers (RFC 9110 section 7.6.1) describe one connection, so they stop here; the
# router frames bodies itself and says itself whether a connection stays open.
_HOP_BY_HOP = frozenset(
    (b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer",
     b"transfer-encoding", b"upgrade")
)  # fmt: skip
# Connection options that name no header, and headers a Connection option may not remove
# (dropping Content-Length would leave the instance reading the body as the next request).
_CONNECTION_KEYWORDS = frozenset((b"close", b"keep-alive", b"upgrade"))
_NEVER_DROPPED = frozenset((b"host", b"content-length"))
# Request headers that need more than passing through: read, rewritten, or dropped.
_REQUEST_HEADERS_OF_INTEREST = _HOP_BY_HOP | {
    b"host", b"content-length", b"x-forwarded-for", b"x-forwarded-proto", b"forwarded",
    b"traceparent", b"user-agent", b"authorization", b"x-serverless-authorization",
}  # fmt: skip
# An Authorization header given twice (it is a singleton field, RFC 9110 section 11.6.2); a
# header value cannot hold NUL, so this never collides with a real one.
_DUPLICATE = b"\0"

# Reasons to stop reading from a client, as bits; reading resumes once none is left.
_UPSTREAM_FULL = 1  # the instance is not taking the request body as fast as it arrives
_BODY_BUFFER_FULL = 2  # body bytes arrived before the connection to an instance did
_PIPELINED = 4  # a later request waits behind the one in flight
_UNPARSABLE = 8  # a malformed request: nothing after it can be read as HTTP

# Body bytes held while a request waits for a slot or a connection. 256 KiB is about one socket
# read, so a small upload still leaves with its request head in a single write.
_BODY_BUFFER_LIMIT = 256 * 1024
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
# A client gets this long to send a request's line and headers (slowloris sends a byte at a
# time to hold connections open), and a keep-alive connection this long between requests.
HEADER_TIMEOUT_SECONDS = 10.0
KEEPALIVE_TIMEOUT_SECONDS = 75.0  # nginx's keepalive_timeout
_SWEEP_SECONDS = 1.0
# What a Host header may hold: a DNS name or an IP literal, and a port.
_VALID_HOST = re.compile(rb"^(?:[A-Za-z0-9_.\-]+|\[[0-9A-Fa-f:.]+\])(?::[0-9]{1,5})?$")
# A refused connection to an instance is tried again after these pauses (an instance that
# exited leaves routing within milliseconds, when the supervisor sees its exit).
_REFUSED_RETRY_SECONDS = (0.02, 0.05, 0.1)
# Request timeouts fire on ticks of this length, up to one tick late.
_DEADLINE_TICK = 0.1

_REASONS = {status.value: status.phrase.encode() for status in HTTPStatus}
_random_bits = random.getrandbits
_precise_clock = time.perf_counter


def _error_response(status: int, message: str, *, close: bool, with_body: bool) -> bytes:
    """A short text/plain response that the router writes itself."""
    body = message.encode() + b"\n"
    return b"HTTP/1.1 %d %s\r\n%s%s%s\r\n%s" % (
        status,
        _REASONS.get(status, b"Error"),
        b"content-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n" % len(body),
        # The router's own 401s all ask for an ID token (RFC 6750).
        b"www-authenticate: Bearer\r\n" if status == 401 else b"",
        b"connection: close\r\n" if close else b"",
        body if with_body else b"",
    )


def _unchanged(value: bytes) -> bytes:
    return value


def _without_named(header_pieces: list[bytes], options: bytes) -> list[bytes]:
    """Drop the headers that a Connection header names: they are hop-by-hop as well."""
    if options.lower() in _CONNECTION_KEYWORDS:
        return header_pieces  # what nearly every app sends: one keyword, no header named
    named = {option.strip().lower() for option in options.split(b",")}
    named -= _CONNECTION_KEYWORDS | _NEVER_DROPPED
    if not named:
        return header_pieces
    kept = []
    for start in range(0, len(header_pieces), 4):
        if header_pieces[start].lower() not in named:
            kept += header_pieces[start : start + 4]
    return kept


def _split_absolute(url: bytes) -> tuple[bytes | None, bytes]:
    """`http://host:port/path?q` -> (b"host:port", b"/path?q"); (None, url) if not an URL."""
    scheme, separator, rest = url.partition(b"://")
    if not separator or scheme.lower() not in (b"http", b"https"):
        return None, url
    cut = len(rest)
    for delimiter in (b"/", b"?"):
        position = rest.find(delimiter)
        if position != -1:
            cut = min(cut, position)
    authority, path = rest[:cut], rest[cut:]
    if not authority or b"@" in authority:
        return None, url
    return authority, path if path.startswith(b"/") else b"/" + path


def _quoted(value: bytes) -> bytes:
    """An RFC 7239 quoted-string: a host with a port is not a token."""
    return b'"%s"' % value.replace(b"\\", b"\\\\").replace(b'"', b'\\"')


class _InvalidResponse(Exception):
    """The instance answered in a way no request of ours asked for."""


class _UrlTooLong(Exception):
    """A request target past _MAX_URL_BYTES."""


class _HeadTooLarge(Exception):
    """A request line and headers past _MAX_REQUEST_HEAD_BYTES."""


class _Deadlines:
    """Request timeouts grouped by tick: one event loop timer per tick rather than per request.

    Under uvloop each call_at arms a libuv timer; arming and cancelling one per request costs
    about 3 µs, a tenth of what the router spends on a small request. A timeout of seconds
    that fires up to 100 ms late loses nothing.
    """

    def __init__(self) -> None:
        self._waiting: dict[int, set[_Exchange]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}

    def add(self, loop: asyncio.AbstractEventLoop, exchange: _Exchange, deadline: float) -> int:
        """Call exchange.on_timeout() at the first tick after `deadline`; returns the tick."""
        tick = math.ceil(deadline / _DEADLINE_TICK)
        exchanges = self._waiting.get(tick)
        if exchanges is None:
            exchanges = self._waiting[tick] = set()
            self._timers[tick] = loop.call_at(tick * _DEADLINE_TICK, self._expire, tick)
        exchanges.add(exchange)
        return tick

    def discard(self, tick: int, exchange: _Exchange) -> None:
        exchanges = self._waiting.get(tick)
        if exchanges is not None:
            exchanges.discard(exchange)

    def close(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self._waiting.clear()

    def _expire(self, tick: int) -> None:
        del self._timers[tick]
        for exchange in self._waiting.pop(tick):
            exchange.on_timeout()


class Router:
    """Listens for clients and sends each request to an instance of the revision its Host names."""

    def __init__(
        self,
        resolve: Resolver,
        *,
        max_body_bytes: int = 32 * 1024 * 1024,
        on_request: Callable[[RequestRecord], None] | None = None,
        header_timeout: float = HEADER_TIMEOUT_SECONDS,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT_SECONDS,
        identify_caller: Callable[[Address, Address], str | None] | None = None,
        forwarded_authorization: Callable[[bytes], bytes] | None = None,
    ) -> None:
        self.resolve = resolve
        # identify_caller(peer, server address): the instance that opened a connection, for
        # guards of internal services. forwarded_authorization(value): what an app gets of an
        # Authorization header (the platform's tokens lose their signature).
        self.identify_caller = identify_caller
        self.forwarded_authorization = forwarded_authorization or _unchanged
        self.max_body_bytes = max_body_bytes
        # Told of every finished request; it must return at once (it only queues the record).
        self.on_request = on_request
        self.header_timeout = header_timeout
        self.keepalive_timeout = keepalive_timeout
        self._sweeper: asyncio.TimerHandle | None = None
        self._server: asyncio.Server | None = None
        self.deadlines = _Deadlines()
        # Every open connection, so that close() can end them.
        self.clients: set[_ClientConnection] = set()
        self.upstreams: set[_UpstreamConnection] = set()

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            partial(_ClientConnection, self), host, port, reuse_address=True, backlog=1024
        )
        self._sweeper = loop.call_later(_SWEEP_SECONDS, self._sweep)

    def _sweep(self) -> None:
        """Once a second: cut clients too slow to send a head, and idle keep-alive ones.

        One timer for all connections rather than one per connection and request.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        for client in list(self.clients):
            client.check_timeouts(now)
        self._sweeper = loop.call_later(_SWEEP_SECONDS, self._sweep)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()

    @property
    def port(self) -> int:
        """The bound port (useful after start(host, 0))."""
        return int(self.sockets[0].getsockname()[1])

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
        server.close()
        for client in list(self.clients):
            client.abort()
        for upstream in list(self.upstreams):
            upstream.abort()
        self.deadlines.close()
        await server.wait_closed()
        # One turn of the loop lets the aborted transports and cancelled tasks finish.
        await asyncio.sleep(0)


class _ClientConnection(asyncio.Protocol):
    """One client's connection: parses its requests and answers them in the order they came."""

    def __init__(self, router: Router) -> None:
        # Per-connection state
        self.router = router
        self.loop = asyncio.get_running_loop()
        self.transport = cast(asyncio.Transport, None)
        self.parser = httptools.HttpRequestParser(self)
        self.client_address = b""  # as X-Forwarded-For names it
        self.forwarded_node = b""  # as Forwarded names it: for=1.2.3.4 or for="[::1]"
        self.node_host = b""  # the Host of the last request, and its Forwarded element
        self.node = b""
        self.exchanges: deque[_Exchange] = deque()  # the first is in flight, the rest pipelined
        self.tunnel: _Exchange | None = None  # after an upgrade request the bytes are not HTTP
        self.read_pauses = 0
        self.writing_paused = False
        self.closed = False
        self.lingering: asyncio.TimerHandle | None = None
        self.idle_since = self.loop.time()  # no request on it since then
        self.head_started = 0.0  # while a request's line and headers come in
        self.header_count = 0
        self.requests = 0  # heads read on this connection
        self.caller_known = False  # whether self.caller was looked up (once per connection)
        self.caller: str | None = None

        # Per-request state, while the parser reads a request
        self.parsing: _Exchange | None = None  # from the end of the head to the end of the body
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
        self.user_agent = b""
        self.authorization: bytes | None = None
        self.serverless_authorization: bytes | None = None

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
            self._start_tunnel(data[upgrade.args[0] :])
        except httptools.HttpParserCallbackError as error:
            if isinstance(error.__context__, _HeadTooLarge):
                self._unparsable(431, _HEAD_TOO_LARGE)
            elif isinstance(error.__context__, _UrlTooLong):
                self._unparsable(414, f"request target over {_MAX_URL_BYTES} bytes")
            else:
                logger.error("proxy bug while reading a request", exc_info=error.__context__)
                self._unparsable(400, "malformed request")
        except httptools.HttpParserError:
            self._unparsable(400, "malformed request")
        else:
            if self.in_head:
                self.head_read_bytes += len(data)
                if self.head_read_bytes > _MAX_INCOMPLETE_HEAD_READ_BYTES:
                    self._unparsable(431, _HEAD_TOO_LARGE)

    def pause_writing(self) -> None:
        # The client reads the response slower than the instance writes it: stop reading the
        # instance until the client catches up.
        self.writing_paused = True
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
        self.user_agent = b""
        self.authorization = None
        self.serverless_authorization = None

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
            self.traceparent = value
            self.header_pieces += (name, b": ", value, b"\r\n")
        elif lower_name == b"user-agent":
            self.user_agent = value
            self.header_pieces += (name, b": ", value, b"\r\n")
        elif lower_name == b"authorization":
            self.authorization = value if self.authorization is None else _DUPLICATE
        elif lower_name == b"x-serverless-authorization":
            # Cloud Run's header for the ID token when the app wants Authorization for itself.
            once = self.serverless_authorization is None
            self.serverless_authorization = value if once else _DUPLICATE
        # keep-alive, proxy-connection, te, trailer, x-forwarded-proto: dropped

    def on_headers_complete(self) -> None:
        self.in_head = False
        if self.closed:
            return
        parser = self.parser
        method = parser.get_method()
        is_upgrade = parser.should_upgrade() and method != b"CONNECT"
        exchange = _Exchange(
            self,
            is_head=method == b"HEAD",
            keep_alive=parser.should_keep_alive() and not is_upgrade,
            http_10=parser.get_http_version() == "1.0",
            has_body=self.chunked or self.content_length > 0,
            chunked=self.chunked,
            is_upgrade=is_upgrade,
        )
        self.requests += 1
        host = self.host
        url = self.url
        if url[:1] != b"/" and url != b"*" and method != b"CONNECT":
            # The absolute form (GET http://svc.localhost/path): RFC 9112 section 3.2.2 has a
            # server accept it and take the host from it, ignoring any Host header.
            authority, path = _split_absolute(url)
            if authority is None:
                exchange.error = (400, "the request target must be a path or an http(s) URL")
                exchange.close_client = True
            else:
                host, self.url = authority, path
                self.host_count = 1
                self._replace_host(authority)
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
        elif self.content_length > self.router.max_body_bytes:
            exchange.error = (413, f"request body over {self.router.max_body_bytes} bytes")
            exchange.close_client = True  # its body stays unread
        elif self.authorization is _DUPLICATE or self.serverless_authorization is _DUPLICATE:
            exchange.error = (400, "the request has more than one Authorization header")
        else:
            destination = self.router.resolve(host.decode("latin-1"))
            guard = None if isinstance(destination, RouteError) else destination.guard
            if guard is not None:
                credentials = self.serverless_authorization or self.authorization
                denial = guard(credentials, self.calling_instance)
                if denial is not None:
                    destination = denial
            if isinstance(destination, RouteError):
                exchange.error = (destination.status, destination.message)
            else:
                exchange.route = destination
                exchange.head = self._upstream_head(method, host, is_upgrade)
        # What the request log says of this request.
        exchange.method = method
        exchange.url = self.url
        exchange.host = host or b""
        exchange.user_agent = self.user_agent
        exchange.trace = self.traceparent or b""
        exchange.request_bytes = len(self.url) + self.head_bytes
        self.parsing = exchange
        self.exchanges.append(exchange)
        if len(self.exchanges) > 1:
            self._pause(_PIPELINED)
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

    # -- what exchanges call --------------------------------------------------------------

    def write(self, data: bytes) -> None:
        # is_closing() covers the moment between a reset by the peer and connection_lost(),
        # when uvloop raises on a write.
        if not self.closed and not self.transport.is_closing():
            self.transport.write(data)

    def advance(self) -> None:
        """Start the oldest request once it can start; answer the router's own errors at once.

        A request starts when its body is complete, or at its head when it has a body to stream.
        Pipelined requests wait their turn, so that responses go out in request order.
        """
        exchanges = self.exchanges
        while exchanges and not self.closed:
            exchange = exchanges[0]
            if exchange.started or not (exchange.request_complete or exchange.has_body):
                break
            if exchange.error is None:
                exchange.start()
                break
            exchanges.popleft()
            if exchange.answer_error():
                self.close()
                return
        if self.read_pauses and len(exchanges) <= 1:
            self._resume(_PIPELINED)

    def exchange_finished(self, exchange: _Exchange, close: bool) -> None:
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
            self._resume(_UPSTREAM_FULL | _BODY_BUFFER_FULL)
            self.advance()
            return
        self.idle_since = self.loop.time()
        if self.read_pauses:
            self._resume(_UPSTREAM_FULL | _BODY_BUFFER_FULL | _PIPELINED)

    def check_timeouts(self, now: float) -> None:
        if self.closed or self.tunnel is not None:
            return
        if self.in_head:
            if now - self.head_started > self.router.header_timeout:
                # A head this slow is an attack or a broken client: answer and hang up.
                self._unparsable(408, "request headers not received in time")
        elif not self.exchanges and self.parsing is None:
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

    def _replace_host(self, authority: bytes) -> None:
        pieces = self.header_pieces
        for start in range(0, len(pieces), 4):
            if pieces[start].lower() == b"host":
                pieces[start + 2] = authority
                return
        pieces += (b"host", b": ", authority, b"\r\n")

    def close(self) -> None:
        """Close once what was written has gone out."""
        if self.closed:
            return
        self.closed = True
        transport = self.transport
        unread_input = self.parsing is not None or self.read_pauses & _UNPARSABLE
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

    def _upstream_head(self, method: bytes, host: bytes, is_upgrade: bool) -> bytes:
        """The request head as the instance gets it: HTTP/1.1, keep-alive, forwarding added."""
        header_pieces = self.header_pieces
        if self.connection_options is not None:
            header_pieces = _without_named(header_pieces, self.connection_options)
        address = self.client_address
        hops = self.forwarded_for
        forwarded_for = address if hops is None else hops + b", " + address
        if host != self.node_host:  # a client names the same host request after request
            self.node_host = host
            self.node = b"%s;proto=http;host=%s" % (self.forwarded_node, _quoted(host))
        node = self.node
        forwarded = node if self.forwarded is None else self.forwarded + b", " + node
        extra = b""
        # An ID token of this platform reaches the app without its signature (see Router).
        if self.authorization is not None:
            extra += b"authorization: %s\r\n" % self.router.forwarded_authorization(
                self.authorization
            )
        if self.serverless_authorization is not None:
            extra += b"x-serverless-authorization: %s\r\n" % self.router.forwarded_authorization(
                self.serverless_authorization
            )
        if self.chunked:
            extra += b"transfer-encoding: chunked\r\n"
        if is_upgrade:
            extra += b"connection: upgrade\r\nupgrade: %s\r\n" % self.upgrade_protocol
        if self.traceparent is None:
            # W3C trace context: 16 random bytes of trace id, 8 of parent id, "sampled".
            trace_id, parent_id = _random_bits(128) or 1, _random_bits(64) or 1
            self.traceparent = b"00-%032x-%016x-01" % (trace_id, parent_id)
            extra += b"traceparent: %s\r\n" % self.traceparent
        return (
            b"%s %s HTTP/1.1\r\n%sx-forwarded-for: %s\r\nx-forwarded-proto: http\r\n"
            b"forwarded: %s\r\n%s\r\n"
            % (method, self.url, b"".join(header_pieces), forwarded_for, forwarded, extra)
        )

    def _start_tunnel(self, early_bytes: bytes) -> None:
        # The parser stopped after an upgrade request; what follows is the new protocol, sent
        # on once the instance agrees (or dropped with the connection when it does not).
        if self.closed or not self.exchanges:
            return
        self.tunnel = self.exchanges[-1]
        if early_bytes:
            self.tunnel.send(early_bytes)

    def _unparsable(self, status: int, message: str) -> None:
        """Answer a request that cannot be read, then close: nothing after it can be parsed."""
        self._pause(_UNPARSABLE)
        exchange = self.parsing
        if exchange is not None:
            self.parsing = None
            exchange.fail(400, "malformed request body", close=True)
            return
        exchange = _Exchange(
            self, is_head=False, keep_alive=False, http_10=False, has_body=False,
            chunked=False, is_upgrade=False,
        )  # fmt: skip
        exchange.error = (status, message)
        exchange.request_complete = True
        self.exchanges.append(exchange)
        self.advance()

    def _pause(self, reason: int) -> None:
        if not self.read_pauses and not self.closed:
            self.transport.pause_reading()
        self.read_pauses |= reason

    def _resume(self, reasons: int) -> None:
        if self.read_pauses & reasons:
            self.read_pauses &= ~reasons
            if not self.read_pauses and not self.closed:
                self.transport.resume_reading()

    def _abort_exchanges(self) -> None:
        self.parsing = None
        exchanges, self.exchanges = self.exchanges, deque()
        for exchange in exchanges:
            exchange.abort()


class _Exchange:
    """One request, from its arrival to the end of its response, and what it holds meanwhile."""

    __slots__ = (
        "client", "arrival", "is_head", "keep_alive", "http_10", "has_body", "chunked",
        "is_upgrade", "route", "error", "head", "request_complete", "body_received",
        "pending_body", "pending_bytes", "started", "finished", "task", "deadline_tick",
        "lease", "upstream", "retried", "response_started", "close_client",
        "method", "url", "host", "user_agent", "trace", "request_bytes", "status",
        "response_bytes", "received_at",
    )  # fmt: skip

    def __init__(
        self,
        client: _ClientConnection,
        *,
        is_head: bool,
        keep_alive: bool,
        http_10: bool,
        has_body: bool,
        chunked: bool,
        is_upgrade: bool,
    ) -> None:
        # The request
        self.client = client
        self.arrival = client.loop.time()
        self.is_head = is_head
        self.keep_alive = keep_alive
        self.http_10 = http_10
        self.has_body = has_body
        self.chunked = chunked
        self.is_upgrade = is_upgrade
        self.route: Route | None = None
        self.error: tuple[int, str] | None = None  # answered by the router, not an instance
        self.head = b""
        self.request_complete = False
        self.body_received = 0
        # Body bytes that came before an instance connection; written right after the head.
        self.pending_body: list[bytes] = []
        self.pending_bytes = 0

        # While it runs
        self.started = False
        self.finished = False
        self.task: asyncio.Task[None] | None = None
        self.deadline_tick = 0  # while the timeout is armed
        self.lease: Lease | None = None
        self.upstream: _UpstreamConnection | None = None
        self.retried = False

        # The response
        self.response_started = False  # a final status line went to the client
        self.close_client = not keep_alive

        # For the request log. The loop's clock ticks in milliseconds under uvloop: latencies
        # are measured with perf_counter.
        self.received_at = _precise_clock()
        self.method = b""
        self.url = b""
        self.host = b""
        self.user_agent = b""
        self.trace = b""
        self.request_bytes = 0
        self.status = 0
        self.response_bytes = 0

    def start(self) -> None:
        route = self.route
        assert route is not None  # only exchanges without an error start
        self.started = True
        loop = self.client.loop
        # The timeout counts from arrival, so the wait for a slot is part of it.
        self.deadline_tick = self.client.router.deadlines.add(
            loop, self, self.arrival + route.timeout_seconds
        )
        # The common case, a free slot and an idle pooled connection, needs no task at all.
        lease = None if self.is_upgrade else route.throttler.try_acquire()
        if lease is not None:
            self.lease = lease
            idle = _take_idle(lease.endpoint)
            if idle is not None:
                self._attach(idle, reused=True)
                return
        self.task = loop.create_task(self._connect(route.throttler, fresh=self.is_upgrade))

    async def _connect(self, throttler: Throttler, *, fresh: bool) -> None:
        loop = self.client.loop
        refusals = 0
        while True:
            try:
                if self.lease is None:
                    self.lease = await throttler.acquire()
                endpoint = self.lease.endpoint
                idle = None if fresh else _take_idle(endpoint)
                if idle is None:
                    factory = partial(_UpstreamConnection, self.client.router, endpoint)
                    _, upstream = await loop.create_connection(
                        factory, endpoint.host, endpoint.port
                    )
                else:
                    upstream = idle
            except RevisionUnavailable as unavailable:
                self.task = None
                self.fail(unavailable.status, unavailable.message)
            except OSError as error:
                if (
                    isinstance(error, ConnectionRefusedError)
                    and not self.retried
                    and refusals < len(_REFUSED_RETRY_SECONDS)
                ):
                    # Nothing listens on the instance's port: it exited, and the supervisor
                    # has not taken it out of routing yet. Nothing reached the app, so, as
                    # Knative's activator does, the request goes back to the throttler after
                    # a pause, which picks an instance again (maybe one not yet started).
                    # Not after a pooled connection failed (retry()): the app may have had
                    # the request when it died, and running it again elsewhere is not safe.
                    lease, self.lease = self.lease, None
                    if lease is not None:
                        lease.release()
                    await asyncio.sleep(_REFUSED_RETRY_SECONDS[refusals])
                    refusals += 1
                    continue
                self.task = None
                self.fail(502, f"cannot connect to the instance: {error.strerror or error}")
            else:
                self.task = None
                self._attach(upstream, reused=idle is not None)
            return

    def _attach(self, upstream: _UpstreamConnection, reused: bool) -> None:
        self.upstream = upstream
        upstream.attach(self, reused)
        data = self.head
        if self.pending_body:
            data = b"".join([data, *self.pending_body])
            self.pending_body = []
            self.pending_bytes = 0
            self.client._resume(_BODY_BUFFER_FULL)
        upstream.write(data)

    def retry(self) -> None:
        """Send the request again on a new connection, after a pooled one failed silently.

        An instance may close an idle keep-alive connection just as a request goes out on it.
        With no response byte back and no body sent, nothing reached the app, so one more try
        on a fresh connection to the same instance is safe. (If the instance died holding the
        request instead, that connection is refused: the request is not sent elsewhere.)
        """
        self.upstream = None
        self.retried = True
        self.client._resume(_UPSTREAM_FULL)
        route = self.route
        assert route is not None
        self.task = self.client.loop.create_task(self._connect(route.throttler, fresh=True))

    def receive_body(self, body: bytes) -> None:
        self.body_received += len(body)
        if self.body_received > self.client.router.max_body_bytes:
            self.fail(
                413, f"request body over {self.client.router.max_body_bytes} bytes", close=True
            )
            return
        self.send(b"%x\r\n%s\r\n" % (len(body), body) if self.chunked else body)

    def send(self, data: bytes) -> None:
        """Pass request bytes on to the instance, or hold them until a connection is attached."""
        if self.finished or self.error is not None:
            return
        upstream = self.upstream
        if upstream is not None:
            upstream.write(data)
            return
        self.pending_body.append(data)
        self.pending_bytes += len(data)
        if self.pending_bytes > _BODY_BUFFER_LIMIT:
            self.client._pause(_BODY_BUFFER_FULL)

    def on_timeout(self) -> None:
        self.deadline_tick = 0
        if self.finished:
            return
        route = self.route
        assert route is not None
        if self.response_started:
            # Too late for a status: cutting the connection is the only way to say it.
            self.finish(reuse_upstream=False, close_client=True)
        else:
            self.fail(504, f"the instance did not answer within {route.timeout_seconds:g} s")

    def fail(self, status: int, message: str, *, close: bool = False) -> None:
        """Answer with an error while no response has started, else cut the client connection."""
        if self.finished:
            return
        if close:
            self.close_client = True
        if not self.started:
            # Still queued behind a pipelined request: answered when its turn comes.
            self.error = (status, message)
            return
        if self.upstream is not None:
            self.upstream.flush()  # an interim 100 Continue goes out before the error
        if self.response_started:
            self.finish(reuse_upstream=False, close_client=True)
            return
        self.error = (status, message)
        close = self.answer_error()
        self._end(reuse_upstream=False)
        self.client.exchange_finished(self, close)

    def answer_error(self) -> bool:
        """Write the router's error response; True when the client connection must close."""
        assert self.error is not None
        status, message = self.error
        # An unread body, or an HTTP/1.0 client that would not expect the connection to stay.
        close = self.close_client or not self.request_complete or self.http_10
        response = _error_response(status, message, close=close, with_body=not self.is_head)
        self.client.write(response)
        self.status = status
        self.response_bytes += len(response)
        self.response_started = True
        self.finished = True
        return close

    def finish(self, *, reuse_upstream: bool, close_client: bool) -> None:
        if not self.finished:
            self._end(reuse_upstream)
            self.client.exchange_finished(self, close_client)

    def abort(self) -> None:
        """The client went away: give everything back, and keep no half-used connection."""
        if not self.finished:
            self._end(reuse_upstream=False)

    def _end(self, reuse_upstream: bool) -> None:
        self.finished = True
        if self.deadline_tick:
            self.client.router.deadlines.discard(self.deadline_tick, self)
            self.deadline_tick = 0
        if self.task is not None:
            self.task.cancel()
            self.task = None
        upstream = self.upstream
        if upstream is not None:
            self.upstream = None
            upstream.detach(reuse_upstream)
        # After the connection went back to the pool, so that the next request finds it.
        lease = self.lease
        if lease is not None:
            lease.release()
            self.lease = None
        client = self.client
        on_request = client.router.on_request
        if on_request is not None:
            route = self.route
            on_request(
                (
                    self.received_at, _precise_clock(), self.method, self.url, self.host,
                    self.status, self.request_bytes + self.body_received, self.response_bytes,
                    self.user_agent, client.client_address, self.http_10, self.trace,
                    route.service if route else None, route.revision if route else None,
                    lease.endpoint.name if lease else None,
                )
            )  # fmt: skip


def _take_idle(endpoint: Endpoint) -> _UpstreamConnection | None:
    idle = endpoint.idle_connections
    while idle:
        # The most recently used first: the least likely to have hit the app's keep-alive timeout.
        upstream: _UpstreamConnection = idle.pop()
        upstream.idle = False
        if not upstream.closed:
            return upstream
    return None


class _UpstreamConnection(asyncio.Protocol):
    """A keep-alive connection to one instance: one exchange at a time, then back to the pool."""

    def __init__(self, router: Router, endpoint: Endpoint) -> None:
        # Per-connection state
        self.router = router
        self.endpoint = endpoint
        self.transport = cast(asyncio.Transport, None)
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: _Exchange | None = None
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
            exchange.fail(502, "the instance closed the connection before it answered")

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
            if lease is not None and lease.waited_since is not None:
                lease.first_byte()  # a request that queued: its cold-start latency
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
            self.exchange.client._pause(_UPSTREAM_FULL)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.client._resume(_UPSTREAM_FULL)

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
        if lower_name in _HOP_BY_HOP:
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
            header_pieces = _without_named(header_pieces, self.connection_options)
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

    def attach(self, exchange: _Exchange, reused: bool) -> None:
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
