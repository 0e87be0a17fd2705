"""The control plane: deploys, the live routing table, and what describe and list report."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import getpass
import os
import random
import secrets
import shutil
import string
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from homerun.access import peers
from homerun.access.guard import AccessPolicy, guard_for
from homerun.access.iam import (
    ALL_USERS,
    INGRESS_INTERNAL,
    check_ingress,
    check_role,
    instance_member,
    parse_member,
    policy_document,
    user_member,
)
from homerun.access.tokens import TokenAuthority
from homerun.build import Artifact
from homerun.build.artifact import artifact_digest, artifact_record, copy_artifact
from homerun.config import Paths, Settings
from homerun.errors import HomerunError, InvalidSpec, NotFound
from homerun.knative import (
    SOURCE_ANNOTATION,
    RevisionView,
    ServiceManifest,
    ServiceView,
    image_for,
    render_revision,
    render_service,
)
from homerun.observe.logs import LogStore, platform_entry
from homerun.retention import doomed_revisions, unused_venvs
from homerun.routing.proxy import Address, Guard, Route, RouteError
from homerun.routing.table import (
    TAG_SEPARATOR,
    RoutingTable,
    SelectionMemo,
    ServiceRoutes,
    StratifiedRolls,
    TrafficTarget,
)
from homerun.routing.throttler import Throttler
from homerun.scaling.policy import policy_for
from homerun.scaling.supervisor import RevisionUnit, StartFailed, Supervisor
from homerun.secret_store import SecretStore
from homerun.spec import LATEST_VERSION, DeployRequest, RevisionSpec, validate_service_name
from homerun.store import FAILED, READY, RevisionRecord, ServiceRecord, Store
from homerun.traffic import (
    DEFAULT_TRAFFIC,
    ResolvedTarget,
    TrafficEntry,
    TrafficUpdate,
    check_tag,
    check_target,
    pin_latest,
    resolve,
    retag,
    served_percent,
    tags_of,
    update_traffic,
)

# build(source, dest, command=, args=, user_env=, venv_cache=, output=) -> Artifact
BuildFunction = Callable[..., Artifact]
Event = dict[str, Any]

# The environment an instance starts from, as a container starts from its image's.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE")
# Folders being deleted in the background: renamed first, so they vanish from view at once.
_TRASH_PREFIX = ".trash-"
# Shorter secret values are not masked in error messages: "[secret X]" for every "ab" in a
# log tail would mangle it and say more than it hides.
_MIN_REDACTED = 4


@dataclass(frozen=True)
class _Build:
    """Build the revision's artifact from a source folder."""

    source: Path
    reason: str  # why a rebuild, when the caller asked for none


@dataclass(frozen=True)
class _Reuse:
    """Copy the artifact of an existing revision: same code, same virtualenv, new settings."""

    revision: RevisionRecord


class ControlPlane:
    def __init__(
        self,
        *,
        settings: Settings,
        paths: Paths,
        store: Store,
        logs: LogStore,
        supervisor: Supervisor,
        build: BuildFunction,
        poke: Callable[[RevisionUnit], None],
        clock: Callable[[], float],
        secrets: SecretStore | None = None,
        rng: random.Random | None = None,
        signing_key: bytes | None = None,
    ) -> None:
        self._settings = settings
        self._paths = paths
        self._store = store
        self._logs = logs
        self._supervisor = supervisor
        self._build = build
        self._poke = poke
        self._clock = clock
        self._rolls = StratifiedRolls(rng or random.Random())
        self._secrets = secrets or SecretStore(paths.secrets)
        self._builds = 0  # artifacts being built or copied: no virtualenv is collected meanwhile
        self._unroutable_logged: set[str] = set()
        # Live state, rebuilt from the store at startup.
        self.units: dict[str, RevisionUnit] = {}
        self._routes: dict[str, Route] = {}
        self._table = RoutingTable(settings.domain)
        self._selections = SelectionMemo()
        self._deploy_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.dashboard_url: str | None = None  # set by the daemon once it listens
        # Instances ask it for ID tokens (HOMERUN_METADATA_URL); set by the daemon.
        self.metadata_address: Address | None = None
        # ID tokens: issued by this platform (its URL), which is also the audience of tokens
        # good for any of its services (`homerun auth print-identity-token` without
        # --audiences). Without a key of its own (tests), a random one.
        self.authority = TokenAuthority(
            signing_key or os.urandom(32), self.url(None)
        )
        self._guards: dict[str, Guard | None] = {}  # per service; None: public, ingress all
        # The OS user running the daemon owns the platform and may invoke every service, as a
        # project's owner may on Cloud Run: `curl -H "Authorization: Bearer $(homerun auth
        # print-identity-token)"` works on a private service without a binding.
        self.owner = user_member(getpass.getuser())
        self._identities: dict[str, str] = {}  # revision -> the member its instances are

    # -- the data plane's question ------------------------------------------------------

    def resolve(self, host: str) -> Route | RouteError:
        selection = self._selections.select(self._table, host, self._rolls)
        if selection is None:
            return RouteError(404, f"no service answers at {host}")
        if selection.revision is None:
            return RouteError(503, f"service {selection.service} has no ready revision")
        route = self._routes.get(selection.revision)
        if route is None:
            return RouteError(503, f"revision {selection.revision} is not running")
        return route

    # -- lifecycle -------------------------------------------------------------------

    async def restore(self) -> None:
        """After a (re)start: route every service to its ready revisions and start them."""
        failed = self._store.fail_unfinished_revisions(
            "the daemon stopped before this revision became ready"
        )
        for name in failed:
            revision = self._store.revision(name)
            self._logs.emit(
                platform_entry(
                    revision.service,
                    f"Revision {name} marked failed: the daemon stopped during its deploy",
                    severity="ERROR",
                    revision=name,
                )
            )
        self._rebuild_table()
        self._empty_trash()
        for record in self._store.services():
            self._collect_garbage(record.name)
        self._collect_venvs()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(self._supervisor.stop_revision(unit) for unit in self.units.values())
        )

    # -- deploy ----------------------------------------------------------------------

    def deploy(self, request: DeployRequest) -> AsyncIterator[Event]:
        """Start a deploy; its events stream to the caller, who may go away without harm."""
        return self._stream(lambda emit: self._deploy(request, emit))

    def _stream(
        self, work: Callable[[Callable[[Event], None]], Coroutine[Any, Any, None]]
    ) -> AsyncIterator[Event]:
        """Run `work` as a task of the daemon and stream what it emits until it ends; an error
        ends the stream with an `error` event."""
        events: asyncio.Queue[Event | None] = asyncio.Queue()
        emit = events.put_nowait

        async def run() -> None:
            try:
                await work(emit)
            except HomerunError as error:
                emit({"event": "error", "message": str(error)})
            except Exception as error:  # a bug: report it rather than leave the client hanging
                emit({"event": "error", "message": f"internal error: {error!r}"})
                raise

        task = asyncio.ensure_future(run())
        self._tasks.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            events.put_nowait(None)

        task.add_done_callback(finished)
        return _drain(events)

    async def _deploy(self, request: DeployRequest, emit: Callable[[Event], None]) -> None:
        service = validate_service_name(request.service)
        if request.tag is not None:
            check_tag(request.tag, service, "--tag")
        if request.ingress is not None:
            check_ingress(request.ingress)
        async with self._deploy_locks.setdefault(service, asyncio.Lock()):
            await self._deploy_locked(service, request, emit)

    async def _deploy_locked(
        self, service: str, request: DeployRequest, emit: Callable[[Event], None]
    ) -> None:
        changes = request.changes
        base = self._store.latest_created(service) if self._store.has_service(service) else None
        if base is None and changes.source is None:
            raise NotFound(
                f"service {service!r} not found; deploy it first with "
                f"`homerun deploy {service} --source DIR`"
            )
        # gcloud: whatever the flags do not change is kept from the service's current template.
        spec = changes.apply(base.spec if base else None)
        previous_ready = self._store.latest_ready(service)
        if request.no_traffic and previous_ready is None:
            raise InvalidSpec(
                f"--no-traffic: {service} has no ready revision that could keep the traffic; "
                "deploy without --no-traffic"
            )
        self._check_secrets(spec)
        plan: _Build | _Reuse
        if changes.source is not None:
            plan = _Build(Path(changes.source), "")
        else:
            assert base is not None
            if spec.configuration() == base.spec.configuration():
                changed = self._set_access(service, request)
                self._unchanged(service, base, request.tag, emit, changed)
                return
            if spec.entrypoint_inputs() != base.spec.entrypoint_inputs():
                plan = _Build(
                    Path(spec.source),
                    "the entrypoint changes (--command, --args or GOOGLE_ENTRYPOINT), so the "
                    f"source is built again from {spec.source}",
                )
            else:
                plan = _Reuse(base)

        def traffic_after(
            entries: tuple[TrafficEntry, ...], new: str
        ) -> tuple[TrafficEntry, ...]:
            entries = entries or DEFAULT_TRAFFIC
            if request.no_traffic and previous_ready is not None:
                entries = pin_latest(entries, previous_ready.name)
            if request.tag:
                entries = retag(entries, {request.tag: new})
            return entries

        await self._roll_out(
            service,
            spec,
            plan,
            emit,
            traffic_after=traffic_after,
            allow_unauthenticated=request.allow_unauthenticated,
            ingress=request.ingress,
        )

    def _unchanged(
        self,
        service: str,
        base: RevisionRecord,
        tag: str | None,
        emit: Callable[[Event], None],
        service_changes: list[str] | None = None,
    ) -> None:
        """`services update` that changes nothing makes no revision (Knative compares
        templates); a --tag alone tags the current revision."""
        if tag:
            if base.status != READY:
                raise InvalidSpec(f"--tag: revision {base.name} is {base.status}, not ready")
            record = self._store.service(service)
            self._store.set_traffic(
                service, retag(record.traffic or DEFAULT_TRAFFIC, {tag: base.name})
            )
            self._traffic_changed(service)
        emit({"event": "phase", "message": f"No change: {base.name} already runs this template"})
        emit(
            self._done_event(
                service, base.name, unchanged=True, service_changes=service_changes or []
            )
        )

    async def _roll_out(
        self,
        service: str,
        spec: RevisionSpec,
        plan: _Build | _Reuse,
        emit: Callable[[Event], None],
        *,
        traffic_after: Callable[[tuple[TrafficEntry, ...], str], tuple[TrafficEntry, ...]],
        allow_unauthenticated: bool | None = None,
        ingress: str | None = None,
        name: str | None = None,
        on_ready: Callable[[], None] | None = None,
    ) -> RevisionRecord:
        """Build (or copy) an artifact, record the revision, start its first instance, and only
        once it answers apply `traffic_after` to the service's traffic. Failing anywhere leaves
        the traffic as it was."""
        seq = self._store.next_seq(service)
        name = name or f"{service}-{seq:05d}-{_suffix()}"
        dest = self._paths.revisions / name
        loop = asyncio.get_running_loop()

        def output(line: str) -> None:
            loop.call_soon_threadsafe(emit, {"event": "build", "line": line})

        self._builds += 1
        try:
            stored_artifact = await self._artifact_for(name, dest, spec, plan, emit, output)
            revision = self._store.create_revision(
                service, name, seq, spec, stored_artifact, allow_unauthenticated, ingress
            )
        finally:
            self._builds -= 1
        # Access is the service's, not the revision's: revisions serving now get it at once.
        self._refresh_access()
        argv = " ".join(stored_artifact.get("argv", []))
        origin = stored_artifact.get("entrypoint_origin")
        self._logs.emit(
            platform_entry(
                service,
                f"Revision {name} created; entrypoint from {origin}: {argv}",
                revision=name,
            )
        )
        emit({"event": "phase", "message": f"Entrypoint ({origin}): {argv}"})
        emit({"event": "phase", "message": f"Starting revision {name}"})
        try:
            unit = self._unit(revision)
            instance = await self._supervisor.start_instance(unit)
            await self._supervisor.confirm(unit, instance, self._settings.deploy_settle_seconds)
        except StartFailed as failure:
            await self._fail(revision, self._redact(failure.detail(), spec), failure.message)
            previous = self._store.latest_ready(service)
            keeps = f"; {previous.name} keeps serving" if previous else ""
            raise HomerunError(
                f"revision {name} is not ready: {self._redact(failure.detail(), spec)}\n"
                f"Traffic was not moved{keeps}. Fix the app and deploy again "
                f"(`homerun logs read {service}` shows its full log)."
            ) from None
        except HomerunError as error:  # a secret went missing between the check and now
            await self._fail(revision, str(error), str(error))
            raise
        self._store.set_revision_status(name, READY)
        record = self._store.service(service)
        self._store.set_traffic(service, traffic_after(record.traffic, name))
        if on_ready is not None:
            on_ready()
        self._traffic_changed(service)
        startup_ms = ((instance.ready_at or 0) - instance.started_at) * 1000
        done = self._done_event(service, name, startup_ms=round(startup_ms))
        self._logs.emit(
            platform_entry(
                service,
                f"Revision {name} is ready and serves {done['percent']}% of traffic",
                revision=name,
            )
        )
        emit(done)
        return self._store.revision(name)

    async def _artifact_for(
        self,
        name: str,
        dest: Path,
        spec: RevisionSpec,
        plan: _Build | _Reuse,
        emit: Callable[[Event], None],
        output: Callable[[str], None],
    ) -> dict[str, Any]:
        try:
            if isinstance(plan, _Reuse):
                emit(
                    {
                        "event": "phase",
                        "message": f"Creating revision {name} from the artifact of "
                        f"{plan.revision.name} (no rebuild)",
                    }
                )
                return await asyncio.to_thread(
                    copy_artifact,
                    self._paths.revisions / plan.revision.name,
                    plan.revision.artifact,
                    plan.revision.name,
                    dest,
                )
            if plan.reason:
                emit({"event": "phase", "message": f"Rebuilding: {plan.reason}"})
            emit({"event": "phase", "message": f"Building revision {name} from {plan.source}"})
            return await asyncio.to_thread(self._build_artifact, plan.source, dest, spec, output)
        except BaseException:  # a failed build, or the daemon stopping: leave nothing behind
            shutil.rmtree(dest, ignore_errors=True)
            raise

    def _build_artifact(
        self, source: Path, dest: Path, spec: RevisionSpec, output: Callable[[str], None]
    ) -> dict[str, Any]:
        """Blocking (run in a thread): the build, then the digest its image is named by."""
        try:
            artifact = self._build(
                source,
                dest,
                command=spec.command,
                args=spec.args,
                user_env=spec.env,
                venv_cache=self._paths.venv_cache,
                output=output,
                max_source_bytes=self._settings.max_source_bytes,
            )
            record = artifact_record(artifact)
            record["digest"] = artifact_digest(dest, record)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        return record

    async def _fail(self, revision: RevisionRecord, detail: str, message: str) -> None:
        unit = self.units.pop(revision.name, None)
        self._routes.pop(revision.name, None)
        if unit is not None:
            unit.retired = True
            await self._supervisor.stop_revision(unit)
        self._store.set_revision_status(revision.name, FAILED, detail)
        self._logs.emit(
            platform_entry(
                revision.service,
                f"Revision {revision.name} failed: {message}",
                severity="ERROR",
                revision=revision.name,
            )
        )
        self._collect_garbage(revision.service)

    def _done_event(self, service: str, revision: str, **extra: Any) -> Event:
        resolved = self._resolved(service)
        return {
            "event": "done",
            "service": service,
            "revision": revision,
            "url": self.url(service),
            "percent": served_percent(resolved, revision),
            "tag_urls": {tag: self.tag_url(service, tag) for tag in tags_of(resolved, revision)},
            **extra,
        }

    # -- services replace ------------------------------------------------------------

    def replace(self, manifest: ServiceManifest) -> AsyncIterator[Event]:
        """Apply a Knative Service (already validated): a changed template makes a revision,
        the traffic block and metadata are applied once it is ready."""
        return self._stream(lambda emit: self._replace(manifest, emit))

    async def _replace(self, manifest: ServiceManifest, emit: Callable[[Event], None]) -> None:
        async with self._deploy_locks.setdefault(manifest.name, asyncio.Lock()):
            await self._replace_locked(manifest, emit)

    async def _replace_locked(
        self, manifest: ServiceManifest, emit: Callable[[Event], None]
    ) -> None:
        service = manifest.name
        exists = self._store.has_service(service)
        base = self._store.latest_created(service) if exists else None
        template = manifest.template
        source = template.source or (base.spec.source if base else "")
        spec = template.spec.model_copy(update={"source": source})
        spec.check()
        changed = base is None or (
            spec.configuration() != base.spec.configuration()
            or template.digest != self._digest_of(base)
        )
        if template.name is not None and self._store.has_revision(template.name):
            existing = self._store.revision(template.name)
            same = (
                existing.service == service
                and existing.spec.configuration() == spec.configuration()
                and self._digest_of(existing) == template.digest
            )
            if not same or (base is not None and existing.name != base.name):
                raise InvalidSpec(
                    f"spec.template.metadata.name: revision {template.name} already exists "
                    "with another template; a changed template needs a new name (or none)"
                )
            changed = False
        new_name = template.name if changed else None
        statuses = {r.name: r.status for r in self._store.revisions(service)} if exists else {}
        if new_name is None and changed:
            new_name = f"{service}-{self._store.next_seq(service):05d}-{_suffix()}"
        for index, entry in enumerate(manifest.traffic):
            if entry.latest or entry.revision == new_name:
                continue
            check_target(
                str(entry.revision), service, statuses, f"spec.traffic[{index}].revisionName"
            )
        self._check_secrets(spec)

        def apply_metadata() -> None:
            self._store.set_metadata(service, manifest.labels, manifest.annotations)

        if not changed:
            assert base is not None
            self._store.set_traffic(service, manifest.traffic)
            apply_metadata()
            self._traffic_changed(service)
            emit({"event": "phase", "message": f"The template is unchanged: {base.name} stays"})
            emit(self._done_event(service, base.name, unchanged=True))
            return
        plan: _Build | _Reuse
        origin = self._revision_with_digest(service, template.digest)
        if origin is not None and origin.spec.entrypoint_inputs() == spec.entrypoint_inputs():
            plan = _Reuse(origin)
        elif origin is not None:
            plan = _Build(
                Path(source or origin.spec.source),
                "the entrypoint changes (command, args or GOOGLE_ENTRYPOINT), so the source "
                f"is built again from {source or origin.spec.source}",
            )
        elif template.source:
            plan = _Build(
                Path(template.source),
                f"no artifact here has the image's digest, so it is built from "
                f"{SOURCE_ANNOTATION}: {template.source}",
            )
        else:
            raise InvalidSpec(
                "spec.template.spec.containers[0].image: no revision here has this artifact "
                f"digest, and there is no {SOURCE_ANNOTATION} annotation to build it from"
            )
        await self._roll_out(
            service,
            spec,
            plan,
            emit,
            traffic_after=lambda entries, new: manifest.traffic,
            name=new_name,
            on_ready=apply_metadata,
        )

    def _revision_with_digest(self, service: str, digest: str | None) -> RevisionRecord | None:
        if digest is None:
            return None
        own = self._store.revisions(service) if self._store.has_service(service) else []
        for revision in [*own, *self._store.revisions()]:
            if revision.artifact and self._digest_of(revision) == digest:
                if (self._paths.revisions / revision.name).is_dir():
                    return revision
        return None

    # -- queries and other commands ---------------------------------------------------------

    def url(self, service: str | None) -> str:
        """A service's URL; None: the platform's own (the issuer of its ID tokens)."""
        port = self._settings.port
        suffix = "" if port == 80 else f":{port}"
        host = self._settings.domain if service is None else f"{service}.{self._settings.domain}"
        return f"http://{host}{suffix}"

    def list_services(self) -> list[dict[str, Any]]:
        return [self._service_summary(record.name) for record in self._store.services()]

    def describe(self, service: str) -> dict[str, Any]:
        summary = self._service_summary(service)
        summary["revisions"] = [
            self._revision_summary(revision) for revision in self._store.revisions(service)
        ]
        return summary

    def list_revisions(self, service: str | None) -> list[dict[str, Any]]:
        if service is not None:
            self._store.service(service)  # NotFound for an unknown service
        return [self._revision_summary(revision) for revision in self._store.revisions(service)]

    def read_logs(self, service: str, limit: int, **filters: str | None) -> list[dict[str, Any]]:
        """Newest entries; filters: revision, min_severity, since, after (see LogStore.read)."""
        self._store.service(service)
        return self._logs.read(service, limit=limit, **filters)

    async def delete_service(self, service: str) -> None:
        self._store.service(service)
        revisions = self._store.delete_service(service)
        self._rebuild_table()
        for revision in revisions:
            unit = self.units.pop(revision.name, None)
            self._routes.pop(revision.name, None)
            if unit is not None:
                await self._supervisor.stop_revision(unit)
            shutil.rmtree(self._paths.revisions / revision.name, ignore_errors=True)
        self._logs.delete(service)

    def status(self) -> dict[str, Any]:
        return {
            "pid": os.getpid(),
            "router": f"http://{self._settings.listen}:{self._settings.port}",
            "dashboard": self.dashboard_url,
            "services": len(self._store.services()),
            "revisions": len(self._store.revisions()),
            "instances": sum(len(unit.instances) for unit in self.units.values()),
        }

    def tag_url(self, service: str, tag: str) -> str:
        return self.url(f"{tag}{TAG_SEPARATOR}{service}")

    # -- traffic ------------------------------------------------------------------------

    def update_traffic(self, service: str, update: TrafficUpdate) -> dict[str, Any]:
        """`homerun services update-traffic`: all checks first, then one write, then the new
        routing table; any error leaves the traffic as it was."""
        record = self._store.service(service)
        revisions = self._store.revisions(service)
        edited = update_traffic(
            record.traffic,
            update,
            service=service,
            revisions={revision.name: revision.status for revision in revisions},
        )
        latest = self._store.latest_ready(service)
        for target in resolve(edited, latest.name if latest else None):
            if target.revision is None:
                raise InvalidSpec(
                    f"LATEST: {service} has no ready revision to send traffic or a tag to"
                )
        for name in {target.revision for target in resolve(edited, None) if target.revision}:
            self._check_secrets(self._store.revision(name).spec)
        self._store.set_traffic(service, edited)
        self._traffic_changed(service)
        summary = ", ".join(
            f"{target.percent}% {target.revision}" + (f" (tag {target.tag})" if target.tag else "")
            for target in self._resolved(service)
        )
        self._logs.emit(platform_entry(service, f"Traffic set: {summary}"))
        return self._service_summary(service)

    def _traffic_changed(self, service: str) -> None:
        self._rebuild_table()
        self._collect_garbage(service)

    def _resolved(self, service: str) -> list[ResolvedTarget]:
        record = self._store.service(service)
        latest = self._store.latest_ready(service)
        return resolve(record.traffic or DEFAULT_TRAFFIC, latest.name if latest else None)

    # -- Knative documents --------------------------------------------------------------

    def knative_service(self, service: str) -> dict[str, Any]:
        record = self._store.service(service)
        revisions = self._store.revisions(service)
        tags = {entry.tag for entry in record.traffic if entry.tag}
        return render_service(
            ServiceView(
                name=record.name,
                created_at=record.created_at,
                generation=record.generation,
                labels=record.labels,
                annotations=record.annotations,
                traffic=record.traffic,
                revisions=[self._revision_view(revision) for revision in revisions],
                url=self.url(service),
                tag_urls={tag: self.tag_url(service, tag) for tag in tags if tag},
            )
        )

    def knative_revision(self, name: str) -> dict[str, Any]:
        revision = self._store.revision(name)
        view = self._revision_view(revision)
        routed = any(t.revision == name for t in self._resolved(revision.service))
        image = image_for(revision.service, view.digest) if view.digest else None
        return render_revision(view, routed, image)

    def describe_revision(self, name: str) -> dict[str, Any]:
        return self._revision_summary(self._store.revision(name))

    def _revision_view(self, revision: RevisionRecord) -> RevisionView:
        return RevisionView(
            name=revision.name,
            service=revision.service,
            spec=revision.spec,
            status=revision.status,
            message=revision.message,
            created_at=revision.created_at,
            ready_at=revision.ready_at,
            digest=self._digest_of(revision),
        )

    def _digest_of(self, revision: RevisionRecord) -> str | None:
        """The artifact digest; revisions built before digests existed get theirs now."""
        artifact = revision.artifact
        if not artifact:
            return None
        digest = artifact.get("digest")
        if digest is None:
            root = self._paths.revisions / revision.name
            if not root.is_dir():
                return None
            digest = artifact_digest(root, artifact)
            self._store.set_artifact(revision.name, dict(artifact, digest=digest))
        return str(digest)

    # -- access -------------------------------------------------------------------------

    def iam_policy(self, service: str) -> dict[str, Any]:
        self._store.service(service)  # NotFound for an unknown service
        return policy_document(self._store.members(service))

    def add_iam_binding(self, service: str, member: str, role: str) -> dict[str, Any]:
        """`services add-iam-policy-binding`: takes effect on the next request."""
        self._store.service(service)
        member, role = parse_member(member), check_role(role)
        if self._store.add_member(service, role, member):
            self._refresh_access()
            self._logs.emit(platform_entry(service, f"IAM: {member} granted {role}"))
        return self.iam_policy(service)

    def remove_iam_binding(self, service: str, member: str, role: str) -> dict[str, Any]:
        self._store.service(service)
        member, role = parse_member(member), check_role(role)
        if not self._store.remove_member(service, role, member):
            raise InvalidSpec(
                f"{member} does not hold {role} on {service}; "
                f"`homerun services get-iam-policy {service}` shows who does"
            )
        self._refresh_access()
        self._logs.emit(platform_entry(service, f"IAM: {member} no longer holds {role}"))
        return self.iam_policy(service)

    def mint_identity_token(self, member: str, audience: str | None) -> dict[str, Any]:
        """An ID token for `member`; without an audience, one good for every service here."""
        member = parse_member(member, "member")
        if member.startswith("all"):
            raise InvalidSpec(f"member: a token is for one user or service account, not {member}")
        audience = audience or self.authority.issuer
        if len(audience) > 2048 or not audience.strip():
            raise InvalidSpec("audience: give a service URL (at most 2048 characters)")
        token = self.authority.mint(member, audience)
        return {"token": token, "member": member, "audience": audience}

    def instance_members(self) -> dict[int, str]:
        """pid -> member of every running instance (the identity it calls other services as)."""
        members = {}
        for unit in self.units.values():
            member = self._identities.get(unit.name) or instance_member(unit.service, None)
            for instance in unit.instances:
                members[instance.process.pid] = member
        return members

    def identify_caller(self, peer: Address, server: Address) -> str | None:
        """The member of the instance that opened a loopback connection, or None (/proc)."""
        return peers.connection_owner(peer, server, self.instance_members())

    def _set_access(self, service: str, request: DeployRequest) -> list[str]:
        """The service-level flags of a deploy that makes no revision; what they changed."""
        if request.allow_unauthenticated is None and request.ingress is None:
            return []
        before = self._store.service(service)
        self._store.set_access(service, request.allow_unauthenticated, request.ingress)
        after = self._store.service(service)
        changes = []
        if after.allow_unauthenticated != before.allow_unauthenticated:
            public = "allowed" if after.allow_unauthenticated else "no longer allowed"
            changes.append(f"unauthenticated invocations {public}")
        if after.ingress != before.ingress:
            changes.append(f"ingress set to {after.ingress}")
        self._refresh_access()
        return changes

    def _guard(self, service: str) -> Guard | None:
        if service not in self._guards:
            self._guards[service] = self._make_guard(service)
        return self._guards[service]

    def _make_guard(self, service: str) -> Guard | None:
        if not self._store.has_service(service):
            return guard_for(self._policy(service, None), self.authority)  # private until made
        return guard_for(self._policy(service, self._store.service(service)), self.authority)

    def _policy(self, service: str, record: ServiceRecord | None) -> AccessPolicy:
        invokers = self._store.members(service) if record is not None else frozenset()
        urls = {self.url(service)}
        if record is not None:
            urls |= {self.tag_url(service, entry.tag) for entry in record.traffic if entry.tag}
        audiences = {self.authority.issuer} | urls | {f"{url}/" for url in urls}
        return AccessPolicy(
            service=service,
            public=ALL_USERS in invokers,
            internal=record is not None and record.ingress == INGRESS_INTERNAL,
            invokers=invokers | {self.owner},
            audiences=frozenset(audiences),
        )

    def _refresh_access(self) -> None:
        """Rebuild every service's guard and hand it to its routes (after an IAM, ingress or
        tag change); requests already admitted are not checked again."""
        self._guards.clear()
        for name, route in list(self._routes.items()):
            guard = self._guard(route.service)
            if route.guard is not guard:
                self._routes[name] = route._replace(guard=guard)

    # -- revisions ----------------------------------------------------------------------

    async def delete_revision(self, name: str) -> None:
        """Delete a revision that serves nothing; refuse (saying why) one that does."""
        revision = self._store.revision(name)
        service = revision.service
        resolved = self._resolved(service)
        percent = served_percent(resolved, name)
        if percent:
            raise InvalidSpec(
                f"revision {name} serves {percent}% of {service}'s traffic; move it first "
                f"(`homerun services update-traffic {service} --to-revisions OTHER=100`)"
            )
        tags = tags_of(resolved, name)
        if tags:
            listed = ",".join(tags)
            raise InvalidSpec(
                f"revision {name} carries the tag(s) {listed}; remove them first "
                f"(`homerun services update-traffic {service} --remove-tags {listed}`)"
            )
        latest = self._store.latest_created(service)
        if latest is not None and latest.name == name:
            raise InvalidSpec(
                f"revision {name} is the latest revision of {service} (its current template); "
                "deploy a newer one before deleting it"
            )
        if revision.status not in (READY, FAILED):
            raise InvalidSpec(f"revision {name} is still {revision.status}; wait for its deploy")
        self._forget_revision(name)
        self._rebuild_table()
        self._collect_venvs()
        self._logs.emit(platform_entry(service, f"Revision {name} deleted", revision=name))

    # -- secrets --------------------------------------------------------------------------

    def list_secrets(self) -> list[dict[str, Any]]:
        listed = []
        for name in self._secrets.names():
            versions = self._secrets.versions(name)
            listed.append(
                {
                    "name": name,
                    "versions": len(versions),
                    "latest": versions[-1].version if versions else None,
                    "created_at": versions[0].created_at if versions else None,
                    "used_by": self._revisions_using(name),
                }
            )
        return listed

    def secret_versions(self, name: str) -> list[dict[str, Any]]:
        return [
            {"version": v.version, "created_at": v.created_at, "size": v.size}
            for v in self._secrets.versions(name)
        ]

    def create_secret(self, name: str, data: str) -> dict[str, Any]:
        version = self._secrets.create(name, data)
        return {"name": name, "version": version.version}

    def add_secret_version(self, name: str, data: str) -> dict[str, Any]:
        version = self._secrets.add_version(name, data)
        # `latest` is read when an instance starts: instances started from now on get it.
        for unit in self.units.values():
            try:
                spec = self._store.revision(unit.name).spec
            except NotFound:
                continue
            for variable, ref in spec.secrets.items():
                if ref.secret == name and ref.version == LATEST_VERSION:
                    unit.env[variable] = data
        return {"name": name, "version": version.version}

    def delete_secret(self, name: str) -> None:
        self._secrets.versions(name)  # NotFound for an unknown secret
        routed = {
            target.revision
            for record in self._store.services()
            for target in self._resolved(record.name)
            if target.revision
        }
        users = [revision for revision in self._revisions_using(name) if revision in routed]
        if users:
            raise InvalidSpec(
                f"secret {name} is used by revision(s) {', '.join(users)}, which serve traffic "
                "or carry a tag; deploy them without it first "
                f"(`homerun services update SERVICE --remove-secrets ENV`)"
            )
        self._secrets.delete(name)

    def _revisions_using(self, secret: str) -> list[str]:
        return [
            revision.name
            for revision in self._store.revisions()
            if any(ref.secret == secret for ref in revision.spec.secrets.values())
        ]

    def _check_secrets(self, spec: RevisionSpec) -> None:
        for variable, ref in spec.secrets.items():
            try:
                self._secrets.resolve(ref)
            except NotFound as error:
                raise InvalidSpec(f"{variable}={ref}: {error}") from None

    def _secret_env(self, spec: RevisionSpec) -> dict[str, str]:
        return {variable: self._secrets.resolve(ref) for variable, ref in spec.secrets.items()}

    def _redact(self, text: str, spec: RevisionSpec) -> str:
        """Errors quote the app's last log lines; a secret's value never leaves with them."""
        for variable, ref in spec.secrets.items():
            try:
                value = self._secrets.resolve(ref)
            except NotFound:
                continue
            for piece in {value, value.strip()}:
                if len(piece) >= _MIN_REDACTED:
                    text = text.replace(piece, f"[secret {variable}]")
        return text

    # -- retention ------------------------------------------------------------------------

    def _collect_garbage(self, service: str) -> None:
        """Delete the service's revisions past the retention count that serve nothing, with
        their artifacts, then the cached virtualenvs no revision uses any more."""
        if not self._store.has_service(service):
            return
        revisions = self._store.revisions(service)
        protected = {target.revision for target in self._resolved(service) if target.revision}
        if revisions:
            protected.add(revisions[0].name)  # the current template
        latest = self._store.latest_ready(service)
        if latest is not None:
            protected.add(latest.name)
        doomed = doomed_revisions(
            [(revision.name, revision.status) for revision in revisions],
            protected,
            self._settings.revision_retention,
        )
        for name in doomed:
            self._forget_revision(name)
            self._logs.emit(
                platform_entry(
                    service,
                    f"Revision {name} deleted: it served nothing and was past the newest "
                    f"{self._settings.revision_retention} idle revisions kept",
                    revision=name,
                )
            )
        if doomed:
            self._collect_venvs()

    def _forget_revision(self, name: str) -> None:
        unit = self.units.pop(name, None)
        self._routes.pop(name, None)
        if unit is not None:
            unit.retired = True
            self._background(self._supervisor.stop_revision(unit))
        self._store.delete_revision(name)
        self._discard(self._paths.revisions / name)

    def _collect_venvs(self) -> None:
        """Remove cached virtualenvs no revision uses, only in a cache this home owns (a shared
        HOMERUN_VENV_CACHE serves other homes too) and never while a build runs here: a build
        may have just picked a virtualenv it has not recorded yet."""
        cache = self._paths.venv_cache
        if self._builds or not cache.is_dir():
            return
        if not cache.resolve().is_relative_to(self._paths.home.resolve()):
            return
        referenced = [
            Path(revision.artifact["venv"])
            for revision in self._store.revisions()
            if revision.artifact and revision.artifact.get("venv")
        ]
        for venv in unused_venvs(cache.iterdir(), referenced):
            lock_path = cache / f"{venv.name}.lock"
            with open(lock_path, "a+b") as lock:
                try:
                    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    continue  # another home's build holds it
                self._discard(venv)
                lock_path.unlink(missing_ok=True)
            self._logs.emit(
                platform_entry("homerun", f"Removed virtualenv {venv}: no revision uses it")
            )

    def _discard(self, path: Path) -> None:
        """Move a folder out of the way at once; delete it in a thread (a venv is many files)."""
        if not path.exists():
            return
        trash = path.with_name(f"{_TRASH_PREFIX}{path.name}-{_suffix()}")
        try:
            path.rename(trash)
        except OSError:
            trash = path
        self._background(asyncio.to_thread(shutil.rmtree, trash, True))

    def _empty_trash(self) -> None:
        for folder in (self._paths.revisions, self._paths.venv_cache):
            if folder.is_dir():
                for entry in folder.iterdir():
                    if entry.name.startswith(_TRASH_PREFIX):
                        self._background(asyncio.to_thread(shutil.rmtree, entry, True))
        # A daemon killed during a build leaves the artifact folder of a revision that was
        # never recorded (the record is written once the build is done): it goes too.
        if self._paths.revisions.is_dir() and not self._builds:
            for entry in self._paths.revisions.iterdir():
                if entry.name.startswith(_TRASH_PREFIX) or self._store.has_revision(entry.name):
                    continue
                self._discard(entry)
                self._logs.emit(
                    platform_entry(
                        "homerun", f"Removed {entry}: a build the daemon did not finish"
                    )
                )

    # -- internals ---------------------------------------------------------------------

    def _unit(self, revision: RevisionRecord) -> RevisionUnit:
        unit = self.units.get(revision.name)
        if unit is not None:
            return unit
        artifact = revision.artifact or {}
        root = self._paths.revisions / revision.name
        env = {key: os.environ[key] for key in _INHERITED_ENV if key in os.environ}
        env.setdefault("PYTHONUNBUFFERED", "1")  # prints reach the log as they happen
        env.update(artifact.get("env", {}))
        env.update(revision.spec.env)
        # Secret versions are read now; `add_secret_version` refreshes `latest` ones.
        env.update(self._secret_env(revision.spec))
        env.update(
            K_SERVICE=revision.service,
            K_REVISION=revision.name,
            K_CONFIGURATION=revision.service,
        )
        if self.metadata_address is not None:
            # Where an instance gets ID tokens for its own identity, as from Cloud Run's
            # metadata server; GCE_METADATA_HOST is the variable google-auth reads for it.
            host, port = self.metadata_address
            env.update(
                HOMERUN_METADATA_URL=f"http://{host}:{port}/computeMetadata/v1",
                GCE_METADATA_HOST=f"{host}:{port}",
            )
        holder: list[RevisionUnit] = []
        throttler = Throttler(revision.name, lambda: self._poke(holder[0]), self._clock)
        unit = RevisionUnit(
            service=revision.service,
            name=revision.name,
            argv=list(artifact.get("argv", [])),
            env=env,
            cwd=root / artifact.get("cwd", "."),
            concurrency=revision.spec.container_concurrency,
            startup_timeout=revision.spec.startup_timeout_seconds,
            request_timeout=revision.spec.timeout_seconds,
            throttler=throttler,
            policy=policy_for(
                self._settings.autoscaler,
                revision.spec.container_concurrency,
                revision.spec.annotations,
            ),
        )
        holder.append(unit)
        self.units[revision.name] = unit
        self._identities[revision.name] = instance_member(
            revision.service, revision.spec.service_account
        )
        self._routes[revision.name] = Route(
            revision.service,
            revision.name,
            throttler,
            revision.spec.timeout_seconds,
            self._guard(revision.service),
        )
        return unit

    def _rebuild_table(self) -> None:
        """Swap in a routing table built from the store; retire revisions left without routes."""
        services: dict[str, ServiceRoutes] = {}
        serving: set[str] = set()
        for record in self._store.services():
            latest = self._store.latest_ready(record.name)
            targets = []
            # A revision that keeps a tag at 0 % stays routed (at its tag's URL) and scales to
            # zero like any idle revision; only revisions left with no route at all retire.
            for target in resolve(record.traffic, latest.name if latest else None):
                if target.revision is None or not self._store.has_revision(target.revision):
                    continue
                revision = self._store.revision(target.revision)
                if revision.status != READY:
                    continue
                try:
                    self._unit(revision)
                except HomerunError as error:  # a secret it reads is gone
                    self._unroutable(revision, str(error))
                    continue
                serving.add(revision.name)
                targets.append(TrafficTarget(revision.name, target.percent, target.tag))
            services[record.name] = ServiceRoutes(record.name, tuple(targets))
        self._table = RoutingTable(self._settings.domain, services)
        for name in [name for name in self.units if name not in serving]:
            unit = self.units.pop(name)
            unit.retired = True
            self._routes.pop(name, None)
            self._background(self._retire(unit))
        self._refresh_access()

    def _unroutable(self, revision: RevisionRecord, reason: str) -> None:
        if revision.name in self._unroutable_logged:
            return
        self._unroutable_logged.add(revision.name)
        self._logs.emit(
            platform_entry(
                revision.service,
                f"Revision {revision.name} cannot run: {reason}",
                severity="ERROR",
                revision=revision.name,
            )
        )

    async def _retire(self, unit: RevisionUnit) -> None:
        # Requests already queued for the revision are served before it drains: a request the
        # router sent here just before the switch must not be dropped. (Bounded by the
        # revision's request timeout; the scaler no longer looks after a retired revision.)
        deadline = self._clock() + unit.request_timeout
        if unit.throttler.queue_length and not unit.active:
            self._supervisor.scale(unit, 1)
        if unit.throttler.queue_length and unit.active:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    unit.throttler.queue_drained(), max(0.0, deadline - self._clock())
                )
        # The old revision's in-flight requests finish (up to its request timeout).
        await asyncio.gather(
            *(
                self._supervisor.stop_instance(unit, instance, drain_timeout=unit.request_timeout)
                for instance in list(unit.instances)
            )
        )

    def _background(self, coroutine: Any) -> None:
        task = asyncio.ensure_future(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _service_summary(self, service: str) -> dict[str, Any]:
        record = self._store.service(service)
        latest = self._store.latest_ready(service)
        latest_created = self._store.latest_created(service)
        routes = self._table.services.get(service)
        traffic = [
            {
                "revision": target.revision,
                "percent": target.percent,
                "tag": target.tag,
                **({"url": self.tag_url(service, target.tag)} if target.tag else {}),
            }
            for target in (routes.traffic if routes else ())
        ]
        return {
            "name": record.name,
            "url": self.url(record.name),
            "ready": bool(traffic),
            "latest_ready_revision": latest.name if latest else None,
            "latest_created_revision": latest_created.name if latest_created else None,
            "traffic": traffic,
            # The traffic block as set, LATEST unresolved (`traffic` is what routes now).
            "traffic_spec": [entry.to_json() for entry in record.traffic],
            "allow_unauthenticated": record.allow_unauthenticated,
            "ingress": record.ingress,
            "invokers": sorted(self._store.members(service)),
            "owner": self.owner,
            "created_at": record.created_at,
            "generation": record.generation,
        }

    def _revision_summary(self, revision: RevisionRecord) -> dict[str, Any]:
        unit = self.units.get(revision.name)
        now = self._clock()
        instances = [
            {
                "name": instance.name,
                "state": instance.state,
                "pid": instance.process.pid,
                "port": instance.port,
                "in_flight": instance.endpoint.in_flight if instance.endpoint else 0,
                "age_seconds": round(time.monotonic() - instance.started_at, 1),
            }
            for instance in (unit.instances if unit else [])
        ]
        artifact = revision.artifact or {}
        digest = self._digest_of(revision)
        resolved = (
            self._resolved(revision.service) if self._store.has_service(revision.service) else []
        )
        summary: dict[str, Any] = {
            "name": revision.name,
            "service": revision.service,
            "status": revision.status,
            "message": revision.message,
            "created_at": revision.created_at,
            "entrypoint": artifact.get("argv"),
            "entrypoint_origin": artifact.get("entrypoint_origin"),
            "concurrency": revision.spec.container_concurrency,
            "timeout_seconds": revision.spec.timeout_seconds,
            "env": revision.spec.env,
            # Names and versions only: a secret's value is never part of a description.
            "secrets": {name: str(ref) for name, ref in revision.spec.secrets.items()},
            "annotations": revision.spec.annotations,
            "image": image_for(revision.service, digest) if digest else None,
            "source": revision.spec.source,
            "percent": served_percent(resolved, revision.name),
            "tags": [
                {"tag": tag, "url": self.tag_url(revision.service, tag)}
                for tag in tags_of(resolved, revision.name)
            ],
            "instances": instances,
            "in_flight": unit.throttler.in_flight if unit else 0,
            "start_mode": (
                dict(zip(("mode", "reason"), self._supervisor.start_mode(unit), strict=True))
                if unit
                else None
            ),
            "queue_length": unit.throttler.queue_length if unit else 0,
        }
        if unit is not None:
            policy = unit.policy
            summary["scaling"] = {
                "min_instances": policy.min_scale,
                "max_instances": policy.max_scale,
                "target_per_instance": policy.target_per_instance,
                "stable_window_seconds": policy.stable_window,
                "overloaded_requests": unit.overloaded_requests,
                "waited_requests": len(unit.throttler.waits),
                "median_wait_ms": _median_ms(unit.throttler.waits),
                "decisions": [
                    {
                        "seconds_ago": round(now - decision.at, 1),
                        "desired": decision.desired,
                        "mode": decision.mode,
                        "reason": decision.reason,
                    }
                    for decision in reversed(unit.decisions)
                ],
            }
        return summary


def _median_ms(seconds: Iterable[float]) -> float | None:
    ordered = sorted(seconds)
    return round(ordered[len(ordered) // 2] * 1000, 1) if ordered else None


def _suffix() -> str:
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(3))


async def _drain(events: asyncio.Queue[Event | None]) -> AsyncIterator[Event]:
    while True:
        event = await events.get()
        if event is None:
            return
        yield event


__all__ = ["ControlPlane", "InvalidSpec"]
