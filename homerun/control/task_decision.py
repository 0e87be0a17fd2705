"""Which tasks of an execution start now, which stop, and whether the execution is over: a
pure function of its task settings, what each task has done so far, and the time (as
scaling/autoscaler.decide is for instances). control/executions.py applies it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from homerun.model.jobs import (
    Attempt,
    ExecutionStatus,
    TaskSettings,
    TaskStatus,
    format_duration,
)

# A failed execution's message names at most this many tasks ("... and 40 more").
NAMED_FAILURES = 10
# Why a task stopped when its execution was cancelled.
CANCELLED = "cancelled"


@dataclass(frozen=True)
class TaskState:
    """What the decision needs to know of one task."""

    index: int
    attempts: int = 0  # attempts started so far: the next one's CLOUD_RUN_TASK_ATTEMPT
    failures: int = 0  # failed attempts held against --max-retries (interrupted ones are not)
    succeeded: bool = False
    running_since: float | None = None  # clock time its running attempt started
    stopping: bool = False  # asked to stop (timeout, cancel): its exit is awaited
    last_failure: str | None = None  # why its latest failed attempt failed

    @property
    def running(self) -> bool:
        return self.running_since is not None


@dataclass(frozen=True)
class Stop:
    index: int
    reason: str  # becomes the attempt's failure: "timed out after 10m (--task-timeout)"


@dataclass(frozen=True)
class Outcome:
    status: ExecutionStatus
    message: str


@dataclass(frozen=True)
class Decision:
    start: tuple[int, ...] = ()  # task indexes, each for its next attempt
    stop: tuple[Stop, ...] = ()
    outcome: Outcome | None = None  # the execution is over
    wake_at: float | None = None  # decide again then at the latest (a task's deadline)


def task_state(
    index: int,
    attempts: Sequence[Attempt],
    *,
    running_since: float | None = None,
    stopping: bool = False,
) -> TaskState:
    """A task's state from its recorded attempts; `running_since` (the decision's clock) for
    the attempt running now, if any."""
    failed = [attempt for attempt in attempts if attempt.failure is not None]
    return TaskState(
        index=index,
        attempts=len(attempts),
        failures=sum(1 for attempt in failed if not attempt.interrupted),
        succeeded=bool(attempts) and attempts[-1].succeeded,
        running_since=running_since,
        stopping=stopping,
        last_failure=failed[-1].failure if failed else None,
    )


def task_status(task: TaskState, settings: TaskSettings) -> TaskStatus:
    if task.running:
        return TaskStatus.RUNNING
    if task.succeeded:
        return TaskStatus.SUCCEEDED
    if task.failures > settings.max_retries:
        return TaskStatus.FAILED
    return TaskStatus.RETRYING if task.attempts else TaskStatus.PENDING


def decide(
    settings: TaskSettings,
    tasks: Sequence[TaskState],
    now: float,
    *,
    max_parallelism: int,
    cancelled: bool = False,
) -> Decision:
    """The next step of an execution. `max_parallelism` is what parallelism 0 ("as many as
    possible") means on this machine; a parallelism the job sets is honoured as it is.

    With 5 tasks, parallelism 2 and max-retries 1: tasks 0 and 1 start; when 1 fails (its
    first failure, one retry left) the freed slot goes to the lowest index waiting, which is
    1 again, before 2, 3 and 4. A task that fails twice is failed for good; the others still
    run, and the execution fails once all are done, naming that task."""
    running = [task for task in tasks if task.running]
    if cancelled:
        stops = tuple(Stop(task.index, CANCELLED) for task in running if not task.stopping)
        if running:
            return Decision(stop=stops)
        return Decision(outcome=_cancelled(tasks))
    stops, wake_at = _timeouts(settings, running, now)
    limit = settings.parallelism or max_parallelism
    waiting = [
        task.index
        for task in tasks
        if task_status(task, settings) in (TaskStatus.PENDING, TaskStatus.RETRYING)
    ]
    # A task asked to stop still holds its slot until it has exited.
    start = tuple(sorted(waiting)[: max(0, limit - len(running))])
    if not running and not waiting:
        return Decision(outcome=_finished(tasks))
    return Decision(start=start, stop=stops, wake_at=wake_at)


def _timeouts(
    settings: TaskSettings, running: Sequence[TaskState], now: float
) -> tuple[tuple[Stop, ...], float | None]:
    timeout = settings.task_timeout_seconds
    stops: list[Stop] = []
    deadlines: list[float] = []
    for task in running:
        if task.stopping or task.running_since is None:
            continue
        deadline = task.running_since + timeout
        if now >= deadline:
            stops.append(
                Stop(task.index, f"timed out after {format_duration(timeout)} (--task-timeout)")
            )
        else:
            deadlines.append(deadline)
    return tuple(stops), min(deadlines, default=None)


def _finished(tasks: Sequence[TaskState]) -> Outcome:
    failed = [task for task in tasks if not task.succeeded]
    total = len(tasks)
    if not failed:
        retried = sum(task.failures for task in tasks)
        after = f" after {retried} retr{'y' if retried == 1 else 'ies'}" if retried else ""
        return Outcome(ExecutionStatus.SUCCEEDED, f"{_tasks(total)} completed successfully{after}")
    named = "; ".join(
        f"task {task.index}: {task.last_failure or 'failed'} ({_attempts(task.attempts)})"
        for task in failed[:NAMED_FAILURES]
    )
    more = len(failed) - NAMED_FAILURES
    if more > 0:
        named += f"; and {more} more"
    return Outcome(ExecutionStatus.FAILED, f"{len(failed)} of {_tasks(total)} failed: {named}")


def _cancelled(tasks: Sequence[TaskState]) -> Outcome:
    succeeded = sum(1 for task in tasks if task.succeeded)
    return Outcome(
        ExecutionStatus.CANCELLED,
        f"cancelled: {succeeded} of {_tasks(len(tasks))} had completed successfully",
    )


def _tasks(count: int) -> str:
    return f"{count} task{'' if count == 1 else 's'}"


def _attempts(count: int) -> str:
    return f"{count} attempt{'' if count == 1 else 's'}"
