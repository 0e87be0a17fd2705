"""Cloud Run's `run.googleapis.com/v1` Job document: rendered from a job for `homerun jobs
describe --format yaml`, and read back, every error at its field path, for `homerun jobs
replace FILE`. The job's code is its artifact (`homerun.local/JOB@sha256:DIGEST`) or, to build
it again, the folder in the `homerun.dev/source` annotation; its schedule, which Cloud Run
keeps in Cloud Scheduler, is in `homerun.dev/schedule` and `homerun.dev/time-zone`."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from homerun.errors import InvalidSpec
from homerun.knative.models import (
    IMAGE_REGISTRY,
    SOURCE_ANNOTATION,
    EnvVar,
    KnativeModel,
    Resources,
    Volume,
    VolumeMount,
    image_for,
    level_at,
    volume_problems,
)
from homerun.knative.reader import volume_fields
from homerun.knative.render import render_volumes, timestamp
from homerun.model.jobs import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_TASK_TIMEOUT_SECONDS,
    JOB_ENV,
    MAX_RETRIES,
    MAX_TASK_TIMEOUT_SECONDS,
    MAX_TASKS,
    TaskSettingsChanges,
)
from homerun.model.validation import Problem, errors_at, problems
from homerun.model.views import JobSummary
from homerun.spec import (
    EnvChanges,
    MemoryVolume,
    MountChanges,
    RevisionChanges,
    RevisionSpec,
    SecretChanges,
    SecretRef,
    VolumeChanges,
)

JOB_API_VERSION = "run.googleapis.com/v1"
SCHEDULE_ANNOTATION = "homerun.dev/schedule"
TIME_ZONE_ANNOTATION = "homerun.dev/time-zone"
_JOB_NAME = re.compile(r"^[a-z]([-a-z0-9]{0,55}[a-z0-9])?$")
_IMAGE = re.compile(rf"^{re.escape(IMAGE_REGISTRY)}/[a-z0-9][-a-z0-9._/]*@sha256:[0-9a-f]{{64}}$")
_OUTPUT_ONLY_METADATA = frozenset(
    {"namespace", "generation", "uid", "resourceVersion", "creationTimestamp", "selfLink"}
)


def _seconds(value: Any) -> Any:
    """Cloud Run writes int64 fields as strings (`timeoutSeconds: '600'`)."""
    if isinstance(value, str) and value.isdigit():
        return int(value)
    return value


def _within(low: int, high: int) -> AfterValidator:
    def check(number: int) -> int:
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}, got {number}")
        return number

    return AfterValidator(check)


def _artifact_image(image: str) -> str:
    if _IMAGE.match(image) is None:
        raise ValueError(
            f"{image!r} is not a homerun artifact: homerun runs code it built, named "
            f"{IMAGE_REGISTRY}/JOB@sha256:DIGEST as `homerun jobs describe --format yaml` "
            f"prints it; to build it again, name its folder in the {SOURCE_ANNOTATION} "
            "annotation"
        )
    return image


class JobContainer(KnativeModel):
    refused: ClassVar[dict[str, str]] = {
        "ports": "a job's tasks do not listen: a job has no ports",
        "startupProbe": "a job's tasks are not probed",
        "livenessProbe": "a job's tasks are not probed",
        "workingDir": "not supported: tasks run in the artifact's working directory",
    }

    name: str | None = None
    image: Annotated[str, AfterValidator(_artifact_image)] | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    env: list[EnvVar] | None = None
    resources: Resources | None = None
    volume_mounts: list[VolumeMount] | None = None

    @field_validator("env")
    @classmethod
    def _not_reserved(cls, env: list[EnvVar] | None) -> list[EnvVar] | None:
        for variable in env or []:
            if variable.name in JOB_ENV:
                raise ValueError(f"{variable.name} is reserved: homerun sets it in every task")
        return env


class TaskSpec(KnativeModel):
    containers: list[JobContainer] = Field(description="a list with one container")
    max_retries: Annotated[int, _within(0, MAX_RETRIES)] | None = None
    timeout_seconds: (
        Annotated[int, BeforeValidator(_seconds), _within(1, MAX_TASK_TIMEOUT_SECONDS)] | None
    ) = None
    service_account_name: str | None = None
    volumes: list[Volume] | None = None

    @field_validator("containers")
    @classmethod
    def _one(cls, containers: list[JobContainer]) -> list[JobContainer]:
        if len(containers) != 1:
            raise ValueError("must be a list of exactly one container")
        return containers

    @model_validator(mode="after")
    def _mounts_name_volumes(self) -> TaskSpec:
        found = volume_problems(self.volumes or [], self.containers[0].volume_mounts or [])
        if found:
            raise errors_at(found)
        return self


class TaskTemplate(KnativeModel):
    spec: TaskSpec = Field(description="the task's container, retries and timeout")


class ExecutionSpec(KnativeModel):
    parallelism: Annotated[int, _within(0, MAX_TASKS)] | None = None
    task_count: Annotated[int, _within(1, MAX_TASKS)] | None = None
    template: TaskTemplate = Field(description="what each task runs")


class ExecutionMetadata(KnativeModel):
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class ExecutionTemplate(KnativeModel):
    metadata: ExecutionMetadata | None = None
    spec: ExecutionSpec = Field(description="the tasks of each execution")


class JobSpec(KnativeModel):
    template: ExecutionTemplate = Field(description="the execution template")


class JobMetadata(KnativeModel):
    ignored = _OUTPUT_ONLY_METADATA

    name: str = Field(description="the job's name")
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None

    @field_validator("name")
    @classmethod
    def _job_name(cls, name: str) -> str:
        if not _JOB_NAME.match(name):
            raise ValueError(
                "must be at most 57 lowercase letters, digits and hyphens, starting with a "
                "letter and not ending with a hyphen"
            )
        return name


class JobDocument(KnativeModel):
    ignored = frozenset({"status"})

    api_version: str = Field(description=JOB_API_VERSION)
    kind: str = Field(description="Job")
    metadata: JobMetadata = Field(description="the job's name, labels and annotations")
    spec: JobSpec = Field(description="the execution template")

    @field_validator("api_version")
    @classmethod
    def _version(cls, api_version: str) -> str:
        if api_version != JOB_API_VERSION:
            raise ValueError(f"must be {JOB_API_VERSION}, got {api_version!r}")
        return api_version

    @field_validator("kind")
    @classmethod
    def _a_job(cls, kind: str) -> str:
        if kind != "Job":
            raise ValueError(f"must be Job, got {kind!r}")
        return kind


@dataclass(frozen=True)
class JobManifest:
    """What `jobs replace` applies: the same request as `jobs deploy` with every flag given."""

    name: str
    changes: RevisionChanges  # source None: keep the job's code (its image is the artifact)
    settings: TaskSettingsChanges
    digest: str | None  # the artifact the document names
    schedule: str | None  # "" removes the job's schedule
    time_zone: str | None


def render_job(job: JobSummary, digest: str | None) -> dict[str, Any]:
    """The Job document of a job, with its status."""
    # No digest (a job recorded before artifacts had one): no image, so that replace builds
    # from the source folder.
    container: dict[str, Any] = {"image": image_for(job.name, digest)} if digest else {}
    if job.command:
        container["command"] = list(job.command)
    if job.args:
        container["args"] = list(job.args)
    env: list[dict[str, Any]] = [{"name": name, "value": value} for name, value in job.env.items()]
    for name, ref in job.secrets.items():
        secret, _, version = ref.rpartition(":")
        env.append({"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": version}}})
    if env:
        container["env"] = env
    limits = {key: value for key, value in (("cpu", job.cpu), ("memory", job.memory)) if value}
    if limits:
        container["resources"] = {"limits": limits}
    volumes, mounts = render_volumes(
        RevisionSpec(
            source=job.source,
            secret_files={
                path: SecretRef(secret=ref.rpartition(":")[0], version=ref.rpartition(":")[2])
                for path, ref in job.secret_files.items()
            },
            volumes={name: MemoryVolume(size_limit=size) for name, size in job.volumes.items()},
            volume_mounts=job.volume_mounts,
        )
    )
    if mounts:
        container["volumeMounts"] = mounts
    task: dict[str, Any] = {
        "containers": [container],
        "maxRetries": job.max_retries,
        "timeoutSeconds": str(job.task_timeout_seconds),
    }
    if volumes:
        task["volumes"] = volumes
    annotations = {SOURCE_ANNOTATION: job.source}
    if job.schedule:
        annotations[SCHEDULE_ANNOTATION] = job.schedule
        annotations[TIME_ZONE_ANNOTATION] = job.time_zone or "UTC"
    latest = job.latest_execution
    status: dict[str, Any] = {
        "observedGeneration": job.generation,
        "executionCount": job.executions,
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": timestamp(job.updated_at)}
        ],
    }
    if latest is not None:
        status["latestCreatedExecution"] = {
            "name": latest.name,
            "createTime": timestamp(latest.created_at),
            **({"completionTime": timestamp(latest.completed_at)} if latest.completed_at else {}),
            "completionStatus": f"EXECUTION_{latest.status.upper()}",
        }
    return {
        "apiVersion": JOB_API_VERSION,
        "kind": "Job",
        "metadata": {
            "name": job.name,
            "generation": job.generation,
            "creationTimestamp": timestamp(job.created_at),
            "annotations": dict(sorted(annotations.items())),
        },
        "spec": {
            "template": {
                "spec": {
                    "taskCount": job.task_count,
                    "parallelism": job.parallelism,
                    "template": {"spec": task},
                }
            }
        },
        "status": status,
    }


def parse_job(
    document: Any, *, current_digest: str | None = None, where: str = "the document"
) -> JobManifest:
    """A Job document -> what `jobs replace` applies; InvalidSpec lists every problem. The
    document's image equal to `current_digest` (the job's artifact) keeps the job's code;
    otherwise it is built again from the homerun.dev/source folder."""
    try:
        job = JobDocument.model_validate(document)
    except ValidationError as error:
        raise _invalid(where, [_explained(problem) for problem in problems(error)]) from None
    annotations = dict(job.metadata.annotations or {})
    source = annotations.get(SOURCE_ANNOTATION)
    execution = job.spec.template.spec
    task = execution.template.spec
    container = task.containers[0]
    digest = container.image.rpartition("@sha256:")[2] if container.image else None
    if digest is None and not source:
        raise _invalid(
            where,
            [
                Problem(
                    ("spec", "template", "spec", "template", "spec", "containers", 0, "image"),
                    f"required: a homerun artifact, or the job's folder in the "
                    f"{SOURCE_ANNOTATION} annotation",
                )
            ],
        )
    keep_code = digest is not None and digest == current_digest
    if not keep_code and not source:
        raise _invalid(
            where,
            [
                Problem(
                    ("metadata", "annotations"),
                    f"the image is not this job's artifact here: name the job's folder in "
                    f"{SOURCE_ANNOTATION} so that homerun can build it",
                )
            ],
        )
    env: dict[str, str] = {}
    secrets: dict[str, SecretRef] = {}
    for variable in container.env or []:
        ref = variable.value_from.secret_key_ref if variable.value_from else None
        if ref is not None:
            secrets[variable.name] = SecretRef(secret=ref.name, version=ref.key)
        else:
            env[variable.name] = variable.value or ""
    limits = container.resources.limits if container.resources else None
    mounted = volume_fields(task.volumes or [], container.volume_mounts or [])
    changes = RevisionChanges(
        source=None if keep_code else source,
        command=list(container.command or []),
        args=list(container.args or []),
        cpu=limits.cpu if limits else None,
        memory=limits.memory if limits else None,
        env=EnvChanges(replace=env),
        secrets=SecretChanges(replace={**secrets, **mounted["secret_files"]}),
        volumes=VolumeChanges(replace=mounted["volumes"]),
        volume_mounts=MountChanges(replace=mounted["volume_mounts"]),
    )
    settings = TaskSettingsChanges(
        task_count=execution.task_count or 1,
        parallelism=execution.parallelism or 0,
        max_retries=task.max_retries if task.max_retries is not None else DEFAULT_MAX_RETRIES,
        task_timeout_seconds=task.timeout_seconds or DEFAULT_TASK_TIMEOUT_SECONDS,
    )
    schedule = annotations.get(SCHEDULE_ANNOTATION, "")
    return JobManifest(
        name=job.metadata.name,
        changes=changes,
        settings=settings,
        digest=digest,
        schedule=schedule,
        time_zone=annotations.get(TIME_ZONE_ANNOTATION) if schedule else None,
    )


def _explained(problem: Problem) -> Problem:
    """An unknown field with why homerun refuses it or the field probably meant."""
    *parent, last = problem.location or ("",)
    level = level_at(parent, JobDocument)
    if level is None or not problem.location:
        return problem
    if problem.kind in ("extra_forbidden", "invalid_key"):
        key = str(last)
        return Problem((*parent, key), level.unknown_field(key), problem.kind)
    field = level.field_named(last)
    if problem.message == "required" and field is not None and field.description:
        return Problem(problem.location, f"required: {field.description}", problem.kind)
    return problem


def _invalid(where: str, found: list[Problem]) -> InvalidSpec:
    lines = "\n".join(f"  {problem.path or '(document)'}: {problem.message}" for problem in found)
    count = len(found)
    return InvalidSpec(
        f"{where} is not a valid Cloud Run Job ({count} problem{'s' if count > 1 else ''}):\n"
        f"{lines}"
    )
