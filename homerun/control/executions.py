"""Executions of jobs: each runs its tasks as processes (or containers of the job's image,
when a container engine built it) through the instance runtime, as
control/task_decision.decide says (start, retry, time out, finish), and records every attempt
in the store as it starts and ends.

An execution survives a daemon restart: `restore` resumes the executions that were running.
Their tasks that had succeeded stay done; an attempt the stop interrupted is recorded as such
(not held against the task's retries) and the task runs again as its next attempt."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import string
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from secrets import choice

from homerun.access.iam import instance_member
from homerun.control.environment import container_spec, metadata_env
from homerun.control.job_artifacts import JobArtifacts
from homerun.control.job_logs import JobLogs, job_event, task_entry
from homerun.control.job_plan import plan_execution
from homerun.control.secrets import SecretValues
from homerun.control.task_decision import CANCELLED, Outcome, TaskState, decide, task_state
from homerun.control.tasks import Tasks
from homerun.errors import HomerunError, InvalidSpec
from homerun.model.artifact import ArtifactRecord
from homerun.model.jobs import (
    FINISHED_EXECUTION,
    Attempt,
    ExecutionOverrides,
    ExecutionStatus,
)
from homerun.model.limits import limits
from homerun.model.volumes import NO_MOUNTS, Mounts, sandbox_needed
from homerun.routing.types import Address
from homerun.runtime import Instance, InstanceSpec, OutputSink, Runtime, describe_status, stop_all
from homerun.runtime.names import INHERITED, resolving_env
from homerun.scaling.supervisor import InstanceRegistry
from homerun.spec import RevisionSpec, expand_k8s_vars
from homerun.store import ExecutionRecord, Store

INTERRUPTED = "interrupted: the daemon stopped during this attempt"
# Lines of a task's output kept to say why its attempt failed.
LAST_LINES = 3


@dataclass
class _Task:
    """One task of a running execution."""

    index: int
    attempts: list[Attempt]
    # The running attempt
    instance: Instance | None = None
    running_since: float | None = None  # on the decision's clock
    stop_reason: str | None = None
    recent: deque[str] = field(default_factory=lambda: deque(maxlen=LAST_LINES))


class _Run:
    """A running execution: its tasks, and what wakes its loop."""

    def __init__(
        self, record: ExecutionRecord, attempts: Mapping[int, tuple[Attempt, ...]]
    ) -> None:
        self.record = record
        self.tasks = [
            _Task(index, list(attempts.get(index, ())))
            for index in range(record.settings.task_count)
        ]
        self.cancelled = record.cancel_requested
        self.halting = False  # the daemon stops: attempts that end now were interrupted
        self.changed = asyncio.Event()
        self.watchers: set[asyncio.Task[None]] = set()
        self.env: dict[str, str] = {}  # read at its start: secrets included
        self.mounts: Mounts = NO_MOUNTS  # likewise: its secret files' values read then
        self.loop: asyncio.Task[None] | None = None


class Executions:
    def __init__(
        self,
        *,
        store: Store,
        logs: JobLogs,
        runtime: Runtime,
        secrets: SecretValues,
        artifacts: JobArtifacts,
        tasks: Tasks,
        registry: InstanceRegistry,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        host_env: Mapping[str, str],
        stop_grace: float,
        max_parallelism: int,
        hosts_file: Path | None = None,
        metadata_address: Address | None = None,
        runs_containers: bool = False,
        mounts_refused: str | None = None,
    ) -> None:
        # Why process tasks cannot have secret files or volumes (no sandbox), or None.
        self._mounts_refused = mounts_refused
        self._runs_containers = runs_containers  # `runtime` starts containers of images
        # Collaborators
        self._store = store
        self._logs = logs
        self._runtime = runtime
        self._secrets = secrets
        self._artifacts = artifacts
        self._tasks = tasks
        self._registry = registry
        self._clock = clock
        self._wall_clock = wall_clock
        self._host_env = host_env
        self._hosts_file = hosts_file
        self._metadata_address = metadata_address
        self._stop_grace = stop_grace
        self._max_parallelism = max_parallelism
        # Per running execution
        self._runs: dict[str, _Run] = {}

    # -- what the admin API asks --------------------------------------------------------

    def execute(self, job: str, overrides: ExecutionOverrides) -> ExecutionRecord:
        """Start an execution of the job as it is now (with these overrides)."""
        record = self._store.job(job)
        plan = plan_execution(record, overrides)
        self._secrets.check(plan.template)
        self._check_mounts(plan.template, plan.artifact)
        name = self._new_name(job)
        execution = self._store.create_execution(
            name, record, plan.template, plan.settings, plan.artifact
        )
        settings = plan.settings
        parallel = settings.parallelism or f"up to {self._max_parallelism}"
        self._logs.emit(
            job_event(
                job,
                f"Execution {name} started: {settings.task_count} task(s), {parallel} at once, "
                f"{settings.max_retries} retries each, task timeout "
                f"{settings.task_timeout_seconds}s",
                execution=name,
            )
        )
        self._run(execution, {})
        return execution

    def cancel(self, name: str) -> ExecutionRecord:
        record = self._store.execution(name)
        if record.status in FINISHED_EXECUTION:
            raise InvalidSpec(f"execution {name} has already {record.status}: nothing to cancel")
        self._store.request_cancel(name)
        run = self._runs.get(name)
        if run is not None:
            run.cancelled = True
            run.changed.set()
        self._logs.emit(job_event(record.job, f"Execution {name} cancelled", execution=name))
        return self._store.execution(name)

    async def delete(self, name: str) -> None:
        record = self._store.execution(name)
        if record.status not in FINISHED_EXECUTION:
            raise InvalidSpec(
                f"execution {name} is still running; cancel it first "
                f"(`homerun jobs executions cancel {name}`)"
            )
        self._store.delete_execution(name)
        self._logs.emit(job_event(record.job, f"Execution {name} deleted", execution=name))

    async def stop_job(self, job: str) -> None:
        """Cancel the job's running executions and wait until their tasks are gone."""
        runs = [run for run in self._runs.values() if run.record.job == job]
        for run in runs:
            self._store.request_cancel(run.record.name)
            run.cancelled = True
            run.changed.set()
        await asyncio.gather(*(run.loop for run in runs if run.loop), return_exceptions=True)

    def wake(self) -> None:
        """Decide again now for every running execution (its tasks' deadlines included)."""
        for run in self._runs.values():
            run.changed.set()

    # -- startup and shutdown -------------------------------------------------------------

    def restore(self) -> None:
        """After a (re)start: resume every execution the last daemon left running."""
        for record in self._store.executions(status=ExecutionStatus.RUNNING):
            attempts = self._store.attempts(record.name)
            interrupted = []
            for index, recorded in attempts.items():
                if recorded and recorded[-1].running:  # a daemon killed outright left it
                    ended = _interrupted(recorded[-1], self._wall_clock())
                    self._store.record_attempt(record.name, index, ended)
                    interrupted.append(index)
                elif recorded and recorded[-1].failure == INTERRUPTED:  # stopped at `down`
                    interrupted.append(index)
            what = (
                f"; task(s) {', '.join(map(str, sorted(interrupted)))} were interrupted and "
                "run again"
                if interrupted
                else ""
            )
            self._logs.emit(
                job_event(
                    record.job,
                    f"Execution {record.name} resumes after a daemon restart{what}",
                    severity="WARNING",
                    execution=record.name,
                )
            )
            self._run(record, self._store.attempts(record.name))

    async def close(self) -> None:
        """Stop every running task (SIGTERM, then SIGKILL after the grace); executions stay
        running in the store, to be resumed by the next daemon."""
        runs = list(self._runs.values())
        for run in runs:
            if run.loop is not None:
                run.loop.cancel()
            self._logs.emit(
                job_event(
                    run.record.job,
                    f"Execution {run.record.name} stops with the daemon; it resumes at its "
                    "next start",
                    severity="WARNING",
                    execution=run.record.name,
                )
            )
        await asyncio.gather(*(run.loop for run in runs if run.loop), return_exceptions=True)

    # -- running an execution ---------------------------------------------------------------

    def _run(self, record: ExecutionRecord, attempts: Mapping[int, tuple[Attempt, ...]]) -> None:
        run = _Run(record, attempts)
        self._runs[record.name] = run
        run.loop = self._tasks.spawn(self._loop(run))

    async def _loop(self, run: _Run) -> None:
        record = run.record
        try:
            run.env = self._base_env(record)
            self._check_mounts(record.template, record.artifact)
            run.mounts = self._secrets.mounts(record.template)
            while True:
                run.changed.clear()
                decision = decide(
                    record.settings,
                    [self._state(task) for task in run.tasks],
                    self._clock(),
                    max_parallelism=self._max_parallelism,
                    cancelled=run.cancelled,
                )
                for stop in decision.stop:
                    self._stop(run, run.tasks[stop.index], stop.reason)
                for index in decision.start:
                    await self._start(run, run.tasks[index])
                if decision.outcome is not None:
                    self._finish(run, decision.outcome)
                    return
                if decision.start:
                    # The tasks just started have deadlines this decision did not know (a
                    # lone task past its --task-timeout would otherwise run on): decide again.
                    continue
                timeout = None
                if decision.wake_at is not None:
                    timeout = max(0.0, decision.wake_at - self._clock())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(run.changed.wait(), timeout)
        except asyncio.CancelledError:
            await self._halt(run)
            raise
        except HomerunError as error:  # a secret it reads is gone
            await self._halt(run)
            self._finish(run, Outcome(ExecutionStatus.FAILED, str(error)))
        except Exception as error:  # a bug: the execution must not stay running for ever
            await self._halt(run)
            self._finish(run, Outcome(ExecutionStatus.FAILED, f"internal error: {error!r}"))
            raise
        finally:
            self._runs.pop(record.name, None)

    def _state(self, task: _Task) -> TaskState:
        return task_state(
            task.index,
            task.attempts,
            running_since=task.running_since,
            stopping=task.stop_reason is not None,
        )

    async def _start(self, run: _Run, task: _Task) -> None:
        record = run.record
        number = len(task.attempts)
        env = {
            **run.env,
            "CLOUD_RUN_TASK_INDEX": str(task.index),
            "CLOUD_RUN_TASK_ATTEMPT": str(number),
        }
        argv = [expand_k8s_vars(argument, env) for argument in record.artifact.argv]
        name = f"{record.name}-task{task.index}-{number}"
        container = container_spec(record.template, record.artifact)
        spec = InstanceSpec(
            name=name,
            argv=argv,
            env=env,
            cwd=self._artifacts.folder(record.job, record.artifact_dir) / record.artifact.cwd,
            port=0,  # a task does not listen: no PORT
            # A container's label names its execution; a process's zygote is not per execution.
            revision=record.name if container else "",
            limits=limits(record.template.cpu, record.template.memory),
            container=container,
            mounts=run.mounts,
        )
        attempt = Attempt(number=number, started_at=self._wall_clock())
        task.recent.clear()

        def output(stream: str, line: str) -> None:
            entry = task_entry(record.job, record.name, task.index, number, stream, line)
            task.recent.append(entry["message"])  # a JSON line's message, not its braces
            self._logs.emit(entry)

        try:
            if container is not None and not self._runs_containers:
                raise OSError(
                    "the job's image was built by a container engine, and this homerun runs "
                    "without one now (config.yaml: container-engine); start it with podman "
                    "installed and container-engine: auto"
                )
            instance = await self._runtime.start(spec, output)
        except OSError as error:  # a program (or the container engine) missing or not executable
            program = argv[0] if argv and container is None else "the task"
            if container is not None:
                program = "the container engine"
            reason = f"cannot start {program}: {error.strerror or error}"
            self._ended(run, task, attempt.model_copy(update={"failure": reason}))
            run.changed.set()
            return
        task.attempts.append(attempt)
        task.instance = instance
        task.running_since = self._clock()
        task.stop_reason = None
        self._store.record_attempt(record.name, task.index, attempt)
        self._registry.record(name, record.name, instance.pid)
        watcher = asyncio.ensure_future(self._watch(run, task, instance, attempt, name))
        run.watchers.add(watcher)
        watcher.add_done_callback(run.watchers.discard)

    async def _watch(
        self, run: _Run, task: _Task, instance: Instance, attempt: Attempt, name: str
    ) -> None:
        status = await instance.wait()
        self._registry.forget(name)
        reason, task.stop_reason = task.stop_reason, None
        task.instance = task.running_since = None
        if run.halting:
            ended = _interrupted(attempt, self._wall_clock(), status)
        elif reason is None and status == 0:
            ended = attempt.model_copy(update={"ended_at": self._wall_clock(), "exit_status": 0})
        else:
            failure = reason or describe_status(status)
            if reason is None and task.recent:
                last = list(task.recent)
                failure += (
                    f"; its last line: {last[-1]}"
                    if len(last) == 1
                    else f"; its last lines: {' | '.join(last)}"
                )
            ended = attempt.model_copy(
                update={
                    "ended_at": self._wall_clock(),
                    "exit_status": status,
                    "failure": failure,
                    # A cancelled attempt was not the task's failure: not held against it.
                    "interrupted": reason == CANCELLED,
                }
            )
        self._ended(run, task, ended)
        run.changed.set()

    def _ended(self, run: _Run, task: _Task, attempt: Attempt) -> None:
        """Record an attempt's end (one that could not start included) and say what follows."""
        record = run.record
        if attempt.ended_at is None:
            attempt = attempt.model_copy(update={"ended_at": self._wall_clock()})
        if not task.attempts or task.attempts[-1].number != attempt.number:
            task.attempts.append(attempt)
        else:
            task.attempts[-1] = attempt
        self._store.record_attempt(record.name, task.index, attempt)
        if attempt.failure is None or attempt.interrupted or run.cancelled:
            return
        state = self._state(task)
        retries = record.settings.max_retries
        if state.failures <= retries:
            then, severity = (
                f"it runs again (attempt {state.attempts} of up to {retries + 1})",
                "WARNING",
            )
        else:
            then, severity = f"it has failed for good after {state.attempts} attempt(s)", "ERROR"
        self._logs.emit(
            job_event(
                record.job,
                f"Task {task.index} attempt {attempt.number} failed ({attempt.failure}); {then}",
                severity=severity,
                execution=record.name,
                task=task.index,
                attempt=attempt.number,
            )
        )

    def _stop(self, run: _Run, task: _Task, reason: str) -> None:
        instance = task.instance
        if instance is None:
            return
        task.stop_reason = reason
        instance.signal(signal.SIGTERM)
        self._tasks.spawn(self._kill_after_grace(instance))

    async def _kill_after_grace(self, instance: Instance) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(instance.exited(), self._stop_grace)
            return
        instance.signal(signal.SIGKILL)

    async def _halt(self, run: _Run) -> None:
        """The daemon stops (or the loop failed): stop the tasks running now and wait for their
        attempts to be recorded as interrupted."""
        run.halting = True
        running = [task.instance for task in run.tasks if task.instance is not None]
        await stop_all(running, self._stop_grace)
        if run.watchers:
            await asyncio.wait(list(run.watchers), timeout=self._stop_grace + 2)

    def _finish(self, run: _Run, outcome: Outcome) -> None:
        record = run.record
        self._store.finish_execution(record.name, outcome.status, outcome.message)
        if record.artifact.engine_image is not None:
            self._runtime.forget(record.name)
        severity = {ExecutionStatus.SUCCEEDED: "INFO", ExecutionStatus.CANCELLED: "WARNING"}
        self._logs.emit(
            job_event(
                record.job,
                f"Execution {record.name} {outcome.status}: {outcome.message}",
                severity=severity.get(outcome.status, "ERROR"),
                execution=record.name,
            )
        )
        # An execution reported over has its whole log on disk: its tasks' last lines too.
        self._logs.flush()
        self._artifacts.collect(record.job)

    def _check_mounts(self, template: RevisionSpec, artifact: ArtifactRecord) -> None:
        """InvalidSpec when the tasks would be processes with mounts and no sandbox."""
        if (
            template.mounts_anything
            and artifact.engine_image is None
            and self._mounts_refused is not None
        ):
            raise InvalidSpec(sandbox_needed(self._mounts_refused))

    def _base_env(self, record: ExecutionRecord) -> dict[str, str]:
        """A task's environment but its index and attempt. Later sources win: the host's
        basics (not in a container), the image's ENV, the job's env vars, its secrets (read
        now), then what Cloud Run sets in a task. No PORT: a task does not listen."""
        if record.artifact.engine_image is None:
            env = {key: self._host_env[key] for key in INHERITED if key in self._host_env}
            env.setdefault("PYTHONUNBUFFERED", "1")
        else:  # a container has its image's PATH, HOME...: none of the host's
            env = {}
        env.update(record.artifact.env)
        env.update(record.template.env)
        env.update(self._secrets.env(record.template))
        env.update(
            CLOUD_RUN_JOB=record.job,
            CLOUD_RUN_EXECUTION=record.name,
            CLOUD_RUN_TASK_COUNT=str(record.settings.task_count),
        )
        if self._hosts_file is not None:  # service URLs resolve in a task as in an instance
            env.update(resolving_env(env, self._hosts_file))
        if self._metadata_address is not None:  # google-auth works in a task as in an instance
            env.update(metadata_env(self._metadata_address))
        return env

    def members(self) -> dict[int, str]:
        """pid -> member of every running task: the job's service account when it has one,
        else the job's own account, as a service's instances have theirs (access/iam.py)."""
        return {
            task.instance.pid: instance_member(run.record.job, run.record.template.service_account)
            for run in self._runs.values()
            for task in run.tasks
            if task.instance is not None
        }

    def _new_name(self, job: str) -> str:
        """JOB-xxxxx, as Cloud Run names executions (job-quickstart-m2c5t)."""
        alphabet = string.ascii_lowercase + string.digits
        while True:
            suffix = "".join(choice(alphabet) for _ in range(5))
            name = f"{job}-{suffix}"
            if not self._store.has_execution(name):
                return name


def _interrupted(attempt: Attempt, now: float, status: int | None = None) -> Attempt:
    return attempt.model_copy(
        update={"ended_at": now, "exit_status": status, "failure": INTERRUPTED, "interrupted": True}
    )


class NoRuntime:
    """The runtime of a control plane built without one: every task fails to start, saying so."""

    async def start(self, spec: InstanceSpec, output: OutputSink) -> Instance:
        raise HomerunError("this control plane was built without a runtime: it runs no tasks")

    def mode(self, revision: str) -> tuple[str, str]:
        return ("spawn", "no runtime")

    def forget(self, revision: str) -> None:
        pass
