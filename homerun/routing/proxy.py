"""The data plane: an HTTP/1.1 reverse proxy on asyncio protocols and httptools.

Each client connection (client.py) parses its requests; each request becomes an exchange
(exchange.py) that takes a slot from its revision's throttler, borrows a pooled keep-alive
connection to the chosen instance (upstream.py) and then moves bytes both ways from protocol
callbacks. A body up to `body_buffer_bytes` is read whole before the slot is taken (a slow
client costs a buffer, not a slot); larger ones and all responses stream without being held
whole. Only the steps that must wait (a slot, a new connection) run in a task. The `Router`
here listens, sweeps slow and idle connections and closes.

    router = Router(resolve, max_body_bytes=32 * 1024 * 1024)
    await router.start("127.0.0.1", 8080)      # binds and listens
    ...
    await router.close()                       # stops listening, closes client and upstream conns
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING

from homerun.routing.client import ClientConnection
from homerun.routing.exchange import Deadlines
from homerun.routing.http2 import Http2Connection
from homerun.routing.types import Address, RequestRecord, Resolver

if TYPE_CHECKING:
    from homerun.routing.h2_upstream import Http2Upstream
    from homerun.routing.upstream import UpstreamConnection

# A client gets this long to send a request's line and headers (slowloris sends a byte at a
# time to hold connections open), and a keep-alive connection this long between requests.
HEADER_TIMEOUT_SECONDS = 10.0
KEEPALIVE_TIMEOUT_SECONDS = 75.0  # nginx's keepalive_timeout
# A request body may pause this long between two reads (nginx's client_body_timeout), and must
# average this rate on top of it (Apache mod_reqtimeout's MinRate): a body of N bytes gets
# 60 s + N / 500 s in all, so a client trickling a byte a second is cut after about 60 s.
BODY_TIMEOUT_SECONDS = 60.0
BODY_MIN_BYTES_PER_SECOND = 500.0
# Bodies up to this size are read whole before the request takes a slot on an instance: a slow
# client then holds a buffer, not one of an instance's `--concurrency` slots. Larger ones
# stream, holding their slot while they arrive.
BODY_BUFFER_BYTES = 1024 * 1024
# A client that reads nothing of its response for this long, while the router holds more for
# it than the socket takes, is cut off and its slot given back (nginx's send_timeout).
SEND_TIMEOUT_SECONDS = 60.0
_SWEEP_SECONDS = 1.0
# How often drain() looks for connections whose requests are done.
_DRAIN_POLL_SECONDS = 0.05


def _unchanged(value: bytes) -> bytes:
    return value


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
        body_timeout: float = BODY_TIMEOUT_SECONDS,
        body_min_rate: float = BODY_MIN_BYTES_PER_SECOND,
        body_buffer_bytes: int = BODY_BUFFER_BYTES,
        send_timeout: float = SEND_TIMEOUT_SECONDS,
        identify_caller: Callable[[Address, Address], str | None] | None = None,
        forwarded_authorization: Callable[[bytes], bytes] | None = None,
        platform_names: frozenset[bytes] = frozenset(),
        platform_documents: Mapping[bytes, bytes] | None = None,
    ) -> None:
        self.resolve = resolve
        # The platform's own host (the ID tokens' issuer, http://localhost:8080) is no service:
        # the router answers there itself, with the documents that check its tokens (path ->
        # JSON: OpenID Connect discovery, the JWK set), only for hosts no service answers at.
        self.platform_names = platform_names
        self.platform_documents = platform_documents or {}
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
        self.body_timeout = body_timeout
        self.body_min_rate = body_min_rate  # bytes per second; 0: no minimum
        self.body_buffer_bytes = body_buffer_bytes
        self.send_timeout = send_timeout
        # Where clients reach the router: a Host naming another port is not for it. Set once
        # listening (an ephemeral port is known only then).
        self.ports: frozenset[int] = frozenset()
        self.port_suffix = b""  # b":8080", what a Host that names the router's port ends with
        self._sweeper: asyncio.TimerHandle | None = None
        self._server: asyncio.Server | None = None
        self._extra_servers: set[asyncio.Server] = set()  # serve_socket()
        self._tls_server: asyncio.Server | None = None
        self.deadlines = Deadlines()
        # Every open connection, so that close() can end them.
        self.clients: set[ClientConnection] = set()
        self.upstreams: set[UpstreamConnection] = set()
        self.http2_connections: set[Http2Connection] = set()
        self.http2_upstreams: set[Http2Upstream] = set()

    def platform_document(self, host: bytes, target: bytes) -> bytes | None:
        """The JSON the router answers itself for `target` at the platform's host, or None."""
        if not self.platform_documents:
            return None
        name = host[: -len(self.port_suffix)] if host.endswith(self.port_suffix) else host
        if name.lower() not in self.platform_names:
            return None
        return self.platform_documents.get(target.partition(b"?")[0])

    async def start(self, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            partial(ClientConnection, self), host, port, reuse_address=True, backlog=1024
        )
        self.ports = frozenset(int(sock.getsockname()[1]) for sock in self._server.sockets)
        self.port_suffix = b":%d" % self.port
        self._sweeper = loop.call_later(_SWEEP_SECONDS, self._sweep)

    async def serve_socket(self, sock: socket.socket) -> asyncio.Server:
        """Take connections on another listening socket too (after start()): one on a
        revision's own loopback, in its network namespace (runtime/netns.py), where its
        instances reach the services' URLs; until close_socket(the server returned)."""
        loop = asyncio.get_running_loop()
        server = await loop.create_server(partial(ClientConnection, self), sock=sock, backlog=1024)
        self._extra_servers.add(server)
        return server

    def close_socket(self, server: asyncio.Server) -> None:
        self._extra_servers.discard(server)
        server.close()

    async def start_tls(self, host: str, port: int, context: ssl.SSLContext) -> None:
        """Listen for HTTPS too (after start()): HTTP/2 or HTTP/1.1 as the client's ALPN says.

        Its port routes as the HTTP port does (a Host naming it is for this router)."""
        loop = asyncio.get_running_loop()
        self._tls_server = await loop.create_server(
            partial(_TlsClientConnection, self, b"HTTP/1.1", b"https"),
            host,
            port,
            ssl=context,
            ssl_handshake_timeout=self.header_timeout,
            reuse_address=True,
            backlog=1024,
        )
        tls_ports = {int(sock.getsockname()[1]) for sock in self._tls_server.sockets}
        self.ports = self.ports | tls_ports

    @property
    def tls_port(self) -> int | None:
        server = self._tls_server
        return int(server.sockets[0].getsockname()[1]) if server is not None else None

    def _sweep(self) -> None:
        """Once a second: cut clients too slow to send a head or a body, clients that stopped
        reading their response, and idle keep-alive connections.

        One timer for all connections rather than one per connection and request.
        """
        loop = asyncio.get_running_loop()
        now = loop.time()
        for client in list(self.clients):
            client.check_timeouts(now)
        for connection in list(self.http2_connections):
            connection.check_timeouts(now)
        self._sweeper = loop.call_later(_SWEEP_SECONDS, self._sweep)

    def serve_http2(self, transport: asyncio.Transport, data: bytes, scheme: bytes) -> None:
        """A client connection that opened with the HTTP/2 preface (h2c, prior knowledge), or
        chose h2 by ALPN on the TLS port."""
        connection = Http2Connection(self, transport, scheme)
        transport.set_protocol(connection)
        connection.start(data)

    def upgrade_to_http2(
        self,
        transport: asyncio.Transport,
        settings: bytes,
        request: list[tuple[bytes, bytes]],
        data: bytes,
    ) -> None:
        """A client connection whose request asked for `Upgrade: h2c`: 101, then HTTP/2."""
        transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nconnection: upgrade\r\nupgrade: h2c\r\n\r\n"
        )
        connection = Http2Connection(self, transport, b"http")
        transport.set_protocol(connection)
        connection.start_upgraded(settings, request, data)

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._server.sockets) if self._server is not None else ()

    @property
    def port(self) -> int:
        """The bound port (useful after start(host, 0))."""
        return int(self.sockets[0].getsockname()[1])

    async def drain(self, grace: float) -> None:
        """Take no new connection and let the requests in flight finish, for `grace` seconds
        at most (`homerun down`): a connection is closed once nothing is in flight on it.
        close() ends whatever is left."""
        server = self._server
        if server is None:
            return
        server.close()
        if self._tls_server is not None:
            self._tls_server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while True:
            for connection in list(self.http2_connections):
                connection.go_away()  # closes the connection once its streams are done
            for client in list(self.clients):
                busy = client.exchanges or client.in_head or client.tunnel is not None
                if not busy and client.parsing is None:
                    client.close()
            if not (self.clients or self.http2_connections) or loop.time() >= deadline:
                return
            await asyncio.sleep(_DRAIN_POLL_SECONDS)

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
        server.close()
        tls_server, self._tls_server = self._tls_server, None
        if tls_server is not None:
            tls_server.close()
        for extra in list(self._extra_servers):
            extra.close()
        for client in list(self.clients):
            client.abort()
        for connection in list(self.http2_connections):
            connection.abort()
        for upstream in list(self.upstreams):
            upstream.abort()
        for http2_upstream in list(self.http2_upstreams):
            http2_upstream.abort()
        self.deadlines.close()
        await server.wait_closed()
        if tls_server is not None:
            await tls_server.wait_closed()
        # One turn of the loop lets the aborted transports and cancelled tasks finish.
        await asyncio.sleep(0)


class _TlsClientConnection(ClientConnection):
    """A client of the TLS port: HTTP/1.1 as on the HTTP port, unless ALPN chose h2."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        tls = transport.get_extra_info("ssl_object")
        if tls is not None and tls.selected_alpn_protocol() == "h2":
            self.alpn_http2()
