"""Scheduled executions: the pure decision of which runs are made and which are skipped as
missed, then the plane executing a job on its schedule and skipping what passed while down."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from homerun.control.job_plan import JobRequest
from homerun.control.schedules import due
from homerun.model.cron import parse_cron, time_zone
from homerun.model.events import JobDeployed
from homerun.spec import RevisionChanges

from .conftest import WALL_NOW, JobsPlane
from .test_jobs import until

UTC = time_zone("UTC")
EVERY_5 = parse_cron("*/5 * * * *")
T10_00 = WALL_NOW - 30  # 2026-12-04T10:00:00Z


def test_nothing_is_due_before_the_next_time() -> None:
    step = due(EVERY_5, UTC, since=T10_00, now=T10_00 + 200, grace=60)
    assert (step.run_at, step.missed, step.next_at) == (None, 0, T10_00 + 300)


def test_a_run_is_made_within_the_grace_of_its_time() -> None:
    step = due(EVERY_5, UTC, since=T10_00, now=T10_00 + 330, grace=60)
    assert (step.run_at, step.missed, step.next_at) == (T10_00 + 300, 0, T10_00 + 600)


def test_runs_whose_time_passed_long_ago_are_missed_not_made() -> None:
    # Down from 10:00 to 10:21:30: 10:05, 10:10, 10:15 and 10:20 (90 s ago) are all skipped.
    step = due(EVERY_5, UTC, since=T10_00, now=T10_00 + 1290, grace=60)
    assert (step.run_at, step.missed, step.next_at) == (None, 4, T10_00 + 1500)
    # Back at 10:20:40: the 10:20 run is still made, the three before it are not.
    step = due(EVERY_5, UTC, since=T10_00, now=T10_00 + 1240, grace=60)
    assert (step.run_at, step.missed) == (T10_00 + 1200, 3)


def test_a_long_outage_is_not_counted_run_by_run_for_ever() -> None:
    every_minute = parse_cron("* * * * *")
    step = due(every_minute, UTC, since=T10_00, now=T10_00 + 30 * 86400, grace=60)
    assert step.run_at is None and step.missed == 10_000
    assert step.next_at == T10_00 + 30 * 86400 + 60


async def scheduled(plane: JobsPlane, schedule: str) -> None:
    request = JobRequest(
        job="nightly",
        changes=RevisionChanges(source=str(plane.source)),
        schedule=schedule,
        time_zone="UTC",
    )
    events = [event async for event in plane.control.jobs.deploy(request)]
    assert isinstance(events[-1], JobDeployed), events


def test_a_job_runs_on_its_schedule_and_skips_runs_missed_while_down(
    make_jobs_plane: Callable[..., JobsPlane],
) -> None:
    async def main() -> None:
        plane = make_jobs_plane()
        await plane.control.restore()
        await scheduled(plane, "*/5 * * * *")
        assert plane.control.jobs.views.describe("nightly").next_run_at == T10_00 + 300
        plane.wall.now = T10_00 + 305  # 10:05:05
        plane.control.jobs.schedules.changed()
        await until(lambda: len(plane.runtime.started) == 1, "the 10:05 run")
        assert len(plane.store.executions("nightly")) == 1
        plane.runtime.started[0].exit(0)
        await until(lambda: plane.store.executions()[0].status == "succeeded", "it succeeds")
        await plane.control.close()

        # Down until 10:30:20: 10:10 to 10:25 are skipped, 10:30 (20 s ago) is made.
        later = make_jobs_plane(wall_now=T10_00 + 1820)
        try:
            await later.control.restore()
            await until(lambda: len(later.store.executions("nightly")) == 2, "the 10:30 run")
            entries = await later.control.jobs.views.logs("nightly", 50)
            messages = [entry["message"] for entry in entries]
            assert any(m.startswith("Skipped 4 scheduled run(s) of nightly") for m in messages)
            assert any("Scheduled run of 2026-12-04T10:30:00" in m for m in messages)
            assert later.control.jobs.views.describe("nightly").next_run_at == T10_00 + 2100
        finally:
            await later.control.close()

    asyncio.run(main())


def test_removing_a_schedule_stops_the_runs(make_jobs_plane: Callable[..., JobsPlane]) -> None:
    async def main() -> None:
        plane = make_jobs_plane()
        try:
            await plane.control.restore()
            await scheduled(plane, "*/5 * * * *")
            await scheduled(plane, "")
            plane.wall.now = T10_00 + 305
            plane.control.jobs.schedules.changed()
            for _ in range(100):
                await asyncio.sleep(0)
            assert plane.store.executions("nightly") == []
            assert plane.control.jobs.views.describe("nightly").schedule is None
        finally:
            await plane.control.close()

    asyncio.run(main())
