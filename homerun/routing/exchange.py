"""One request's trip through the router, from a slot on an instance to the end of its
response, and the timeouts that cut it short."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from homerun.routing._http import BODY_BUFFER_FULL, UPSTREAM_FULL, error_response
from homerun.routing.h2_upstream import Http2Upstream, UpstreamStream, take_stream
from homerun.routing.throttler import Endpoint, Lease, RevisionUnavailable, Throttler
from homerun.routing.types import Route
from homerun.routing.upstream import UpstreamConnection, take_idle

if TYPE_CHECKING:
    from homerun.routing.client import ClientConnection

P = TypeVar("P", bound=asyncio.BaseProtocol)

# Body bytes held while a streamed body waits for a slot or a connection (a body the router
# buffers whole is held up to Router.body_buffer_bytes before it takes a slot). 256 KiB is about
# one socket read, so an upload still leaves with its request head in a single write.
_BODY_BUFFER_LIMIT = 256 * 1024
# A refused connection to an instance is tried again after these pauses (an instance that
# exited leaves routing within milliseconds, when the supervisor sees its exit).
_REFUSED_RETRY_SECONDS = (0.02, 0.05, 0.1)
# When an instance's connection closes before an answer, the 502 says whether the instance
# exited: the supervisor sees an exit within milliseconds (the process's status), so a close
# with no exit seen this long after it was the app's own doing.
_EXITED = "the instance exited while handling the request"
_CLOSED = "the instance closed the connection before it answered"
_EXIT_NOTICE_SECONDS = 0.5
# Request timeouts fire on ticks of this length, up to one tick late.
_DEADLINE_TICK = 0.1

_precise_clock = time.perf_counter


class _NotOverHttp2(Exception):
    """An upgrade request to a revision whose instances speak HTTP/2."""


class Deadlines:
    """Request timeouts grouped by tick: one event loop timer per tick rather than per request.

    Under uvloop each call_at arms a libuv timer; arming and cancelling one per request costs
    about 3 µs, a tenth of what the router spends on a small request. A timeout of seconds
    that fires up to 100 ms late loses nothing.
    """

    def __init__(self) -> None:
        self._waiting: dict[int, set[Exchange]] = {}
        self._timers: dict[int, asyncio.TimerHandle] = {}

    def add(self, loop: asyncio.AbstractEventLoop, exchange: Exchange, deadline: float) -> int:
        """Call exchange.on_timeout() at the first tick after `deadline`; returns the tick."""
        tick = math.ceil(deadline / _DEADLINE_TICK)
        exchanges = self._waiting.get(tick)
        if exchanges is None:
            exchanges = self._waiting[tick] = set()
            self._timers[tick] = loop.call_at(tick * _DEADLINE_TICK, self._expire, tick)
        exchanges.add(exchange)
        return tick

    def discard(self, tick: int, exchange: Exchange) -> None:
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


class Exchange:
    """One request, from its arrival to the end of its response, and what it holds meanwhile."""

    __slots__ = (
        "client", "arrival", "is_head", "keep_alive", "http_10", "has_body", "chunked",
        "is_upgrade", "route", "error", "head", "request_complete", "body_received",
        "streams_body", "expects_continue", "pending_body", "pending_bytes", "started",
        "finished", "task", "deadline_tick", "lease", "upstream", "retried", "response_started",
        "close_client",
        "method", "url", "host", "user_agent", "trace", "request_bytes", "status",
        "response_bytes", "received_at", "grpc_status",
    )  # fmt: skip

    def __init__(
        self,
        client: ClientConnection,
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
        # False: the body is read whole before the request starts (takes a slot); True: it
        # starts at its head and the body streams (the client connection decides).
        self.streams_body = False
        self.expects_continue = False  # the router owes the client a 100 Continue
        # Body bytes that came before an instance connection; written right after the head.
        self.pending_body: list[bytes] = []
        self.pending_bytes = 0

        # While it runs
        self.started = False
        self.finished = False
        self.task: asyncio.Task[None] | None = None
        self.deadline_tick = 0  # while the timeout is armed
        self.lease: Lease | None = None
        self.upstream: UpstreamConnection | UpstreamStream | None = None
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
        self.grpc_status = b""  # set by an h2c instance's answer (h2_upstream.py)

    def start(self) -> None:
        route = self.route
        assert route is not None  # only exchanges without an error start
        self.started = True
        loop = self.client.loop
        # The timeout counts from arrival, so the wait for a slot is part of it; for a body read
        # whole first, from the end of the body, when the instance may first see the request.
        since = loop.time() if self.has_body and not self.streams_body else self.arrival
        self.deadline_tick = self.client.router.deadlines.add(
            loop, self, since + route.timeout_seconds
        )
        # The common case, a free slot and an idle pooled connection, needs no task at all.
        lease = None if self.is_upgrade else route.throttler.try_acquire()
        if lease is not None:
            self.lease = lease
            idle = take_idle(lease.endpoint)
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
                idle = None if fresh else take_idle(endpoint)
                upstream: UpstreamConnection | UpstreamStream
                if throttler.http2:
                    if self.is_upgrade:
                        raise _NotOverHttp2
                    upstream = UpstreamStream(await self._http2_connection(endpoint))
                elif idle is None:
                    factory = partial(UpstreamConnection, self.client.router, endpoint)
                    _, upstream = await _connect_to(loop, factory, endpoint)
                else:
                    upstream = idle
            except RevisionUnavailable as unavailable:
                self.task = None
                self.fail(unavailable.status, unavailable.message)
            except _NotOverHttp2:
                self.task = None
                self.fail(
                    502,
                    "this revision speaks HTTP/2 to its instances (--use-http2), which cannot "
                    "carry an Upgrade (WebSocket) request; deploy with --no-use-http2 for it",
                )
            except OSError as error:
                refused = isinstance(error, ConnectionRefusedError)
                if refused and not self.retried and refusals < len(_REFUSED_RETRY_SECONDS):
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
                if refused and self.retried:
                    # Its pooled connection closed with the request, and now nothing listens.
                    self.fail(502, _EXITED)
                elif refused:
                    self.fail(502, "cannot connect to the instance: it exited (connection refused)")
                else:
                    self.fail(502, f"cannot connect to the instance: {error.strerror or error}")
            else:
                self.task = None
                self._attach(upstream, reused=idle is not None)
            return

    async def _http2_connection(self, endpoint: Endpoint) -> Http2Upstream:
        """A pooled h2c connection to the instance with room for a stream, or a new one."""
        connection = take_stream(endpoint)
        if connection is None:
            factory = partial(Http2Upstream, self.client.router, endpoint)
            _, connection = await _connect_to(self.client.loop, factory, endpoint)
        return connection

    def _attach(self, upstream: UpstreamConnection | UpstreamStream, reused: bool) -> None:
        self.upstream = upstream
        upstream.attach(self, reused)
        data = self.head
        if self.pending_body:
            data = b"".join([data, *self.pending_body])
            self.pending_body = []
            self.pending_bytes = 0
            self.client.resume_reading(BODY_BUFFER_FULL)
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
        self.client.resume_reading(UPSTREAM_FULL)
        route = self.route
        assert route is not None
        self.task = self.client.loop.create_task(self._connect(route.throttler, fresh=True))

    def instance_lost(self) -> None:
        """The instance's connection closed before it answered: 502, saying whether the
        instance exited (killed, out of memory) or only closed the connection."""
        lease, route = self.lease, self.route
        if lease is None or route is None:
            self.fail(502, _CLOSED)
            return
        self.task = self.client.loop.create_task(
            self._explain_loss(route.throttler, lease.endpoint)
        )

    async def _explain_loss(self, throttler: Throttler, endpoint: Endpoint) -> None:
        exited = await throttler.exit_seen(endpoint, _EXIT_NOTICE_SECONDS)
        self.task = None
        self.fail(502, _EXITED if exited else _CLOSED)

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
        # A body read whole before the request starts is not paused: it fits the buffer.
        if self.pending_bytes > _BODY_BUFFER_LIMIT and self.streams_body:
            self.client.pause_reading(BODY_BUFFER_FULL)

    def reject_slow_body(self, message: str) -> None:
        """408 for a body that comes too slowly (nginx's client_body_timeout): the connection
        closes, the slot goes back if one was taken, and the request log says 408."""
        if self.finished:
            return
        self.close_client = True
        if self.started:
            self.fail(408, message)
            return
        self.error = (408, message)
        self.answer_error()
        self._end(reuse_upstream=False)
        self.client.exchange_finished(self, close=True)

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
        response = error_response(status, message, close=close, with_body=not self.is_head)
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
                    self.user_agent, client.client_address,
                    b"HTTP/1.0" if self.http_10 else client.protocol, self.trace,
                    route.service if route else None, route.revision if route else None,
                    lease.endpoint.name if lease else None, self.grpc_status,
                )
            )  # fmt: skip


async def _connect_to(
    loop: asyncio.AbstractEventLoop, factory: Callable[[], P], endpoint: Endpoint
) -> tuple[asyncio.Transport, P]:
    """A new connection to the instance: on the host's loopback, or through a socket made in
    its revision's network namespace (the pool keeps it as any other)."""
    network = endpoint.network
    if network is None:
        return await loop.create_connection(factory, endpoint.host, endpoint.port)
    sock = await network.connect(endpoint.host, endpoint.port)
    try:
        return await loop.create_connection(factory, sock=sock)
    except BaseException:
        sock.close()
        raise
