"""Per-revision throttler: a slot per request in flight on each instance, and a FIFO queue.

This is the "activator" role of Knative: a request takes a slot on an instance with room,
or waits in the revision's queue until one frees up or a new instance becomes ready. No
instance ever holds more than its capacity (containerConcurrency) of requests.
"""

from __future__ import annotations

import asyncio
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from homerun.routing.adaptive import AdaptiveLimit
from homerun.routing.concurrency import ConcurrencyMeter


class IdleConnection(Protocol):
    def close(self) -> None: ...


class Network(Protocol):
    """An instance's own network namespace (runtime/netns.py): sockets to it are made inside."""

    async def connect(self, host: str, port: int) -> socket.socket: ...


@dataclass(eq=False)
class Endpoint:
    """A ready instance as the data plane sees it."""

    name: str
    host: str
    port: int
    capacity: int
    in_flight: int = 0
    draining: bool = False
    exited: bool = False  # the supervisor saw the instance exit (Throttler.remove)
    # `--concurrency auto`: sets `capacity` from the instance's latency (routing/adaptive.py).
    limiter: AdaptiveLimit | None = None
    # What Cloud Run's request-based billing counts: time with a request in flight.
    requests: int = 0
    busy_seconds: float = 0.0  # ended busy periods
    busy_since: float | None = None  # the one under way
    # Keep-alive connections to this instance that no request uses right now; the proxy owns them.
    idle_connections: list[Any] = field(default_factory=list)
    # h2c connections to it (a revision deployed with --use-http2), each with streams in flight.
    http2_connections: list[Any] = field(default_factory=list)
    # Where it listens when not on the host's loopback: its revision's network namespace.
    network: Network | None = None
    _idle_waiters: list[asyncio.Future[None]] = field(default_factory=list)
    _exit_waiters: list[asyncio.Future[None]] = field(default_factory=list)

    @property
    def address(self) -> tuple[str, int]:
        return (self.host, self.port)

    def close_idle_connections(self) -> None:
        idle, self.idle_connections = self.idle_connections, []
        for connection in idle:
            connection.close()
        for connection in list(self.http2_connections):
            connection.close()  # at once if it carries no stream, else after its last one


class RevisionUnavailable(Exception):
    """The revision cannot take the request (its instance failed to start, say)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class Lease:
    """One slot on one endpoint, held for the life of a request; release exactly once.

    `waited_since` is when the request began waiting for the slot (None: it found one at
    once); the proxy reports the first byte of a waited request as its cold-start latency.
    """

    __slots__ = ("endpoint", "waited_since", "_throttler", "_released", "_started", "_load")

    def __init__(
        self, throttler: Throttler, endpoint: Endpoint, waited_since: float | None = None
    ) -> None:
        self.endpoint = endpoint
        self.waited_since = waited_since
        self._throttler = throttler
        self._released = False
        # --concurrency auto: when the instance got the request, and how many it then held.
        self._started = throttler.clock() if endpoint.limiter is not None else 0.0
        self._load = endpoint.in_flight
        endpoint.requests += 1
        if endpoint.busy_since is None:
            endpoint.busy_since = self._started or throttler.clock()

    def first_byte(self) -> None:
        """The response began: record how long a request that had to wait took to get here,
        and how long the instance took to answer it (`--concurrency auto` adapts to that)."""
        throttler = self._throttler
        if self.waited_since is not None:
            throttler.record_wait(throttler.clock() - self.waited_since)
            self.waited_since = None
        limiter = self.endpoint.limiter
        if limiter is not None and self._started:
            latency = throttler.clock() - self._started
            self._started = 0.0
            if limiter.sample(latency, self._load):
                throttler._adapted(self.endpoint)

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._throttler._release(self.endpoint)


class Throttler:
    """Slots and queue of one revision. Not thread-safe: lives on the router's event loop."""

    def __init__(
        self,
        revision: str,
        on_demand: Callable[[], None],
        clock: Callable[[], float],
        meter: ConcurrencyMeter | None = None,
        *,
        http2: bool = False,
    ) -> None:
        self.revision = revision
        # Its instances speak h2c (--use-http2): requests go to them as HTTP/2 streams.
        self.http2 = http2
        # Called when a request waits and may need a new instance; the autoscaler decides.
        self._on_demand = on_demand
        self.clock = clock
        # Requests in the revision (in flight or queued), for the autoscaler's windows.
        self.meter = meter or ConcurrencyMeter(clock())
        self.endpoints: list[Endpoint] = []
        self._waiters: deque[asyncio.Future[Lease]] = deque()
        self._arrivals: dict[asyncio.Future[Lease], float] = {}
        self._queue_empty_waiters: list[asyncio.Future[None]] = []
        self._next = 0
        # Arrival to first byte of the latest requests that had to wait for a slot (cold
        # starts among them), newest last.
        self.waits: deque[float] = deque(maxlen=1000)
        self.wait_count = 0  # ever recorded (`waits` keeps the latest)

    # -- what the supervisor does -------------------------------------------------------

    def add(self, endpoint: Endpoint) -> None:
        self.endpoints.append(endpoint)
        self._dispatch()

    def remove(self, endpoint: Endpoint) -> None:
        """Forget an instance that stopped; its idle connections are closed."""
        if endpoint in self.endpoints:
            self.endpoints.remove(endpoint)
        endpoint.draining = True
        endpoint.exited = True
        endpoint.close_idle_connections()
        self._wake_idle(endpoint)
        waiters, endpoint._exit_waiters = endpoint._exit_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)

    def suspend(self, endpoint: Endpoint) -> None:
        """Send no new request to a ready instance (its readiness probe fails); those in flight
        finish, and a slot they free goes to another instance's waiter."""
        if endpoint in self.endpoints:
            self.endpoints.remove(endpoint)
        endpoint.draining = True
        endpoint.close_idle_connections()
        if self._waiters:
            self._on_demand()  # its capacity is gone: the autoscaler decides now

    def resume(self, endpoint: Endpoint) -> None:
        """A suspended instance passes its readiness probe again: it takes requests again."""
        if endpoint.exited or endpoint in self.endpoints:
            return
        endpoint.draining = False
        self.endpoints.append(endpoint)
        self._dispatch()

    async def drain(self, endpoint: Endpoint) -> None:
        """Stop sending requests to an instance and wait until its in-flight ones finish."""
        endpoint.draining = True
        if endpoint in self.endpoints:
            self.endpoints.remove(endpoint)
        endpoint.close_idle_connections()
        if endpoint.in_flight:
            waiter = asyncio.get_running_loop().create_future()
            endpoint._idle_waiters.append(waiter)
            await waiter

    async def exit_seen(self, endpoint: Endpoint, within: float) -> bool:
        """Whether the instance's exit is seen (remove()) within `within` seconds: the proxy
        asks when an instance's connection closed before it answered, to say which it was."""
        if endpoint.exited:
            return True
        waiter = asyncio.get_running_loop().create_future()
        endpoint._exit_waiters.append(waiter)
        try:
            await asyncio.wait_for(waiter, within)
        except TimeoutError:
            return False
        finally:
            if waiter in endpoint._exit_waiters:
                endpoint._exit_waiters.remove(waiter)
        return True

    def fail_waiters(self, status: int, message: str) -> None:
        """Answer every queued request with an error (no instance could be started)."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RevisionUnavailable(status, message))
        self._check_queue_empty()

    def expire_waiters(self, waited_since: float, status: int, message: str) -> int:
        """Answer with an error the queued requests that have waited since before a time."""
        expired = 0
        while self._waiters:
            waiter = self._waiters[0]
            arrived = self._arrivals.get(waiter)
            if not waiter.done() and arrived is not None and arrived >= waited_since:
                break
            self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(RevisionUnavailable(status, message))
                expired += 1
        self._check_queue_empty()
        return expired

    async def queue_drained(self) -> None:
        """Return once no request waits in the queue (served, expired or gone)."""
        if not self.queue_length:
            return
        waiter = asyncio.get_running_loop().create_future()
        self._queue_empty_waiters.append(waiter)
        await waiter

    def _check_queue_empty(self) -> None:
        if self._queue_empty_waiters and not self.queue_length:
            waiters, self._queue_empty_waiters = self._queue_empty_waiters, []
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_result(None)

    def record_wait(self, seconds: float) -> None:
        self.waits.append(seconds)
        self.wait_count += 1

    # -- what the proxy does -------------------------------------------------------------

    @property
    def queue_length(self) -> int:
        return sum(1 for waiter in self._waiters if not waiter.done())

    @property
    def in_flight(self) -> int:
        return sum(endpoint.in_flight for endpoint in self.endpoints)

    def try_acquire(self) -> Lease | None:
        """A free slot at once, or None (then acquire() queues); spares the proxy a task."""
        if self._waiters:
            return None
        endpoint = self._pick()
        if endpoint is None:
            return None
        endpoint.in_flight += 1
        self.meter.change(+1, self.clock())
        return Lease(self, endpoint)

    async def acquire(self) -> Lease:
        """A slot on an instance with room, waiting in FIFO order when there is none."""
        now = self.clock()
        self.meter.change(+1, now)
        if not self._waiters:
            endpoint = self._pick()
            if endpoint is not None:
                endpoint.in_flight += 1
                return Lease(self, endpoint)
        waiter: asyncio.Future[Lease] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        self._arrivals[waiter] = now
        self._on_demand()
        try:
            return await waiter
        except asyncio.CancelledError:
            # The client went away or timed out. If a slot was handed over in the same
            # turn, give it back so that it is not lost.
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                waiter.result().release()
                raise
            try:
                self._waiters.remove(waiter)
            except ValueError:
                pass
            self.meter.change(-1, self.clock())
            self._check_queue_empty()
            raise
        except RevisionUnavailable:
            self.meter.change(-1, self.clock())
            raise
        finally:
            self._arrivals.pop(waiter, None)

    # -- internals -----------------------------------------------------------------------

    def _pick(self) -> Endpoint | None:
        endpoints = self.endpoints
        count = len(endpoints)
        if not count:
            return None
        # Knative: first available for small concurrency (keeps a single-slot app on the same
        # instance), round robin skipping full instances above that.
        if endpoints[0].capacity <= 3:
            for endpoint in endpoints:
                if endpoint.in_flight < endpoint.capacity:
                    return endpoint
            return None
        for offset in range(count):
            endpoint = endpoints[(self._next + offset) % count]
            if endpoint.in_flight < endpoint.capacity:
                self._next = (self._next + offset + 1) % count
                return endpoint
        return None

    def _adapted(self, endpoint: Endpoint) -> None:
        """An instance's adaptive limit moved: a higher one may take queued requests now."""
        limiter = endpoint.limiter
        if limiter is None:
            return
        grew = limiter.capacity > endpoint.capacity
        endpoint.capacity = limiter.capacity
        if grew:
            self._dispatch()

    def _release(self, endpoint: Endpoint) -> None:
        endpoint.in_flight -= 1
        now = self.clock()
        self.meter.change(-1, now)
        if not endpoint.in_flight and endpoint.busy_since is not None:
            endpoint.busy_seconds += now - endpoint.busy_since
            endpoint.busy_since = None
        if endpoint.draining:
            if endpoint.in_flight == 0:
                self._wake_idle(endpoint)
            self._dispatch()
            return
        # Hand the freed slot straight to the oldest waiter (FIFO).
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                endpoint.in_flight += 1
                waiter.set_result(Lease(self, endpoint, self._arrivals.get(waiter)))
                self._check_queue_empty()
                return

    def _dispatch(self) -> None:
        while self._waiters:
            if self._waiters[0].done():
                self._waiters.popleft()
                continue
            endpoint = self._pick()
            if endpoint is None:
                return
            endpoint.in_flight += 1
            waiter = self._waiters.popleft()
            waiter.set_result(Lease(self, endpoint, self._arrivals.get(waiter)))
        self._check_queue_empty()

    @staticmethod
    def _wake_idle(endpoint: Endpoint) -> None:
        waiters, endpoint._idle_waiters = endpoint._idle_waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_result(None)
