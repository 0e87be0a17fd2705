"""The nouns of jobs: a job's task settings, an execution's overrides, the states executions
and tasks go through, and one attempt of a task as it is recorded."""

from __future__ import annotations

import re
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from homerun.errors import InvalidSpec

# Cloud Run's limits: up to 10,000 tasks, 10 retries, a task timeout of up to 168 hours.
MAX_TASKS = 10_000
MAX_RETRIES = 10
DEFAULT_MAX_RETRIES = 3
DEFAULT_TASK_TIMEOUT_SECONDS = 600
MAX_TASK_TIMEOUT_SECONDS = 168 * 3600

# What Cloud Run sets in a task's environment; a job may not set them itself.
JOB_ENV = (
    "CLOUD_RUN_JOB",
    "CLOUD_RUN_EXECUTION",
    "CLOUD_RUN_TASK_INDEX",
    "CLOUD_RUN_TASK_ATTEMPT",
    "CLOUD_RUN_TASK_COUNT",
)

# A DNS label that starts with a letter, as Cloud Run requires for job names; an execution is
# named JOB-xxxxx, so 57 characters leave room for its suffix.
_JOB_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,55}[a-z0-9])?$")


def validate_job_name(name: str) -> str:
    if not _JOB_NAME.match(name):
        raise InvalidSpec(
            f"invalid job name {name!r}: use at most 57 lowercase letters, digits and hyphens, "
            "starting with a letter and not ending with a hyphen (e.g. 'job-quickstart')"
        )
    return name


class TaskSettings(BaseModel):
    """How an execution runs its tasks (Cloud Run's task count, parallelism, retries and
    timeout)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_count: int = Field(default=1, ge=1, le=MAX_TASKS)
    # 0: as many at once as the platform allows (Cloud Run: "as many as possible").
    parallelism: int = Field(default=0, ge=0, le=MAX_TASKS)
    max_retries: int = Field(default=DEFAULT_MAX_RETRIES, ge=0, le=MAX_RETRIES)
    task_timeout_seconds: int = Field(
        default=DEFAULT_TASK_TIMEOUT_SECONDS, ge=1, le=MAX_TASK_TIMEOUT_SECONDS
    )


class TaskSettingsChanges(BaseModel):
    """What `jobs create|deploy|update` flags change; None keeps the job's current value."""

    model_config = ConfigDict(extra="forbid")

    task_count: int | None = None
    parallelism: int | None = None
    max_retries: int | None = None
    task_timeout_seconds: int | None = None

    def apply(self, base: TaskSettings | None) -> TaskSettings:
        fields = (base or TaskSettings()).model_dump()
        fields.update(self.model_dump(exclude_none=True))
        settings = _checked(fields)
        if settings.parallelism > settings.task_count:
            raise InvalidSpec(
                f"--parallelism: {settings.parallelism} is more than the job's "
                f"{settings.task_count} task(s); give at most --parallelism "
                f"{settings.task_count}, or 0 for as many as possible"
            )
        return settings


class ExecutionOverrides(BaseModel):
    """What `jobs execute` may change for one execution (gcloud's --tasks, --task-timeout,
    --args, --update-env-vars)."""

    model_config = ConfigDict(extra="forbid")

    task_count: int | None = None
    task_timeout_seconds: int | None = None
    args: list[str] | None = None
    env: dict[str, str] = Field(default_factory=dict)

    def apply(self, base: TaskSettings) -> TaskSettings:
        fields = base.model_dump()
        fields.update(
            self.model_dump(include={"task_count", "task_timeout_seconds"}, exclude_none=True)
        )
        if self.task_count is not None:
            # Fewer tasks than the job's parallelism: the parallelism shrinks with them.
            fields["parallelism"] = min(fields["parallelism"], self.task_count)
        return _checked(fields)


def _checked(fields: dict[str, object]) -> TaskSettings:
    try:
        return TaskSettings.model_validate(fields)
    except ValidationError as error:
        problem = error.errors()[0]
        flag = {
            "task_count": "--tasks",
            "parallelism": "--parallelism",
            "max_retries": "--max-retries",
            "task_timeout_seconds": "--task-timeout",
        }.get(str(problem["loc"][0]), str(problem["loc"][0]))
        raise InvalidSpec(f"{flag}: {problem['msg']}") from None


class ExecutionStatus(StrEnum):
    """An execution runs until every task succeeded or failed for good (or it is cancelled)."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED_EXECUTION = frozenset(
    {ExecutionStatus.SUCCEEDED, ExecutionStatus.FAILED, ExecutionStatus.CANCELLED}
)


class TaskStatus(StrEnum):
    PENDING = "pending"  # not started yet
    RUNNING = "running"
    RETRYING = "retrying"  # an attempt failed; another one will start
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # its last allowed attempt failed
    CANCELLED = "cancelled"  # the execution ended (cancelled) before the task succeeded


class Attempt(BaseModel):
    """One run of a task, as the store keeps it (times from the wall clock)."""

    model_config = ConfigDict(frozen=True)

    number: int  # CLOUD_RUN_TASK_ATTEMPT: 0 for the first
    started_at: float
    ended_at: float | None = None
    exit_status: int | None = None  # >= 0 an exit code, < 0 the signal that ended it
    failure: str | None = None  # why it failed; None while running or once it succeeded
    # The daemon stopped during this attempt: it is not held against the task's retries.
    interrupted: bool = False

    @property
    def running(self) -> bool:
        return self.ended_at is None

    @property
    def succeeded(self) -> bool:
        return self.ended_at is not None and self.failure is None


def format_duration(seconds: float) -> str:
    """600 -> 10m, 90 -> 1m30s, 3600 -> 1h: as gcloud prints a task timeout."""
    whole = int(seconds)
    if whole != seconds or whole < 1:
        return f"{seconds:g}s"
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{value}{unit}" for value, unit in ((hours, "h"), (minutes, "m"), (secs, "s"))]
    return "".join(part for part in parts if not part.startswith("0"))
