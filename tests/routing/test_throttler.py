"""The throttler's slots and FIFO queue, driven on a real event loop (no clock needed)."""

import asyncio
from collections.abc import Coroutine

import pytest
from fakes import Clock

from homerun.routing.throttler import Endpoint, Lease, RevisionUnavailable, Throttler


class Demand:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


def run(coroutine: Coroutine[object, object, None]) -> None:
    asyncio.run(coroutine)


clock = Clock()


def test_acquire_takes_a_free_slot_without_demand() -> None:
    async def scenario() -> None:
        demand = Demand()
        throttler = Throttler("rev", demand, clock)
        endpoint = Endpoint("i1", "127.0.0.1", 1, capacity=2)
        throttler.add(endpoint)
        first = await throttler.acquire()
        second = await throttler.acquire()
        assert first.endpoint is endpoint and second.endpoint is endpoint
        assert endpoint.in_flight == 2 and demand.calls == 0
        first.release()
        first.release()  # releasing twice is harmless
        assert endpoint.in_flight == 1

    run(scenario())


def test_full_instance_queues_in_fifo_order_and_never_exceeds_capacity() -> None:
    async def scenario() -> None:
        demand = Demand()
        throttler = Throttler("rev", demand, clock)
        endpoint = Endpoint("i1", "127.0.0.1", 1, capacity=1)
        throttler.add(endpoint)
        held = await throttler.acquire()
        order: list[int] = []

        async def request(number: int) -> None:
            lease = await throttler.acquire()
            assert endpoint.in_flight <= endpoint.capacity
            order.append(number)
            await asyncio.sleep(0)
            lease.release()

        tasks = [asyncio.create_task(request(n)) for n in range(5)]
        await asyncio.sleep(0)
        assert throttler.queue_length == 5 and demand.calls == 5
        held.release()
        await asyncio.gather(*tasks)
        assert order == [0, 1, 2, 3, 4]
        assert endpoint.in_flight == 0 and throttler.queue_length == 0

    run(scenario())


def test_waiting_request_is_served_when_an_instance_becomes_ready() -> None:
    async def scenario() -> None:
        demand = Demand()
        throttler = Throttler("rev", demand, clock)
        waiter = asyncio.create_task(throttler.acquire())
        await asyncio.sleep(0)
        assert demand.calls == 1 and not waiter.done()
        endpoint = Endpoint("i1", "127.0.0.1", 1, capacity=80)
        throttler.add(endpoint)
        lease = await waiter
        assert lease.endpoint is endpoint and endpoint.in_flight == 1

    run(scenario())


def test_cancelled_waiter_leaks_no_slot() -> None:
    async def scenario() -> None:
        throttler = Throttler("rev", Demand(), clock)
        endpoint = Endpoint("i1", "127.0.0.1", 1, capacity=1)
        throttler.add(endpoint)
        held = await throttler.acquire()
        waiter = asyncio.create_task(throttler.acquire())
        await asyncio.sleep(0)
        waiter.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiter
        held.release()
        assert endpoint.in_flight == 0 and throttler.queue_length == 0
        # The slot handed to a waiter that is cancelled in the same turn comes back too.
        held = await throttler.acquire()
        waiter = asyncio.create_task(throttler.acquire())
        await asyncio.sleep(0)
        held.release()  # hands the slot to the waiter...
        waiter.cancel()  # ...which is cancelled before it runs
        with pytest.raises(asyncio.CancelledError):
            await waiter
        assert endpoint.in_flight == 0

    run(scenario())


def test_failed_start_answers_every_waiter() -> None:
    async def scenario() -> None:
        throttler = Throttler("rev", Demand(), clock)
        waiters = [asyncio.create_task(throttler.acquire()) for _ in range(3)]
        await asyncio.sleep(0)
        throttler.fail_waiters(503, "boom")
        for waiter in waiters:
            with pytest.raises(RevisionUnavailable) as failure:
                await waiter
            assert failure.value.status == 503

    run(scenario())


def test_round_robin_skips_full_instances_above_concurrency_three() -> None:
    async def scenario() -> None:
        throttler = Throttler("rev", Demand(), clock)
        first = Endpoint("i1", "127.0.0.1", 1, capacity=4)
        second = Endpoint("i2", "127.0.0.1", 2, capacity=4)
        throttler.add(first)
        throttler.add(second)
        leases = [await throttler.acquire() for _ in range(4)]
        assert [lease.endpoint.name for lease in leases] == ["i1", "i2", "i1", "i2"]
        first.in_flight = first.capacity  # full: skipped
        lease = await throttler.acquire()
        assert lease.endpoint is second

    run(scenario())


def test_first_available_for_small_concurrency() -> None:
    async def scenario() -> None:
        throttler = Throttler("rev", Demand(), clock)
        first = Endpoint("i1", "127.0.0.1", 1, capacity=1)
        second = Endpoint("i2", "127.0.0.1", 2, capacity=1)
        throttler.add(first)
        throttler.add(second)
        one: Lease = await throttler.acquire()
        assert one.endpoint is first
        two = await throttler.acquire()
        assert two.endpoint is second
        one.release()
        three = await throttler.acquire()
        assert three.endpoint is first

    run(scenario())


def test_drain_waits_for_in_flight_requests_and_takes_no_new_ones() -> None:
    async def scenario() -> None:
        throttler = Throttler("rev", Demand(), clock)
        old = Endpoint("old", "127.0.0.1", 1, capacity=10)
        throttler.add(old)
        lease = await throttler.acquire()
        drained = asyncio.create_task(throttler.drain(old))
        await asyncio.sleep(0)
        assert not drained.done()
        new = Endpoint("new", "127.0.0.1", 2, capacity=10)
        throttler.add(new)
        assert (await throttler.acquire()).endpoint is new
        lease.release()
        await asyncio.wait_for(drained, 1)
        assert old.in_flight == 0

    run(scenario())


def test_meter_counts_requests_in_flight_and_queued() -> None:
    async def scenario() -> None:
        clock = Clock()
        throttler = Throttler("rev", Demand(), clock)
        endpoint = Endpoint("i1", "127.0.0.1", 1, capacity=1)
        throttler.add(endpoint)
        held = await throttler.acquire()
        waiter = asyncio.create_task(throttler.acquire())
        await asyncio.sleep(0)
        assert throttler.meter.concurrency == 2
        clock.now += 2
        held.release()
        lease = await waiter
        assert throttler.meter.concurrency == 1
        clock.now += 0.5
        lease.first_byte()
        assert list(throttler.waits) == [2.5]
        lease.release()
        assert throttler.meter.concurrency == 0
        failed = asyncio.create_task(throttler.acquire())
        held = await throttler.acquire()
        await asyncio.sleep(0)
        assert throttler.meter.concurrency == 2  # one in flight, one waiting
        throttler.remove(endpoint)
        throttler.fail_waiters(503, "gone")
        with pytest.raises(RevisionUnavailable):
            await failed
        held.release()
        assert throttler.meter.concurrency == 0

    run(scenario())


def test_waiters_past_the_overload_wait_get_429_in_arrival_order() -> None:
    async def scenario() -> None:
        clock = Clock()
        throttler = Throttler("rev", Demand(), clock)
        first = asyncio.create_task(throttler.acquire())
        await asyncio.sleep(0)
        clock.now += 5
        second = asyncio.create_task(throttler.acquire())
        await asyncio.sleep(0)
        clock.now += 6
        # Waited since before clock-10: only the first.
        assert throttler.expire_waiters(clock.now - 10, 429, "full") == 1
        with pytest.raises(RevisionUnavailable) as failure:
            await first
        assert failure.value.status == 429
        assert not second.done() and throttler.queue_length == 1
        second.cancel()

    run(scenario())


def test_try_acquire_takes_a_free_slot_or_nothing() -> None:
    async def scenario() -> None:
        throttler = Throttler("rev", Demand(), Clock())
        assert throttler.try_acquire() is None  # no instance: acquire() must queue instead
        endpoint = Endpoint("i1", "127.0.0.1", 1, capacity=1)
        throttler.add(endpoint)
        lease = throttler.try_acquire()
        assert lease is not None and endpoint.in_flight == 1
        assert throttler.meter.concurrency == 1
        assert throttler.try_acquire() is None  # full
        lease.release()
        assert endpoint.in_flight == 0 and throttler.meter.concurrency == 0

    run(scenario())


def test_queue_drained_returns_once_the_queue_is_served() -> None:
    async def scenario() -> None:
        throttler = Throttler("rev", Demand(), Clock())
        await asyncio.wait_for(throttler.queue_drained(), 1)  # nothing queued
        waiter = asyncio.create_task(throttler.acquire())
        await asyncio.sleep(0)
        drained = asyncio.create_task(throttler.queue_drained())
        await asyncio.sleep(0)
        assert not drained.done()
        endpoint = Endpoint("i1", "127.0.0.1", 1, capacity=1)
        throttler.add(endpoint)
        await asyncio.wait_for(drained, 1)
        (await waiter).release()

    run(scenario())


def test_a_suspended_instance_gets_no_new_request_until_resumed() -> None:
    async def scenario() -> None:
        demand = Demand()
        throttler = Throttler("rev", demand, clock)
        unready = Endpoint("i1", "127.0.0.1", 1, capacity=1)
        other = Endpoint("i2", "127.0.0.1", 2, capacity=1)
        throttler.add(unready)
        in_flight = await throttler.acquire()
        throttler.add(other)
        held = await throttler.acquire()
        assert held.endpoint is other
        waiter = asyncio.create_task(throttler.acquire())
        await asyncio.sleep(0)
        calls = demand.calls
        throttler.suspend(unready)
        assert demand.calls == calls + 1  # a request waits and capacity went: decide now
        # Its in-flight request finishes; the slot it frees is not handed on to the waiter.
        in_flight.release()
        await asyncio.sleep(0)
        assert not waiter.done() and unready.in_flight == 0
        throttler.resume(unready)
        lease = await waiter
        assert lease.endpoint is unready and throttler.endpoints == [other, unready]
        # An instance that exited meanwhile is not resumed.
        throttler.suspend(unready)
        throttler.remove(unready)
        throttler.resume(unready)
        assert throttler.endpoints == [other]

    run(scenario())
