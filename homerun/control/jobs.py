"""Jobs: `jobs create|deploy|update` (plan in control/job_plan.py, then build, copy from an
image or keep the artifact, then record) and `jobs delete`. A job has no traffic and no
routes: its tasks run only in executions (control/executions.py)."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from homerun.build.artifact import artifact_record, copy_artifact, write_failure
from homerun.build.engine_build import engine_image_named
from homerun.build.images import ImageStore
from homerun.config import Settings
from homerun.control.deploys import BuildFunction
from homerun.control.executions import Executions
from homerun.control.job_artifacts import JobArtifacts
from homerun.control.job_logs import JobLogs, job_event
from homerun.control.job_plan import JobPlan, JobRequest, plan_job
from homerun.control.job_views import JobViews
from homerun.control.schedules import Schedules
from homerun.control.secrets import SecretValues
from homerun.control.tasks import Tasks
from homerun.errors import InvalidSpec, NotFound
from homerun.model.artifact import ArtifactRecord
from homerun.model.engine import Engine
from homerun.model.events import BuildLine, JobDeployed, JobEvent, Phase
from homerun.model.images import parse_image_name
from homerun.model.jobs import validate_job_name
from homerun.model.volumes import sandbox_needed
from homerun.spec import RevisionSpec
from homerun.store import Store

JobEmit = Callable[[JobEvent], None]


@dataclass(frozen=True)
class JobImage:
    """The image a job's --image names: of homerun's image store (`root`, its artifact
    folder), or of the container engine's storage (no folder: the engine has it)."""

    name: str  # as asked for, with its tag
    pinned: str  # repository@sha256:…
    record: ArtifactRecord
    root: Path | None
    source: str | None  # the folder it was built from


class Jobs:
    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        logs: JobLogs,
        build: BuildFunction,
        artifacts: JobArtifacts,
        secrets: SecretValues,
        executions: Executions,
        views: JobViews,
        schedules: Schedules,
        tasks: Tasks,
        wall_clock: Callable[[], float],
        images: ImageStore,
        engine: Engine | None = None,
        mounts_refused: str | None = None,
    ) -> None:
        # Why process tasks cannot have secret files or volumes (no sandbox), or None.
        self._mounts_refused = mounts_refused
        self._images = images  # --image: an image of the local store
        self._engine = engine  # or of the engine's storage; and it runs the containers
        self._settings = settings
        self._store = store
        self._logs = logs
        self._build = build
        self._artifacts = artifacts
        self._secrets = secrets
        self.executions = executions  # the admin API runs, cancels and deletes them here
        self.views = views  # and reads jobs and executions here
        self.schedules = schedules
        self._tasks = tasks
        self._wall_clock = wall_clock  # a schedule counts from when it is set
        self._locks: dict[str, asyncio.Lock] = {}  # one change at a time per job

    def deploy(self, request: JobRequest) -> AsyncIterator[JobEvent]:
        """Create or update a job; its events stream to the caller, who may go away."""

        async def work(emit: JobEmit) -> None:
            job = validate_job_name(request.job)
            async with self._locks.setdefault(job, asyncio.Lock()):
                current = self._store.job(job) if self._store.has_job(job) else None
                pinned, image = await self._pinned(request, emit)
                plan = plan_job(
                    pinned,
                    current,
                    container_image=image is not None and image.record.engine_image is not None,
                )
                self._secrets.check(plan.template)
                container = image is not None and image.record.engine_image is not None
                # Without an engine every task is a process; with one, a source build may
                # still be, and its executions say so.
                if (
                    plan.template.mounts_anything
                    and self._mounts_refused is not None
                    and not container
                    and self._engine is None
                ):
                    raise InvalidSpec(sandbox_needed(self._mounts_refused))
                if plan.unchanged:
                    assert current is not None
                    emit(Phase(message=f"No change: job {job} already has these settings"))
                    emit(
                        JobDeployed(
                            job=job,
                            generation=current.generation,
                            unchanged=True,
                            entrypoint=current.artifact.command_line,
                        )
                    )
                    return
                await self._apply(plan, current.generation if current else 0, image, emit)

        return self._tasks.stream(work)

    async def _pinned(
        self, request: JobRequest, emit: JobEmit
    ) -> tuple[JobRequest, JobImage | None]:
        """`--image NAME[:TAG]` as the digest it names now (as a deploy pins it), and the
        image: one of homerun's image store, else one in the container engine's storage."""
        if request.changes.image is None:
            return request, None
        image = await asyncio.to_thread(self._image, request.changes.image)
        if image.record.engine_image is not None and self._engine is None:
            raise InvalidSpec(
                f"--image: {image.name} was built by a container engine, and this homerun runs "
                "without one now (config.yaml: container-engine); start it with podman "
                "installed and container-engine: auto to run it"
            )
        emit(Phase(message=f"Image {image.name} is {image.pinned}"))
        changes = request.changes.model_copy(
            update={"image": image.pinned, "source": image.source or ""}
        )
        return request.model_copy(update={"changes": changes}), image

    def _image(self, text: str) -> JobImage:
        """Blocking: the image `text` names; NotFound says where it was looked for."""
        try:
            stored = self._images.resolve(text)
        except NotFound as missing:
            if self._engine is None:
                raise
            record = engine_image_named(self._engine, text, missing)
            name = parse_image_name(text, "--image")
            return JobImage(
                name=name.tagged,
                pinned=name.pinned(record.engine_image or ""),
                record=record,
                root=None,
                source=None,
            )
        return JobImage(
            name=stored.name.tagged,
            pinned=stored.pinned,
            record=stored.record,
            root=stored.root,
            source=stored.source,
        )

    async def delete(self, name: str) -> None:
        """The job, its executions (running ones are cancelled first), its artifacts and log."""
        async with self._locks.setdefault(name, asyncio.Lock()):  # not while it is deployed
            self._store.job(name)  # NotFound for an unknown job
            await self.executions.stop_job(name)
            self._store.delete_job(name)
            self.schedules.changed()
            self._artifacts.collect(name)
            self._logs.delete(name)

    def restore(self) -> None:
        """After a (re)start: drop artifact folders nothing uses (a build the last daemon did
        not finish), resume the executions it left running, and follow the schedules."""
        if self._artifacts.root.is_dir():
            for folder in self._artifacts.root.iterdir():
                self._artifacts.collect(folder.name)
        self.executions.restore()
        self.schedules.start()

    async def _apply(
        self, plan: JobPlan, generation: int, image: JobImage | None, emit: JobEmit
    ) -> None:
        job = plan.job
        if plan.image is not None and image is not None:
            artifact_dir = f"{generation + 1:05d}"
            emit(Phase(message=f"Creating job {job} from the image {plan.image}"))
            artifact = await self._from_image(image, job, artifact_dir)
            emit(
                Phase(message=f"Entrypoint ({artifact.entrypoint_origin}): {artifact.command_line}")
            )
        elif plan.build is None:
            current = self._store.job(job)
            artifact, artifact_dir = current.artifact, current.artifact_dir
            emit(Phase(message=f"Updating job {job} (no rebuild: its code is unchanged)"))
        else:
            artifact_dir = f"{generation + 1:05d}"
            if plan.reason:
                emit(Phase(message=f"Rebuilding: {plan.reason}"))
            emit(Phase(message=f"Building job {job} from {plan.build}"))
            artifact = await self._built(plan.build, job, artifact_dir, plan.template, emit)
            emit(
                Phase(message=f"Entrypoint ({artifact.entrypoint_origin}): {artifact.command_line}")
            )
        if (
            plan.template.mounts_anything
            and artifact.engine_image is None
            and self._mounts_refused is not None
        ):
            # Known only now with an engine: the build made processes, not an image.
            raise InvalidSpec(sandbox_needed(self._mounts_refused))
        record = self._store.put_job(
            job,
            plan.template,
            plan.settings,
            artifact,
            artifact_dir,
            schedule=plan.schedule,
            time_zone=plan.time_zone,
            scheduled_from=self._wall_clock(),
        )
        self._artifacts.collect(job)
        self.schedules.changed()
        verb = "created" if plan.created else "updated"
        self._logs.emit(
            job_event(
                job,
                f"Job {job} {verb} (generation {record.generation}); each task runs "
                f"{artifact.command_line}",
            )  # fmt: skip
        )
        emit(
            JobDeployed(
                job=job,
                generation=record.generation,
                created=plan.created,
                entrypoint=artifact.command_line,
            )
        )

    async def _from_image(self, image: JobImage, job: str, artifact_dir: str) -> ArtifactRecord:
        """The job's artifact folder as a copy of the stored image's (code and a shared
        virtualenv), or an empty one for an image of the engine's storage (podman runs it)."""
        dest = self._artifacts.folder(job, artifact_dir)
        await asyncio.to_thread(shutil.rmtree, dest, True)  # a copy a stopped daemon left
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            if image.root is None:
                dest.mkdir()
                return image.record
            return await asyncio.to_thread(
                copy_artifact, image.root, image.record, image.pinned, dest
            )
        except OSError as error:  # a full disk, most likely: say so, not "internal error"
            await asyncio.to_thread(shutil.rmtree, dest, True)
            raise write_failure(error, dest, "the job is as it was") from None

    async def _built(
        self, source: Path, job: str, artifact_dir: str, template: RevisionSpec, emit: JobEmit
    ) -> ArtifactRecord:
        dest = self._artifacts.folder(job, artifact_dir)
        # A build a stopped daemon left half done.
        await asyncio.to_thread(shutil.rmtree, dest, True)
        dest.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()

        def output(line: str) -> None:
            loop.call_soon_threadsafe(emit, BuildLine(line=line))

        def build() -> ArtifactRecord:
            # A Dockerfile beyond the Python subset is built by the container engine: the
            # record names its image, whose containers run the tasks.
            return artifact_record(
                self._build(
                    source,
                    dest,
                    command=template.command,
                    args=template.args,
                    user_env=template.env,
                    venv_cache=self._artifacts.venv_cache,
                    output=output,
                    max_source_bytes=self._settings.max_source_bytes,
                )
            )

        self._artifacts.builds += 1
        try:
            return await asyncio.to_thread(build)
        except OSError as error:  # a full disk, most likely: say so, not "internal error"
            await asyncio.to_thread(shutil.rmtree, dest, True)
            raise write_failure(error, dest, "the job is as it was") from None
        except BaseException:  # a failed build, or the daemon stopping: leave nothing behind
            shutil.rmtree(dest, ignore_errors=True)
            raise
        finally:
            self._artifacts.builds -= 1
