"""What a deploy (or `services replace`) reports as it goes, streamed as NDJSON to the CLI."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True)


class BuildLine(_Event):
    """A line of the build's own output (pip, the Dockerfile subset)."""

    event: Literal["build"] = "build"
    line: str


class Phase(_Event):
    """A step of the deploy: building, starting the revision, its entrypoint."""

    event: Literal["phase"] = "phase"
    message: str


class Starting(_Event):
    """The revision's first instance is starting: sent every second until it listens."""

    event: Literal["starting"] = "starting"
    revision: str
    elapsed_seconds: float
    last_line: str | None = None  # the app's newest log line, if it printed any


class Done(_Event):
    """The deploy is over: the revision is ready (or nothing had to change)."""

    event: Literal["done"] = "done"
    service: str
    revision: str
    url: str
    percent: int  # of the service's traffic the revision serves now
    tag_urls: dict[str, str] = {}
    unchanged: bool = False  # no new revision: the template did not change
    service_changes: list[str] = []  # what service-level flags changed (access, ingress)
    startup_ms: int | None = None


class Failed(_Event):
    """The deploy failed; nothing changed what serves."""

    event: Literal["error"] = "error"
    message: str


DeployEvent = Annotated[BuildLine | Phase | Starting | Done | Failed, Field(discriminator="event")]
DEPLOY_EVENT: TypeAdapter[DeployEvent] = TypeAdapter(DeployEvent)


def parse_event(line: bytes | str) -> DeployEvent:
    """One NDJSON line of a deploy's stream, as the CLI reads it."""
    return DEPLOY_EVENT.validate_json(line)


class JobDeployed(_Event):
    """`jobs create|deploy|update` is over: the job has these settings now."""

    event: Literal["job"] = "job"
    job: str
    generation: int
    created: bool = False  # a new job
    unchanged: bool = False  # nothing to change: the job already had these settings
    entrypoint: str = ""  # what each task runs


# What `jobs create|deploy|update` report: the build's lines and steps, then `job` or `error`.
JobEvent = Annotated[BuildLine | Phase | JobDeployed | Failed, Field(discriminator="event")]
JOB_EVENT: TypeAdapter[JobEvent] = TypeAdapter(JobEvent)


def parse_job_event(line: bytes | str) -> JobEvent:
    return JOB_EVENT.validate_json(line)


class PoolDeployed(_Event):
    """`worker-pools deploy` is over: the pool runs this revision now."""

    event: Literal["pool"] = "pool"
    pool: str
    revision: str
    instances: int
    created: bool = False
    entrypoint: str = ""


# What `worker-pools deploy` reports: the build's lines and steps, then `pool` or `error`.
PoolEvent = Annotated[BuildLine | Phase | PoolDeployed | Failed, Field(discriminator="event")]
POOL_EVENT: TypeAdapter[PoolEvent] = TypeAdapter(PoolEvent)


def parse_pool_event(line: bytes | str) -> PoolEvent:
    return POOL_EVENT.validate_json(line)
