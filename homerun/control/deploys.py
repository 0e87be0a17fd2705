"""Deploys and `services replace`: plan (control/plan.py), then apply the plan in one pass:
artifact, record, first instance, and only once it answers, the traffic."""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from homerun.build import Artifact
from homerun.build.artifact import artifact_record, copy_artifact, write_failure
from homerun.build.engine_build import engine_image_named
from homerun.build.images import ImageStore, StoredImage
from homerun.config import Paths, Settings
from homerun.control.access import Iam
from homerun.control.advice import capacity_warning
from homerun.control.live import LiveRevisions
from homerun.control.plan import (
    Build,
    FromImage,
    Metadata,
    NewRevision,
    NoChange,
    Plan,
    ReplaceFacts,
    Reuse,
    plan_deploy,
    plan_replace,
)
from homerun.control.resolved import resolved_traffic
from homerun.control.revisions import Revisions, random_suffix
from homerun.control.secrets import SecretValues
from homerun.control.tasks import Emit, Tasks
from homerun.control.traffic import Traffic
from homerun.control.urls import Urls
from homerun.errors import HomerunError, InvalidSpec, NotFound
from homerun.knative import ServiceManifest
from homerun.model.artifact import ArtifactRecord
from homerun.model.engine import Engine
from homerun.model.events import BuildLine, DeployEvent, Done, Phase, Starting
from homerun.model.images import parse_image_name
from homerun.model.states import RevisionStatus
from homerun.observe.logs import LogStore, platform_entry
from homerun.scaling.diagnosis import StartFailed, built_app
from homerun.scaling.supervisor import Supervisor
from homerun.scaling.unit import ManagedInstance, RevisionUnit
from homerun.spec import DeployRequest, RevisionSpec, validate_service_name
from homerun.store import RevisionRecord, Store
from homerun.traffic import DEFAULT_TRAFFIC, retag, served_percent, tags_of

# build(source, dest, command=, args=, user_env=, venv_cache=, output=, max_source_bytes=)
BuildFunction = Callable[..., Artifact]


class Deploys:
    def __init__(
        self,
        *,
        settings: Settings,
        paths: Paths,
        store: Store,
        logs: LogStore,
        supervisor: Supervisor,
        build: BuildFunction,
        live: LiveRevisions,
        revisions: Revisions,
        traffic: Traffic,
        iam: Iam,
        secrets: SecretValues,
        tasks: Tasks,
        urls: Urls,
        images: ImageStore,
        clock: Callable[[], float],
        progress_seconds: float = 1.0,
        engine: Engine | None = None,
    ) -> None:
        """`engine`: where `--image` also looks for an image homerun's store lacks."""
        self._engine = engine
        self._clock = clock
        self._progress_seconds = progress_seconds  # between Starting events
        self._settings = settings
        self._paths = paths
        self._store = store
        self._logs = logs
        self._supervisor = supervisor
        self._build = build
        self._live = live
        self._revisions = revisions
        self._traffic = traffic
        self._iam = iam
        self._secrets = secrets
        self._tasks = tasks
        self._urls = urls
        self._images = images
        self._locks: dict[str, asyncio.Lock] = {}  # one deploy at a time per service

    def deploy(self, request: DeployRequest) -> AsyncIterator[DeployEvent]:
        """Start a deploy; its events stream to the caller, who may go away without harm."""

        async def work(emit: Emit) -> None:
            service = validate_service_name(request.service)
            async with self._locks.setdefault(service, asyncio.Lock()):
                exists = self._store.has_service(service)
                base = self._store.latest_created(service) if exists else None
                previous_ready = self._store.latest_ready(service) if exists else None
                record = self._store.service(service) if exists else None
                metadata = Metadata(record.labels, record.annotations) if record else None
                pinned, container = self._pinned(request, emit)
                plan = plan_deploy(
                    pinned, base, previous_ready, metadata, container_image=container
                )
                await self._apply(plan, emit)

        return self._tasks.stream(work)

    def _pinned(self, request: DeployRequest, emit: Emit) -> tuple[DeployRequest, bool]:
        """`--image NAME[:TAG]` as the digest it names now (Cloud Run pins the digest too):
        a later build to the same tag does not change what this revision runs; and whether
        that image runs as containers."""
        if request.changes.image is None:
            return request, False
        image = self._resolve(request.changes.image)
        emit(Phase(message=f"Image {image.name} is {image.pinned}"))
        changes = request.changes.model_copy(
            update={"image": image.pinned, "source": image.source or ""}
        )
        return (
            request.model_copy(update={"changes": changes}),
            image.record.engine_image is not None,
        )

    def _resolve(self, text: str) -> StoredImage:
        """The image `text` names in homerun's store; else one the container engine has
        (built by hand, pulled), taken into the store under that name. NotFound says where
        it was looked for."""
        try:
            return self._images.resolve(text)
        except NotFound as missing:
            if self._engine is None:
                raise
            record = engine_image_named(self._engine, text, missing)
            return self._images.adopt(parse_image_name(text, "--image"), record)

    def replace(self, manifest: ServiceManifest) -> AsyncIterator[DeployEvent]:
        """Apply a Knative Service (already validated)."""

        manifest = self._pulled_back(manifest)

        async def work(emit: Emit) -> None:
            async with self._locks.setdefault(manifest.name, asyncio.Lock()):
                await self._apply(plan_replace(manifest, self._replace_facts(manifest)), emit)

        return self._tasks.stream(work)

    def _pulled_back(self, manifest: ServiceManifest) -> ServiceManifest:
        """A document `services export` wrote names the image as the registry serves it
        (`registry/path@sha256:REGISTRY_DIGEST`); the image it was pushed from is here, under
        its own digest, so replacing with it changes nothing."""
        image = manifest.template.spec.image
        pushed = self._images.push_of(image) if image else None
        if pushed is None:
            return manifest
        local = parse_image_name(pushed.local)
        spec = manifest.template.spec.model_copy(update={"image": pushed.local})
        template = dataclasses.replace(
            manifest.template, spec=spec, digest=(local.digest or "").removeprefix("sha256:")
        )
        return dataclasses.replace(manifest, template=template)

    def _replace_facts(self, manifest: ServiceManifest) -> ReplaceFacts:
        service, template = manifest.name, manifest.template
        exists = self._store.has_service(service)
        base = self._store.latest_created(service) if exists else None
        named = None
        if template.name is not None and self._store.has_revision(template.name):
            named = self._store.revision(template.name)
        return ReplaceFacts(
            base=base,
            base_digest=self._revisions.digest_of(base) if base else None,
            named=named,
            named_digest=self._revisions.digest_of(named) if named else None,
            statuses={r.name: r.status for r in self._store.revisions(service)} if exists else {},
            next_name=_revision_name(service, self._store.next_seq(service)),
            origin=self._revisions.with_digest(service, template.digest),
        )

    async def _apply(self, plan: Plan, emit: Emit) -> None:
        if isinstance(plan, NoChange):
            self._secrets.check(plan.base.spec)
            self._unchanged(plan, emit)
        else:
            self._secrets.check(plan.spec)
            await self._roll_out(plan, emit)

    def _unchanged(self, plan: NoChange, emit: Emit) -> None:
        """A template that did not change makes no revision (Knative compares templates); a
        --tag alone tags the current revision, a document's traffic block is applied."""
        service, base = plan.service, plan.base
        changes = self._iam.set_access(service, plan.allow_unauthenticated, plan.ingress)
        if plan.traffic is not None:
            self._store.set_traffic(service, plan.traffic)
            if plan.metadata is not None:
                self._store.set_metadata(service, plan.metadata.labels, plan.metadata.annotations)
            self._traffic.changed(service)
            emit(Phase(message=f"The template is unchanged: {base.name} stays"))
        else:
            if plan.metadata is not None:
                record = self._store.service(service)
                if (record.labels, record.annotations) != (
                    plan.metadata.labels,
                    plan.metadata.annotations,
                ):
                    self._store.set_metadata(
                        service, plan.metadata.labels, plan.metadata.annotations
                    )
                    changes = [*changes, "labels and description set"]
            if plan.tag:
                if base.status != RevisionStatus.READY:
                    raise InvalidSpec(f"--tag: revision {base.name} is {base.status}, not ready")
                record = self._store.service(service)
                self._store.set_traffic(
                    service, retag(record.traffic or DEFAULT_TRAFFIC, {plan.tag: base.name})
                )
                self._traffic.changed(service)
            what = "No new revision" if changes or plan.tag else "No change"
            emit(Phase(message=f"{what}: {base.name} already runs this template"))
        emit(self._done(service, base.name, unchanged=True, service_changes=changes))

    async def _roll_out(self, plan: NewRevision, emit: Emit) -> None:
        """Build (or copy) an artifact, record the revision, start its first instance, and only
        once it answers apply the plan's traffic. Failing anywhere leaves the traffic as it
        was."""
        service, spec = plan.service, plan.spec
        seq = self._store.next_seq(service)
        name = plan.name or _revision_name(service, seq)
        if plan.name is not None and self._store.has_revision(plan.name):
            raise InvalidSpec(
                f"revision {plan.name} already exists; give another --revision-suffix (or none "
                "for the next SERVICE-0000N-xyz name)"
            )
        with self._revisions.building():
            artifact = await self._artifact_for(name, spec, plan.artifact, emit)
            try:
                revision = self._store.create_revision(
                    service, name, seq, spec, artifact, plan.allow_unauthenticated, plan.ingress
                )
            except BaseException:  # the store is locked or full: no artifact without its record
                self._tasks.discard(self._paths.revisions / name)
                raise
        # Access is the service's, not the revision's: revisions serving now get it at once.
        self._live.refresh_access()
        origin, argv = artifact.entrypoint_origin, artifact.command_line
        self._logs.emit(
            platform_entry(
                service, f"Revision {name} created; entrypoint from {origin}: {argv}", revision=name
            )
        )
        emit(Phase(message=f"Entrypoint ({origin}): {argv}"))
        mismatch = capacity_warning(revision)
        if mismatch is not None:
            emit(Phase(message=f"Warning: {mismatch}"))
            self._logs.emit(platform_entry(service, mismatch, severity="WARNING", revision=name))
        emit(Phase(message=f"Starting revision {name}"))
        try:
            unit = self._live.unit(revision)
            instance = await self._started(unit, emit)
            await self._supervisor.confirm(unit, instance, self._settings.deploy_settle_seconds)
        except StartFailed as failure:
            detail = self._secrets.redact(failure.detail(built_app(unit.plan.cwd, artifact)), spec)
            await self._fail(revision, detail, failure.message)
            previous = self._store.latest_ready(service)
            keeps = f"; {previous.name} keeps serving" if previous else ""
            raise HomerunError(
                f"revision {name} is not ready: {detail}\n"
                + _carried_over(plan, service)
                + f"Traffic was not moved{keeps}. Fix the app and deploy again "
                f"(`homerun logs read {service}` shows its full log)."
            ) from None
        except HomerunError as error:  # a secret went missing between the check and now
            await self._fail(revision, str(error), str(error))
            raise
        except Exception as error:  # a bug: the revision must not stay "starting" for ever
            await self._fail(revision, f"internal error: {error!r}", f"internal error: {error!r}")
            raise
        self._store.set_revision_status(name, RevisionStatus.READY)
        record = self._store.service(service)
        self._store.set_traffic(service, plan.traffic.apply(record.traffic, name))
        if plan.metadata is not None:
            self._store.set_metadata(service, plan.metadata.labels, plan.metadata.annotations)
        self._traffic.changed(service)
        startup_ms = ((instance.ready_at or 0) - instance.started_at) * 1000
        done = self._done(service, name, startup_ms=round(startup_ms))
        self._logs.emit(
            platform_entry(
                service,
                f"Revision {name} is ready and serves {done.percent}% of traffic",
                revision=name,
            )
        )
        emit(done)

    async def _started(self, unit: RevisionUnit, emit: Emit) -> ManagedInstance:
        """Start the revision's first instance; say how long it has been starting, and what
        the app printed last, every second until it listens."""
        start = asyncio.ensure_future(self._supervisor.start_instance(unit))
        began = self._clock()
        try:
            while not (await asyncio.wait([start], timeout=self._progress_seconds))[0]:
                output = unit.supervised.recent_output
                emit(
                    Starting(
                        revision=unit.name,
                        elapsed_seconds=round(self._clock() - began, 1),
                        last_line=output[-1] if output else None,
                    )
                )
        finally:
            if not start.done():
                start.cancel()
        return start.result()

    async def _artifact_for(
        self, name: str, spec: RevisionSpec, plan: Build | Reuse | FromImage, emit: Emit
    ) -> ArtifactRecord:
        dest = self._paths.revisions / name
        try:
            if isinstance(plan, FromImage):
                image = self._images.resolve(plan.image)
                emit(Phase(message=f"Creating revision {name} from the image {plan.image}"))
                return await asyncio.to_thread(
                    copy_artifact, image.root, image.record, plan.image, dest
                )
            if isinstance(plan, Reuse):
                emit(
                    Phase(
                        message=f"Creating revision {name} from the artifact of "
                        f"{plan.revision.name} (no rebuild)"
                    )
                )
                return await asyncio.to_thread(
                    copy_artifact,
                    self._paths.revisions / plan.revision.name,
                    plan.revision.artifact,
                    plan.revision.name,
                    dest,
                    spec.container_concurrency,
                )
            if plan.reason:
                emit(Phase(message=f"Rebuilding: {plan.reason}"))
            emit(Phase(message=f"Building revision {name} from {plan.source}"))
            loop = asyncio.get_running_loop()

            def output(line: str) -> None:
                loop.call_soon_threadsafe(emit, BuildLine(line=line))

            return await asyncio.to_thread(self._build_artifact, plan.source, dest, spec, output)
        except OSError as error:  # a full disk, most likely: say so, not "internal error"
            await asyncio.to_thread(shutil.rmtree, dest, True)
            raise write_failure(error, dest, "the service serves as before") from None
        except BaseException:  # a failed build, or the daemon stopping: leave nothing behind
            shutil.rmtree(dest, ignore_errors=True)
            raise

    def _build_artifact(
        self, source: Path, dest: Path, spec: RevisionSpec, output: Callable[[str], None]
    ) -> ArtifactRecord:
        """Blocking (run in a thread): the build, then the record with its digest."""
        artifact = self._build(
            source,
            dest,
            command=spec.command,
            args=spec.args,
            user_env=spec.env,
            venv_cache=self._paths.venv_cache,
            output=output,
            max_source_bytes=self._settings.max_source_bytes,
            function=spec.function_target,
            base_image=spec.base_image,
            concurrency=spec.container_concurrency,
        )
        return artifact_record(artifact)

    async def _fail(self, revision: RevisionRecord, detail: str, message: str) -> None:
        await self._live.stop(revision.name)
        self._store.set_revision_status(revision.name, RevisionStatus.FAILED, detail)
        self._live.rebuild()  # a new service that never became ready answers 503, not 404
        self._logs.emit(
            platform_entry(
                revision.service,
                f"Revision {revision.name} failed: {message}",
                severity="ERROR",
                revision=revision.name,
            )
        )
        self._revisions.collect_garbage(revision.service)

    def _done(self, service: str, revision: str, **extra: Any) -> Done:
        resolved = resolved_traffic(self._store, service)
        return Done(
            service=service,
            revision=revision,
            url=self._urls.service(service),
            percent=served_percent(resolved, revision),
            tag_urls={tag: self._urls.tag(service, tag) for tag in tags_of(resolved, revision)},
            **extra,
        )


def _carried_over(plan: NewRevision, service: str) -> str:
    """Entrypoint flags kept from an earlier deploy, said where a start failure is reported."""
    if not plan.carried_over:
        return ""
    kept = ", ".join(f"{flag} {value}" for flag, value in plan.carried_over.items())
    flags = " ".join(f"{flag}=''" for flag in plan.carried_over)
    return (
        f"This revision runs {kept} from an earlier deploy of {service} (a deploy keeps what "
        f"it does not change); give the flag again to replace it, or `homerun services update "
        f"{service} {flags}` to go back to the source's own entrypoint.\n"
    )


def _revision_name(service: str, seq: int) -> str:
    return f"{service}-{seq:05d}-{random_suffix()}"
