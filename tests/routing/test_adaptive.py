"""`--concurrency auto`: the gradient limit (pure) and the throttler following it, in
simulated time."""

from __future__ import annotations

import asyncio

from fakes import Clock

from homerun.routing.adaptive import WINDOW, AdaptiveLimit, next_limit
from homerun.routing.throttler import Endpoint, Throttler


def seed_latency(in_flight: float, threads: int = 40, seconds: float = 1.0) -> float:
    """The FastAPI seed's /produtos: 1 s in one of 40 threads, the rest waiting for one."""
    return seconds * max(1.0, in_flight / threads)


def test_the_limit_settles_near_the_thread_pool_not_at_80() -> None:
    limit = 80.0
    for _ in range(30):
        limit = next_limit(limit, 1.0, seed_latency(limit), 80)
    # 1.1 x 40 + sqrt(limit) = limit: about 51, where 80 held 40 requests waiting inside.
    assert 45 <= limit <= 55, limit


def test_the_limit_grows_back_when_latency_is_at_its_minimum() -> None:
    assert next_limit(10, 0.1, 0.1, 80) > 10
    limit = 4.0
    for _ in range(20):
        limit = next_limit(limit, 0.1, 0.1, 80)  # an async app: no queue at any load
    assert limit == 80


def test_bounds_hold() -> None:
    assert next_limit(2, 1.0, 100.0, 80) >= 1
    assert next_limit(80, 1.0, 0.5, 80) == 80
    assert next_limit(7, 1.0, 0.0, 80) == 7  # no latency measured: no change


def test_samples_move_the_limit_once_a_window_after_a_low_load_minimum() -> None:
    limit = AdaptiveLimit(80)
    assert limit.capacity == 80
    # Busy from the start: no request saw 3 or fewer in flight, so no minimum to compare to.
    for _ in range(WINDOW):
        assert not limit.sample(2.0, in_flight_at_start=80)
    assert limit.capacity == 80 and limit.min_latency is None
    limit.sample(1.0, in_flight_at_start=1)
    changed = [limit.sample(2.0, in_flight_at_start=80) for _ in range(WINDOW - 1)]
    assert changed[-1] and not any(changed[:-1])
    assert limit.min_latency == 1.0 and limit.capacity < 80


def test_the_throttler_follows_the_limit_and_dispatches_when_it_grows() -> None:
    async def scenario() -> None:
        clock = Clock()
        throttler = Throttler("rev", lambda: None, clock)
        limiter = AdaptiveLimit(16)
        endpoint = Endpoint("i1", "127.0.0.1", 1, capacity=16, limiter=limiter)
        throttler.add(endpoint)

        async def answered(count: int, seconds: float) -> None:
            leases = [await throttler.acquire() for _ in range(count)]
            clock.advance(seconds)
            for lease in leases:
                lease.first_byte()
                lease.release()

        await answered(1, 0.1)  # at low load: the minimum, 100 ms
        await answered(9, 0.5)  # nine at once take 500 ms: queued inside the app
        assert limiter.min_latency is not None and round(limiter.min_latency, 3) == 0.1
        assert endpoint.capacity == limiter.capacity < 16
        lowered = endpoint.capacity
        # Fill it and queue one more: it waits while the instance is at its limit.
        held = [await throttler.acquire() for _ in range(lowered)]
        waiting = asyncio.ensure_future(throttler.acquire())
        await asyncio.sleep(0)
        assert not waiting.done() and throttler.queue_length == 1
        # A window of answers at the minimum latency: the limit grows and the queued request
        # takes a new slot at once, without waiting for one of the held ones to end.
        clock.advance(0.1)
        for lease in held[:WINDOW]:
            lease.first_byte()
        await asyncio.sleep(0)
        assert endpoint.capacity > lowered
        assert waiting.done() and throttler.queue_length == 0
        assert endpoint.in_flight == lowered + 1 <= endpoint.capacity

    asyncio.run(scenario())


def test_the_throttler_counts_busy_time_and_requests_for_the_cost() -> None:
    async def scenario() -> None:
        clock = Clock()
        throttler = Throttler("rev", lambda: None, clock)
        endpoint = Endpoint("i1", "127.0.0.1", 1, capacity=4)
        throttler.add(endpoint)
        first = await throttler.acquire()
        clock.advance(1.0)
        second = await throttler.acquire()  # overlapping: the instance is busy once
        clock.advance(1.0)
        first.release()
        clock.advance(0.5)
        second.release()
        clock.advance(10.0)  # idle: not billed under request-based billing
        third = await throttler.acquire()
        clock.advance(0.25)
        third.release()
        assert endpoint.requests == 3
        assert endpoint.busy_seconds == 2.75 and endpoint.busy_since is None

    asyncio.run(scenario())
