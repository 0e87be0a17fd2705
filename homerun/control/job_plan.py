"""What `jobs create|deploy|update` and `jobs execute` will do, decided before anything is done:
pure functions of the request and what the store holds (no I/O, no time)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from homerun.errors import InvalidSpec, NotFound
from homerun.model.artifact import ArtifactRecord
from homerun.model.cron import parse_cron, time_zone
from homerun.model.jobs import (
    JOB_ENV,
    ExecutionOverrides,
    TaskSettings,
    TaskSettingsChanges,
    validate_job_name,
)
from homerun.spec import RevisionChanges, RevisionSpec, validate_env_name
from homerun.store import JobRecord

_SHELL = ("/bin/sh", "sh")


class JobRequest(BaseModel):
    """What `homerun jobs create|deploy|update` send to the daemon."""

    model_config = ConfigDict(extra="forbid")

    job: str
    changes: RevisionChanges = Field(default_factory=RevisionChanges)
    settings: TaskSettingsChanges = Field(default_factory=TaskSettingsChanges)
    # create: the job must be new; update: it must exist; deploy: either (gcloud's verbs).
    mode: Literal["create", "update", "deploy"] = "deploy"
    schedule: str | None = None  # unix-cron; "" removes it; None keeps it
    time_zone: str | None = None  # IANA name; None keeps it (a new job: UTC)


@dataclass(frozen=True)
class JobPlan:
    job: str
    template: RevisionSpec
    settings: TaskSettings
    created: bool
    build: Path | None  # build from this folder; None: keep the job's artifact (or `image`)
    reason: str = ""  # why a rebuild, when the request gave no --source
    unchanged: bool = False
    schedule: str | None = None
    time_zone: str = "UTC"
    image: str | None = None  # take the artifact of this image (pinned): `--image`


_IMAGE_ENTRYPOINT = (
    "--command and --args cannot change what an image built without a container engine runs "
    "(its entrypoint was fixed when it was built); put the command in the Dockerfile's CMD "
    "and build the image again, or give the job its folder with --source DIR --command ..."
)


def plan_job(
    request: JobRequest, current: JobRecord | None, *, container_image: bool = False
) -> JobPlan:
    """`container_image`: the image --image names (pinned by the caller) runs as containers,
    whose ENTRYPOINT and CMD --command and --args replace at each start."""
    job = validate_job_name(request.job)
    if request.mode == "create" and current is not None:
        raise InvalidSpec(
            f"job {job} already exists; change it with `homerun jobs update {job}` "
            "(or `homerun jobs deploy`, which creates or updates)"
        )
    if request.mode == "update" and current is None:
        raise NotFound(
            f"job {job!r} not found; create it with `homerun jobs create {job} --source DIR`"
        )
    changes = request.changes
    if current is None and changes.source is None and changes.image is None:
        raise InvalidSpec(
            f"job {job} is new: give the folder of its code with --source DIR, or an image "
            "with --image IMAGE"
        )
    template = changes.apply(current.template if current else None)
    if changes.image is not None:
        if (changes.command or changes.args) and not container_image:
            raise InvalidSpec(_IMAGE_ENTRYPOINT)
        # An image runs its own entrypoint: a --command kept from a source deploy goes.
        template = template.model_copy(
            update={
                "command": changes.command or None if container_image else None,
                "args": changes.args or None if container_image else None,
            }
        )
    check_job_env(template.env, "--set-env-vars")
    check_job_env(template.secrets, "--set-secrets")
    settings = request.settings.apply(current.settings if current else None)
    schedule, zone = _schedule(request, current)
    plan = JobPlan(
        job,
        template,
        settings,
        created=current is None,
        build=None,
        schedule=schedule,
        time_zone=zone,
    )
    now = (template, settings, schedule, zone)
    if changes.image is not None:
        if current is not None and now == (
            current.template,
            current.settings,
            current.schedule,
            current.time_zone,
        ):
            return replace(plan, unchanged=True)  # the same digest with the same settings
        if current is not None and current.template.image == template.image:
            return plan  # the same image: its artifact is kept
        return replace(plan, image=changes.image)
    if changes.source is not None:
        return replace(plan, build=Path(changes.source))
    assert current is not None  # a new job without --source or --image was refused above
    if template.entrypoint_inputs() != current.template.entrypoint_inputs():
        if current.artifact.engine_image is not None:
            return plan  # a container's ENTRYPOINT and CMD are replaced at its start
        if template.image:
            raise InvalidSpec(_IMAGE_ENTRYPOINT)
        return replace(
            plan,
            build=Path(template.source),
            reason="the entrypoint changes (--command, --args or GOOGLE_ENTRYPOINT), so the "
            f"source is built again from {template.source}",
        )
    was = (current.template, current.settings, current.schedule, current.time_zone)
    return replace(plan, unchanged=now == was)


def _schedule(request: JobRequest, current: JobRecord | None) -> tuple[str | None, str]:
    """The job's schedule and time zone after the request, checked."""
    schedule = current.schedule if current else None
    if request.schedule is not None:
        schedule = " ".join(request.schedule.split()) or None
    zone = request.time_zone or (current.time_zone if current else "UTC")
    if schedule is not None:
        parse_cron(schedule)
    time_zone(zone)
    return schedule, zone


def check_job_env(names: Iterable[str], flag: str) -> None:
    """Cloud Run sets CLOUD_RUN_JOB, CLOUD_RUN_EXECUTION... in every task: a job may not."""
    for name in names:
        if name in JOB_ENV:
            raise InvalidSpec(
                f"{flag}: {name} is reserved: homerun sets {', '.join(JOB_ENV)} in every task"
            )


@dataclass(frozen=True)
class ExecutionPlan:
    template: RevisionSpec
    settings: TaskSettings
    artifact: ArtifactRecord  # with its argv changed by --args


def plan_execution(job: JobRecord, overrides: ExecutionOverrides) -> ExecutionPlan:
    """The job's template, settings and artifact with one execution's overrides applied."""
    for name in overrides.env:
        validate_env_name(name, "--update-env-vars")
    check_job_env(overrides.env, "--update-env-vars")
    settings = overrides.apply(job.settings)
    template = job.template
    if overrides.env:
        template = template.model_copy(update={"env": {**template.env, **overrides.env}})
    artifact = job.artifact
    if overrides.args is not None:
        template = template.model_copy(update={"args": overrides.args or None})
        argv = with_args(job.artifact.argv, job.template.args, overrides.args)
        artifact = artifact.model_copy(update={"argv": argv})
    return ExecutionPlan(template, settings, artifact)


def with_args(argv: list[str], job_args: list[str] | None, args: list[str]) -> list[str]:
    """The command line with `args` in place of the job's own --args (Kubernetes: args replace
    CMD). The job's args, when it has some, end its command line and are replaced; otherwise
    `args` follow the command. A shell command (a Procfile line: `sh -c "python main.py"`)
    gets them as its "$@": ["/bin/sh", "-c", 'python main.py "$@"', "sh", *args]."""
    base = list(argv)
    if job_args and base[-len(job_args) :] == job_args:
        base = base[: -len(job_args)]
    if len(base) == 3 and base[0] in _SHELL and base[1] == "-c":
        return [base[0], "-c", f'{base[2]} "$@"', "sh", *args] if args else base
    return [*base, *args]
