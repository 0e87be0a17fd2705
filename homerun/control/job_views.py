"""What `jobs describe|list`, `jobs executions describe|list` and a job's logs report, read from
the store (attempts are recorded as they start and end, so a running execution reads live)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

from homerun.control.environment import effective_entrypoint
from homerun.control.job_logs import JobLogs
from homerun.control.task_decision import task_state, task_status
from homerun.model import views
from homerun.model.jobs import Attempt, ExecutionStatus, TaskStatus
from homerun.model.logs import LogEntry
from homerun.observe.logs import iso_time
from homerun.store import ExecutionRecord, JobRecord, Store

RECENT_EXECUTIONS = 20


class JobViews:
    def __init__(
        self,
        store: Store,
        logs: JobLogs,
        next_run: Callable[[JobRecord], float | None] = lambda job: None,
    ) -> None:
        self._store = store
        self._logs = logs
        self._next_run = next_run  # when a job's schedule runs it next

    def jobs(self) -> list[views.JobSummary]:
        return [self._job(record) for record in self._store.jobs()]

    def describe(self, job: str) -> views.JobDescription:
        record = self._store.job(job)
        executions = self._store.executions(job)[:RECENT_EXECUTIONS]
        return views.JobDescription(
            **self._job(record).model_dump(),
            recent_executions=[self._summary(execution) for execution in executions],
        )

    def executions(
        self, job: str | None = None, limit: int | None = None
    ) -> list[views.ExecutionSummary]:
        """Newest first; the newest `limit` when given."""
        if job is not None:
            self._store.job(job)  # NotFound for an unknown job
        records = self._store.executions(job)
        return [self._summary(record) for record in records[:limit]]

    def execution(self, name: str) -> views.ExecutionDescription:
        record = self._store.execution(name)
        tasks = self._tasks(record)
        return views.ExecutionDescription(
            **self._summary(record, tasks).model_dump(),
            entrypoint=effective_entrypoint(record.artifact, record.template)[0],
            env=record.template.env,
            tasks=tasks,
        )

    async def logs(
        self,
        job: str,
        limit: int,
        *,
        execution: str | None = None,
        task: int | None = None,
        after: str | None = None,
    ) -> list[LogEntry]:
        """The job's newest entries; of one execution (and one of its tasks) when given; only
        those after `after` when given (`jobs logs tail`)."""
        self._store.job(job)
        since = None
        if execution is not None:
            record = self._store.execution(execution)
            since = iso_time(record.created_at)
        return await self._logs.read(
            job, limit, execution=execution, since=since, task=task, after=after
        )

    def _job(self, record: JobRecord) -> views.JobSummary:
        executions = self._store.executions(record.name)
        template, settings = record.template, record.settings
        entrypoint, origin = effective_entrypoint(record.artifact, template)
        return views.JobSummary(
            name=record.name,
            created_at=record.created_at,
            updated_at=record.updated_at,
            generation=record.generation,
            source=template.source,
            image=template.image,
            container_image=record.artifact.engine_image,
            entrypoint=entrypoint,
            entrypoint_origin=origin,
            env=template.env,
            secrets={name: str(ref) for name, ref in template.secrets.items()},
            secret_files={path: str(ref) for path, ref in template.secret_files.items()},
            volumes={name: volume.size_limit for name, volume in template.volumes.items()},
            volume_mounts=template.volume_mounts,
            cpu=template.cpu,
            memory=template.memory,
            task_count=settings.task_count,
            parallelism=settings.parallelism,
            max_retries=settings.max_retries,
            task_timeout_seconds=settings.task_timeout_seconds,
            executions=len(executions),
            latest_execution=self._summary(executions[0]) if executions else None,
            schedule=record.schedule,
            time_zone=record.time_zone if record.schedule else None,
            next_run_at=self._next_run(record),
            command=template.command,
            args=template.args,
            digest=record.artifact.digest,
        )

    def _summary(
        self, record: ExecutionRecord, tasks: list[views.TaskSummary] | None = None
    ) -> views.ExecutionSummary:
        tasks = tasks if tasks is not None else self._tasks(record)
        counts = Counter(task.status for task in tasks)
        settings = record.settings
        return views.ExecutionSummary(
            name=record.name,
            job=record.job,
            status=record.status,
            message=record.message or None,
            created_at=record.created_at,
            completed_at=record.completed_at,
            generation=record.generation,
            task_count=settings.task_count,
            parallelism=settings.parallelism,
            max_retries=settings.max_retries,
            task_timeout_seconds=settings.task_timeout_seconds,
            pending=counts[TaskStatus.PENDING] + counts[TaskStatus.RETRYING],
            running=counts[TaskStatus.RUNNING],
            succeeded=counts[TaskStatus.SUCCEEDED],
            failed=counts[TaskStatus.FAILED],
            cancelled=counts[TaskStatus.CANCELLED],
            # A failure is retried unless it was the task's last allowed attempt.
            retries=sum(task.failures - (task.status == TaskStatus.FAILED) for task in tasks),
            cancel_requested=record.cancel_requested,
        )

    def _tasks(self, record: ExecutionRecord) -> list[views.TaskSummary]:
        attempts = self._store.attempts(record.name)
        return [
            _task(record, index, attempts.get(index, ()))
            for index in range(record.settings.task_count)
        ]


def _task(record: ExecutionRecord, index: int, attempts: tuple[Attempt, ...]) -> views.TaskSummary:
    latest = attempts[-1] if attempts else None
    running_since = latest.started_at if latest is not None and latest.running else None
    state = task_state(index, attempts, running_since=running_since)
    status = task_status(state, record.settings)
    if record.status != ExecutionStatus.RUNNING and status in (
        TaskStatus.PENDING,
        TaskStatus.RETRYING,
        TaskStatus.RUNNING,
    ):
        status = TaskStatus.CANCELLED  # the execution ended before this task did
    return views.TaskSummary(
        index=index,
        status=status,
        attempts=state.attempts,
        failures=state.failures,
        last_failure=state.last_failure,
        started_at=latest.started_at if latest else None,
        ended_at=latest.ended_at if latest else None,
        exit_status=latest.exit_status if latest else None,
    )
