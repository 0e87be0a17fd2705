"""A retired revision's runtime resources (its zygote) are released once its last instance is
gone, whichever way it went: retirement with instances drained, retirement at zero, a stop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from fakes import Clock, FakeInstance, FakeRuntime, redirected

from homerun.observe.logs import LogStore
from homerun.routing.throttler import Throttler
from homerun.scaling.supervisor import InstanceRegistry, Supervisor
from homerun.scaling.unit import RevisionPlan, RevisionUnit

REVISION = "svc-00001-abc"


def make(tmp_path: Path) -> tuple[Supervisor, RevisionUnit, FakeRuntime]:
    clock = Clock()
    runtime = FakeRuntime()
    supervisor = Supervisor(
        runtime,
        LogStore(tmp_path / "logs"),
        InstanceRegistry(record=lambda *_: None, forget=lambda _: None),
        clock=clock,
        probe_interval=0.002,
        stop_grace=1,
        redirected_ports=redirected,
    )
    plan = RevisionPlan(
        service="svc",
        name=REVISION,
        argv=["app"],
        env={},
        cwd=tmp_path,
        concurrency=10,
        startup_timeout=5,
        request_timeout=5,
    )
    unit = RevisionUnit(plan, Throttler(REVISION, lambda: None, clock), deploying=False)
    return supervisor, unit, runtime


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, 10))


def test_retiring_a_revision_at_zero_forgets_it_at_once(tmp_path: Path) -> None:
    async def scenario() -> None:
        supervisor, unit, runtime = make(tmp_path)
        supervisor.retire(unit)
        assert runtime.forgotten == [REVISION]
        supervisor.retire(unit)  # once is enough
        assert runtime.forgotten == [REVISION]

    run(scenario())


def test_a_retired_revision_is_forgotten_when_its_last_instance_stops(tmp_path: Path) -> None:
    async def scenario() -> None:
        supervisor, unit, runtime = make(tmp_path)
        first = await supervisor.start_instance(unit)
        second = await supervisor.start_instance(unit)
        supervisor.retire(unit)
        assert runtime.forgotten == []  # its instances still run (draining)
        await supervisor.stop_instance(unit, first)
        assert runtime.forgotten == []
        await supervisor.stop_instance(unit, second)
        assert runtime.forgotten == [REVISION]
        await supervisor.close()

    run(scenario())


def test_a_retired_revision_whose_last_instance_exits_on_its_own_is_forgotten(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        supervisor, unit, runtime = make(tmp_path)
        instance = await supervisor.start_instance(unit)
        supervisor.retire(unit)
        assert isinstance(instance.process, FakeInstance)
        instance.process.exit(1)  # crashed while draining
        for _ in range(100):
            if runtime.forgotten:
                break
            await asyncio.sleep(0.01)
        assert runtime.forgotten == [REVISION]
        await supervisor.close()

    run(scenario())


def test_stop_revision_forgets_it_after_stopping_everything(tmp_path: Path) -> None:
    async def scenario() -> None:
        supervisor, unit, runtime = make(tmp_path)
        instance = await supervisor.start_instance(unit)
        await supervisor.stop_revision(unit)
        assert instance.process.returncode is not None
        assert runtime.forgotten == [REVISION]

    run(scenario())


def test_a_serving_revision_at_zero_keeps_its_zygote(tmp_path: Path) -> None:
    """Scaled to zero is not retired: the zygote is what makes its next start fast (the memory
    budget, not the supervisor, decides whether it stays)."""

    async def scenario() -> None:
        supervisor, unit, runtime = make(tmp_path)
        instance = await supervisor.start_instance(unit)
        await supervisor.stop_instance(unit, instance)
        assert runtime.forgotten == []
        await supervisor.close()

    run(scenario())


def test_a_retired_revision_started_again_for_queued_requests_is_forgotten_again(
    tmp_path: Path,
) -> None:
    """Retirement at zero forgets at once; requests that were queued still get an instance
    (its start makes the zygote again), and once it is gone the revision is forgotten again."""

    async def scenario() -> None:
        supervisor, unit, runtime = make(tmp_path)
        supervisor.retire(unit)
        instance = await supervisor.start_instance(unit)
        assert runtime.forgotten == [REVISION]
        await supervisor.stop_instance(unit, instance)
        assert runtime.forgotten == [REVISION, REVISION]

    run(scenario())
