"""Jobs executed on a schedule (`--schedule "*/5 * * * *" --time-zone Europe/Paris`), as Cloud
Scheduler executes Cloud Run jobs.

A run is made at its time, give or take a minute (`GRACE_SECONDS`). Runs whose time passed
while homerun was not running (or the machine slept) are skipped, not made up, as Cloud
Scheduler does not make up the runs of a paused job: the job's log says how many. `due` is the
pure decision; `Schedules` applies it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from homerun.control.executions import Executions
from homerun.control.job_logs import JobLogs, job_event
from homerun.control.tasks import Tasks
from homerun.errors import HomerunError
from homerun.model.cron import Cron, next_time, parse_cron, time_zone
from homerun.model.jobs import ExecutionOverrides
from homerun.observe.logs import iso_time
from homerun.store import JobRecord, Store

GRACE_SECONDS = 60.0
# The loop looks at the wall clock at least this often: its timers run on the monotonic
# clock, which a suspended machine or a wall clock set by hand leaves behind.
LOOK_SECONDS = 60.0
# Past this many missed runs (a minutely schedule down for a week), they are not counted on.
MAX_COUNTED = 10_000


@dataclass(frozen=True)
class Due:
    run_at: float | None  # make the run of this time now
    missed: int  # runs whose time passed more than the grace ago: skipped
    next_at: float  # the next run's time


def due(cron: Cron, zone: ZoneInfo, since: float, now: float, grace: float) -> Due:
    """What to do at `now` with the runs the schedule names after `since` (when the last
    check was made). With `*/5` checked last at 10:00 and now 10:21:30, grace 60 s: the runs
    of 10:05, 10:10, 10:15 and 10:20 passed; 10:20 is 90 s ago, past the grace, so all four
    are missed and the next is 10:25."""
    run_at, missed, moment = None, 0, since
    for _ in range(MAX_COUNTED):
        upcoming = next_time(cron, moment, zone)
        if upcoming > now:
            return Due(run_at, missed, upcoming)
        if now - upcoming <= grace:
            missed += run_at is not None  # two within the grace: the later one is made
            run_at = upcoming
        else:
            missed += 1
        moment = upcoming
    return Due(None, missed + (run_at is not None), next_time(cron, now, zone))


class Schedules:
    def __init__(
        self,
        *,
        store: Store,
        logs: JobLogs,
        executions: Executions,
        tasks: Tasks,
        wall_clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._logs = logs
        self._executions = executions
        self._tasks = tasks
        self._wall_clock = wall_clock
        self._changed = asyncio.Event()
        self._loop: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._loop is None:
            self._loop = self._tasks.spawn(self._run())

    def changed(self) -> None:
        """A schedule was set, changed or removed (or the clock moved): look again now."""
        self._changed.set()

    def next_run(self, job: JobRecord) -> float | None:
        if not job.schedule:
            return None
        since = max(job.scheduled_at or 0.0, self._wall_clock())
        return next_time(parse_cron(job.schedule), since, time_zone(job.time_zone))

    async def _run(self) -> None:
        while True:
            self._changed.clear()
            now = self._wall_clock()
            wake = now + LOOK_SECONDS
            for job in self._store.jobs():
                if job.schedule:
                    wake = min(wake, self._check(job, now))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), max(0.0, wake - now))

    def _check(self, job: JobRecord, now: float) -> float:
        assert job.schedule is not None
        try:
            step = due(
                parse_cron(job.schedule),
                time_zone(job.time_zone),
                job.scheduled_at or job.updated_at,
                now,
                GRACE_SECONDS,
            )
        except HomerunError as error:  # stored before a check changed: say so, once a minute
            self._logs.emit(job_event(job.name, f"Schedule not followed: {error}", "ERROR"))
            return now + LOOK_SECONDS
        if step.missed:
            self._logs.emit(
                job_event(
                    job.name,
                    f"Skipped {step.missed} scheduled run(s) of {job.name} whose time passed "
                    "while homerun was not running; missed runs are not made up. Next run: "
                    f"{iso_time(step.next_at)}",
                    "WARNING",
                )
            )
        if step.run_at is not None:
            self._execute(job, step.run_at)
        if step.missed or step.run_at is not None:
            self._store.mark_scheduled(job.name, now)
        return step.next_at

    def _execute(self, job: JobRecord, run_at: float) -> None:
        schedule = f"{job.schedule} ({job.time_zone})"
        try:
            execution = self._executions.execute(job.name, ExecutionOverrides())
        except HomerunError as error:  # a secret it reads is gone, say
            self._logs.emit(
                job_event(job.name, f"Scheduled run of {iso_time(run_at)} failed: {error}", "ERROR")
            )
            return
        self._logs.emit(
            job_event(
                job.name,
                f"Scheduled run of {iso_time(run_at)} ({schedule}): execution {execution.name}",
                execution=execution.name,
            )
        )
