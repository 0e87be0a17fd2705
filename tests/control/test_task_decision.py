"""The pure decision of an execution's next step: starts within parallelism, retries, timeouts,
cancellation and the outcome, walked without processes or real time."""

from __future__ import annotations

from dataclasses import replace

from homerun.control.task_decision import (
    Decision,
    Stop,
    TaskState,
    decide,
    task_state,
    task_status,
)
from homerun.model.jobs import Attempt, ExecutionStatus, TaskSettings, TaskStatus

NOW = 1000.0


def settings(**fields: int) -> TaskSettings:
    return TaskSettings(**{"task_count": 5, **fields})


def pending(count: int) -> list[TaskState]:
    return [TaskState(index) for index in range(count)]


def step(
    tasks: list[TaskState],
    config: TaskSettings,
    now: float = NOW,
    *,
    max_parallelism: int = 8,
    cancelled: bool = False,
) -> Decision:
    return decide(config, tasks, now, max_parallelism=max_parallelism, cancelled=cancelled)


def started(task: TaskState, now: float = NOW) -> TaskState:
    return replace(task, attempts=task.attempts + 1, running_since=now)


def failed(task: TaskState, why: str = "exit code 1") -> TaskState:
    return replace(task, running_since=None, failures=task.failures + 1, last_failure=why)


def succeeded(task: TaskState) -> TaskState:
    return replace(task, running_since=None, succeeded=True)


def test_parallelism_bounds_the_first_starts_lowest_index_first() -> None:
    decision = step(pending(5), settings(parallelism=2))
    assert decision.start == (0, 1)
    assert decision.outcome is None


def test_parallelism_zero_means_as_many_as_the_platform_allows() -> None:
    assert step(pending(5), settings(), max_parallelism=3).start == (0, 1, 2)
    assert step(pending(5), settings(), max_parallelism=50).start == (0, 1, 2, 3, 4)


def test_a_set_parallelism_is_honoured_beyond_the_platform_default() -> None:
    assert step(pending(5), settings(parallelism=4), max_parallelism=2).start == (0, 1, 2, 3)


def test_a_freed_slot_goes_to_the_next_waiting_task() -> None:
    config = settings(parallelism=2)
    tasks = pending(5)
    tasks[0], tasks[1] = started(tasks[0]), started(tasks[1])
    assert step(tasks, config).start == ()
    tasks[0] = succeeded(tasks[0])
    assert step(tasks, config).start == (2,)


def test_a_failed_task_is_retried_before_higher_indexes_start() -> None:
    config = settings(parallelism=2, max_retries=1)
    tasks = pending(5)
    tasks[0], tasks[1] = started(tasks[0]), started(tasks[1])
    tasks[1] = failed(tasks[1])
    assert task_status(tasks[1], config) == TaskStatus.RETRYING
    assert step(tasks, config).start == (1,)


def test_a_task_past_its_retries_fails_for_good_and_the_others_still_run() -> None:
    config = settings(task_count=3, parallelism=1, max_retries=1)
    tasks = pending(3)
    tasks[0] = failed(started(failed(started(tasks[0]))))  # two attempts, both failed
    assert task_status(tasks[0], config) == TaskStatus.FAILED
    assert step(tasks, config).start == (1,)


def test_the_execution_succeeds_when_every_task_does() -> None:
    config = settings(task_count=2)
    tasks = [succeeded(started(failed(started(TaskState(0))))), succeeded(started(TaskState(1)))]
    outcome = step(tasks, config).outcome
    assert outcome is not None
    assert outcome.status == ExecutionStatus.SUCCEEDED
    assert outcome.message == "2 tasks completed successfully after 1 retry"


def test_a_failed_execution_names_each_failed_task_and_why() -> None:
    config = settings(task_count=3, max_retries=0)
    tasks = [
        failed(started(TaskState(0)), "exit code 3; its last line: boom"),
        succeeded(started(TaskState(1))),
        failed(started(TaskState(2)), "timed out after 10s (--task-timeout)"),
    ]
    outcome = step(tasks, config).outcome
    assert outcome is not None and outcome.status == ExecutionStatus.FAILED
    assert outcome.message == (
        "2 of 3 tasks failed: task 0: exit code 3; its last line: boom (1 attempt); "
        "task 2: timed out after 10s (--task-timeout) (1 attempt)"
    )


def test_the_execution_waits_for_a_running_task_even_once_others_failed() -> None:
    config = settings(task_count=2, max_retries=0)
    tasks = [failed(started(TaskState(0))), started(TaskState(1))]
    assert step(tasks, config).outcome is None


def test_a_running_task_past_its_timeout_is_stopped_and_the_decision_wakes_at_deadlines() -> None:
    config = settings(task_count=3, task_timeout_seconds=600)
    tasks = [started(TaskState(0), now=0.0), started(TaskState(1), now=500.0), TaskState(2)]
    decision = step(tasks, config, now=700.0, max_parallelism=2)
    assert decision.stop == (Stop(0, "timed out after 10m (--task-timeout)"),)
    assert decision.wake_at == 1100.0  # task 1's deadline
    assert decision.start == ()  # task 0 holds its slot until it has exited


def test_a_task_asked_to_stop_is_not_stopped_again() -> None:
    config = settings(task_count=1, task_timeout_seconds=10)
    tasks = [replace(started(TaskState(0), now=0.0), stopping=True)]
    decision = step(tasks, config, now=50.0)
    assert decision.stop == () and decision.wake_at is None


def test_cancelling_stops_running_tasks_and_starts_none() -> None:
    config = settings(parallelism=2)
    tasks = pending(5)
    tasks[0], tasks[1] = started(tasks[0]), succeeded(started(tasks[1]))
    decision = step(tasks, config, cancelled=True)
    assert decision.stop == (Stop(0, "cancelled"),) and decision.start == ()
    assert decision.outcome is None
    tasks[0] = failed(tasks[0], "cancelled")
    outcome = step(tasks, config, cancelled=True).outcome
    assert outcome is not None and outcome.status == ExecutionStatus.CANCELLED
    assert outcome.message == "cancelled: 1 of 5 tasks had completed successfully"


def test_task_state_reads_attempts_and_interrupted_ones_are_not_held_against_retries() -> None:
    attempts = [
        Attempt(number=0, started_at=1.0, ended_at=2.0, exit_status=1, failure="exit code 1"),
        Attempt(number=1, started_at=3.0, ended_at=4.0, failure="interrupted", interrupted=True),
        Attempt(number=2, started_at=5.0),
    ]
    state = task_state(4, attempts, running_since=NOW)
    assert (state.attempts, state.failures, state.running, state.succeeded) == (3, 1, True, False)
    assert state.last_failure == "interrupted"
    done = task_state(4, [*attempts[:2], Attempt(number=2, started_at=5.0, ended_at=6.0)])
    assert done.succeeded and not done.running
