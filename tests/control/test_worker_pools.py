"""Worker pools on the control plane over a fake runtime: instances kept at their count with
Cloud Run's worker pool env, restarted after the crash backoff, replaced by a deploy, stopped
by a delete, and started again by the next daemon. No real time passes: the clock is a fake."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Awaitable, Callable
from typing import Any

from fakes import FakeInstance

from homerun.control.worker_pools import PoolRequest
from homerun.errors import NotFound
from homerun.model.events import Failed, PoolDeployed, PoolEvent
from homerun.spec import EnvChanges, RevisionChanges

from .conftest import JobsPlane


def run(
    make_jobs_plane: Callable[..., JobsPlane], scenario: Callable[[JobsPlane], Awaitable[None]]
) -> None:
    async def main() -> None:
        plane = make_jobs_plane()
        try:
            await scenario(plane)
        finally:
            await plane.control.close()

    asyncio.run(main())


async def deploy(plane: JobsPlane, instances: int | None = None, **changes: Any) -> list[PoolEvent]:
    request = PoolRequest(pool="consumer", changes=RevisionChanges(**changes), instances=instances)
    return [event async for event in plane.control.worker_pools.deploy(request)]


async def until(condition: Callable[[], bool], what: str) -> None:
    for _ in range(5000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"never happened: {what}")


def running(plane: JobsPlane) -> list[FakeInstance]:
    return [instance for instance in plane.runtime.started if instance.returncode is None]


def test_a_pool_keeps_its_count_and_backs_off_from_a_crashing_instance(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        pools = plane.control.worker_pools
        events = await deploy(
            plane, 2, source=str(plane.source), env=EnvChanges(replace={"QUEUE": "orders"})
        )
        assert isinstance(events[-1], PoolDeployed), events
        assert events[-1].revision == "consumer-00001" and events[-1].created
        await until(lambda: len(running(plane)) == 2, "two instances")
        first = plane.runtime.specs[0]
        assert first.env["CLOUD_RUN_WORKER_POOL"] == "consumer"
        assert first.env["CLOUD_RUN_REVISION"] == "consumer-00001"
        assert first.env["QUEUE"] == "orders" and "PORT" not in first.env
        assert first.env["GCE_METADATA_HOST"] == "127.0.0.1:9"  # the metadata server's
        members = plane.control.members()
        assert set(members) == {instance.pid for instance in running(plane)}
        assert set(members.values()) == {"serviceAccount:consumer"}
        assert len(plane.registered) == 2

        plane.runtime.started[0].exit(1)
        await until(lambda: pools.describe("consumer").running == 1, "one ended")
        slot = pools.describe("consumer").slots[0]
        assert slot.last_exit == "exit code 1" and slot.pid is None
        assert slot.restart_at is not None  # 10 s after the crash
        pools.wake()
        await asyncio.sleep(0)
        assert len(plane.runtime.started) == 2  # not before its backoff
        plane.clock.advance(10)
        pools.wake()
        await until(lambda: len(running(plane)) == 2, "started again after 10 s")
        assert pools.describe("consumer").slots[0].restarts == 1

    run(make_jobs_plane, scenario)


def test_a_deploy_replaces_the_instances_and_a_delete_stops_them(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        pools = plane.control.worker_pools
        await deploy(plane, 2, source=str(plane.source))
        await until(lambda: len(running(plane)) == 2, "two instances")
        old = list(running(plane))
        events = await deploy(plane, 1)  # no source: the code is kept
        assert isinstance(events[-1], PoolDeployed) and events[-1].revision == "consumer-00002"
        assert all(instance.signals == [signal.SIGTERM] for instance in old)
        await until(lambda: len(running(plane)) == 1, "one new instance")
        assert plane.runtime.specs[-1].env["CLOUD_RUN_REVISION"] == "consumer-00002"
        assert pools.describe("consumer").instances == 1
        await pools.delete("consumer")
        assert running(plane) == [] and plane.registered == {}
        try:
            pools.describe("consumer")
        except NotFound as error:
            assert "worker-pools list" in str(error)
        else:
            raise AssertionError("a deleted pool is still described")

    run(make_jobs_plane, scenario)


def test_a_new_pool_needs_its_source_and_bad_requests_change_nothing(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        events = await deploy(plane, 1)
        assert isinstance(events[-1], Failed) and "give the folder of its code" in (
            events[-1].message
        )
        missing = await deploy(
            plane, 1, source=str(plane.source), secrets={"replace": {"DB": {"secret": "nope"}}}
        )
        assert isinstance(missing[-1], Failed), missing
        assert plane.control.worker_pools.pools() == [] and plane.runtime.started == []

    run(make_jobs_plane, scenario)


def test_an_unstartable_program_waits_its_backoff_too(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def scenario(plane: JobsPlane) -> None:
        plane.runtime.unstartable = FileNotFoundError(2, "No such file or directory")
        await deploy(plane, 1, source=str(plane.source))
        pools = plane.control.worker_pools
        await until(lambda: pools.describe("consumer").slots != [], "a slot")
        await until(lambda: pools.describe("consumer").slots[0].last_exit is not None, "fails")
        slot = pools.describe("consumer").slots[0]
        assert slot.last_exit == "cannot start python: No such file or directory"
        assert len(plane.runtime.specs) == 1  # no hot loop: it waits

    run(make_jobs_plane, scenario)


def test_pools_start_again_with_the_next_daemon(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def main() -> None:
        plane = make_jobs_plane()
        await deploy(plane, 2, source=str(plane.source))
        await until(lambda: len(running(plane)) == 2, "two instances")
        await plane.control.close()
        assert running(plane) == []
        again = make_jobs_plane()
        try:
            await again.control.restore()
            await until(lambda: len(running(again)) == 2, "started again")
            assert again.runtime.specs[0].env["CLOUD_RUN_REVISION"] == "consumer-00001"
        finally:
            await again.control.close()

    asyncio.run(main())
