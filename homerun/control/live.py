"""The live routing state, and its one owner: a unit and a route per running revision, the
routing table the router reads, and the retirement of revisions left without a route."""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Callable, Mapping
from pathlib import Path

from homerun.access.iam import instance_member
from homerun.config import Paths, Settings
from homerun.control.access import Guards
from homerun.control.environment import container_spec, instance_cwd, instance_env
from homerun.control.secrets import SecretValues, files_reading_latest, reads_latest
from homerun.control.tasks import Tasks
from homerun.control.users import check_privileges, instance_user
from homerun.errors import HomerunError, InvalidSpec, NotFound
from homerun.model.annotations import ADAPTIVE_CONCURRENCY
from homerun.model.artifact import ArtifactRecord
from homerun.model.cost import Usage, gib, vcpus
from homerun.model.limits import limits
from homerun.model.run_as import ProcessUsers
from homerun.model.run_as import process_users as process_users_of
from homerun.model.states import RevisionStatus
from homerun.model.volumes import NO_MOUNTS, Mounts, sandbox_needed
from homerun.observe.logs import LogStore, platform_entry
from homerun.routing.hosts import hosts_text, router_address, service_hosts
from homerun.routing.table import (
    RoutingTable,
    SelectionMemo,
    ServiceRoutes,
    StratifiedRolls,
    TrafficTarget,
)
from homerun.routing.throttler import Throttler
from homerun.routing.types import Address, Route, RouteError
from homerun.runtime.inspection import Inspector
from homerun.scaling.policy import policy_for
from homerun.scaling.supervisor import Supervisor
from homerun.scaling.unit import RevisionPlan, RevisionUnit
from homerun.spec import RevisionSpec
from homerun.store import RevisionRecord, Store
from homerun.traffic import resolve


class LiveRevisions:
    """Owns `units` and `routes` (per running revision) and the routing table; nothing else
    writes them. `resolve` is the data plane's one question."""

    def __init__(
        self,
        *,
        settings: Settings,
        paths: Paths,
        store: Store,
        logs: LogStore,
        supervisor: Supervisor,
        guards: Guards,
        secrets: SecretValues,
        tasks: Tasks,
        poke: Callable[[RevisionUnit], None],
        clock: Callable[[], float],
        host_env: Mapping[str, str],
        metadata_address: Address | None = None,
        inspector: Inspector | None = None,
        rng: random.Random | None = None,
        domains: Callable[[], Mapping[str, str]] = dict,
        mounts_refused: str | None = None,
        process_users: ProcessUsers | None = None,
    ) -> None:
        # Collaborators
        self._settings = settings
        self._paths = paths
        self._store = store
        self._logs = logs
        self._supervisor = supervisor
        self._guards = guards
        self._secrets = secrets
        self._tasks = tasks
        self._poke = poke
        self._clock = clock
        self._host_env = host_env
        self._metadata_address = metadata_address
        self._inspector = inspector
        # Why process instances cannot have secret files or volumes (no sandbox), or None.
        self._mounts_refused = mounts_refused
        self._rolls = StratifiedRolls(rng or random.Random())
        self._domains = domains  # the domain mappings: domain -> service
        # What the process runtime does with a securityContext user (the daemon's sandbox);
        # by default, none: it runs instances as the daemon's user.
        self._process_users = process_users or process_users_of(
            sandboxed=False, privileged=os.geteuid() == 0
        )
        # Per running revision
        self.units: dict[str, RevisionUnit] = {}
        self._routes: dict[str, Route] = {}
        self._identities: dict[str, str] = {}  # revision -> the member its instances are
        # The routing table, swapped whole
        self.table = RoutingTable(settings.domain)
        self._selections = SelectionMemo()
        self._unroutable_logged: set[str] = set()
        self._hosts_written = ""  # the hosts file's text as last written

    # -- the data plane's question ------------------------------------------------------

    def resolve(self, host: str) -> Route | RouteError:
        selection = self._selections.select(self.table, host, self._rolls)
        if selection is None:
            return RouteError(404, f"no service answers at {host}")
        if selection.revision is None:
            return RouteError(503, f"service {selection.service} has no ready revision")
        route = self._routes.get(selection.revision)
        if route is None:
            return RouteError(503, f"revision {selection.revision} is not running")
        return route

    @property
    def hosts_file(self) -> Path:
        """Every service and tag host -> the router, in /etc/hosts form; rewritten (renamed
        over) whenever they change. A sandbox can bind-mount its folder and link /etc/hosts."""
        return self._paths.hosts

    # -- units ----------------------------------------------------------------------------

    def usage(self, revision: RevisionRecord) -> Usage | None:
        """What the revision's instances did while it ran here (None: it does not run now),
        in the units Cloud Run bills."""
        unit = self.units.get(revision.name)
        if unit is None:
            return None
        instance_seconds, busy_seconds, requests = unit.supervised.usage(self._clock())
        return Usage(
            instance_seconds=instance_seconds,
            busy_seconds=busy_seconds,
            requests=requests,
            vcpus=vcpus(revision.spec.cpu),
            gib=gib(revision.spec.memory),
        )

    def unit(self, revision: RevisionRecord) -> RevisionUnit:
        """The revision's unit, made with its route on first use (HomerunError when a secret
        it reads is gone)."""
        unit = self.units.get(revision.name)
        if unit is not None:
            return unit
        artifact = revision.artifact
        env = instance_env(
            service=revision.service,
            revision=revision.name,
            spec=revision.spec,
            artifact=artifact,
            secrets=self._secrets.env(revision.spec),
            # A container has its image's PATH, HOME...: none of the host's.
            host_env={} if artifact and artifact.engine_image else self._host_env,
            metadata_address=self._metadata_address,
            hosts_file=self._paths.hosts,
            inspector=self._inspector,
        )
        container = artifact is not None and artifact.engine_image is not None
        user = instance_user(revision.spec, container=container, processes=self._process_users)
        check_privileges(revision.spec, container=container, processes=self._process_users)
        holder: list[RevisionUnit] = []
        throttler = Throttler(
            revision.name,
            lambda: self._poke(holder[0]),
            self._clock,
            http2=revision.spec.use_http2,
        )
        plan = RevisionPlan(
            service=revision.service,
            name=revision.name,
            argv=list(artifact.argv) if artifact else [],
            env=env,
            cwd=instance_cwd(
                self._paths.revisions / revision.name, artifact, revision.spec.working_dir
            ),
            concurrency=revision.spec.container_concurrency,
            adaptive_concurrency=revision.spec.annotations.get(ADAPTIVE_CONCURRENCY) == "auto",
            startup_timeout=revision.spec.startup_timeout_seconds,
            request_timeout=revision.spec.timeout_seconds,
            startup_probe=revision.spec.startup_probe,
            readiness_probe=revision.spec.readiness_probe,
            liveness_probe=revision.spec.liveness_probe,
            container_port=revision.spec.container_port,
            limits=limits(revision.spec.cpu, revision.spec.memory),
            policy=policy_for(
                self._settings.autoscaler,
                revision.spec.container_concurrency,
                revision.spec.annotations,
            ),
            container=container_spec(revision.spec, artifact, user),
            mounts=self._mounts(revision.spec, artifact),
            user=None if container else user,
        )
        # A revision whose deploy runs (starting) is its deploy's until Supervisor.confirm();
        # one already ready (the daemon restarting, a tag on an older revision) serves at once.
        unit = RevisionUnit(plan, throttler, deploying=revision.status == RevisionStatus.STARTING)
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
            self._guards.guard(revision.service),
        )
        return unit

    def _mounts(self, spec: RevisionSpec, artifact: ArtifactRecord | None) -> Mounts:
        """The revision's secret files (read now) and volumes; InvalidSpec when its instances
        are processes and this daemon has no sandbox to mount them in."""
        if not spec.mounts_anything:
            return NO_MOUNTS
        container = artifact is not None and artifact.engine_image is not None
        if not container and self._mounts_refused is not None:
            raise InvalidSpec(sandbox_needed(self._mounts_refused))
        return self._secrets.mounts(spec)

    def instances(self) -> int:
        return sum(len(unit.instances) for unit in self.units.values())

    def instance_members(self) -> dict[int, str]:
        """pid -> member of every running instance (the identity it calls other services as)."""
        members = {}
        for unit in self.units.values():
            member = self._identities.get(unit.name) or instance_member(unit.service, None)
            for instance in unit.instances:
                members[instance.process.pid] = member
        return members

    def secret_changed(self, secret: str, value: str) -> None:
        """A new version of `secret`: instances started from now on read it as `latest`."""
        for unit in self.units.values():
            try:
                spec = self._store.revision(unit.name).spec
            except NotFound:
                continue
            changes = dict.fromkeys(reads_latest(spec, secret), value)
            if changes:
                unit.plan = unit.plan.with_env(changes)
            files = dict.fromkeys(files_reading_latest(spec, secret), value.encode())
            if files:
                unit.plan = unit.plan.with_secret_files(files)

    # -- the routing table ------------------------------------------------------------------

    def rebuild(self) -> None:
        """Swap in a routing table built from the store; retire revisions left without a route.

        A revision whose deploy still runs (starting) has no route yet and is never retired
        here: only its deploy's outcome decides what happens to it."""
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
                if revision.status != RevisionStatus.READY:
                    continue
                try:
                    self.unit(revision)
                except HomerunError as error:  # a secret it reads is gone
                    self._unroutable(revision, str(error))
                    continue
                serving.add(revision.name)
                targets.append(TrafficTarget(revision.name, target.percent, target.tag))
            services[record.name] = ServiceRoutes(record.name, tuple(targets))
        self.table = RoutingTable(self._settings.domain, services, dict(self._domains()))
        self._write_hosts()
        for name in [name for name in self.units if name not in serving]:
            if self._deploying(name):
                continue
            unit = self.units.pop(name)
            self._supervisor.retire(unit)
            self._routes.pop(name, None)
            self._tasks.spawn(self._retire(unit))
        self.refresh_access()

    def _write_hosts(self) -> None:
        """Rewrite the hosts file when its hosts changed: written beside it, then renamed over
        it, so that a reader never sees half of it."""
        address = router_address(self._settings.listen)
        text = hosts_text(service_hosts(self.table), address, f"{address}:{self._settings.port}")
        if text == self._hosts_written:
            return
        path = self._paths.hosts
        partial = path.with_name(path.name + ".partial")
        try:
            path.parent.mkdir(exist_ok=True)
            path.parent.chmod(0o755)  # read by sandboxed instances' own users, whatever the umask
            partial.write_text(text, encoding="utf-8")
            partial.chmod(0o644)
            os.replace(partial, path)
        except OSError as error:  # the routing table is in force all the same
            message = (
                f"Cannot write {path}: {error.strerror or error}; service hosts may not "
                "resolve in instances"
            )
            self._logs.emit(platform_entry("homerun", message, severity="WARNING"))
            return
        self._hosts_written = text

    def refresh_access(self) -> None:
        """Rebuild every service's guard and hand it to its routes (after an IAM, ingress or
        tag change); requests already admitted are not checked again."""
        self._guards.clear()
        for name, route in list(self._routes.items()):
            guard = self._guards.guard(route.service)
            if route.guard is not guard:
                self._routes[name] = route._replace(guard=guard)

    # -- stopping -------------------------------------------------------------------------

    def forget(self, name: str) -> None:
        """Drop a revision's unit and route; its instances stop in the background."""
        unit = self.units.pop(name, None)
        self._routes.pop(name, None)
        if unit is not None:
            self._supervisor.retire(unit)  # at once: stop_revision begins on the next turn
            self._tasks.spawn(self._supervisor.stop_revision(unit))

    async def stop(self, name: str) -> None:
        """Drop a revision's unit and route, and wait until its instances are gone."""
        unit = self.units.pop(name, None)
        self._routes.pop(name, None)
        if unit is not None:
            await self._supervisor.stop_revision(unit)  # retires it first

    async def close(self) -> None:
        await asyncio.gather(
            *(self._supervisor.stop_revision(unit) for unit in self.units.values())
        )

    def _deploying(self, name: str) -> bool:
        return (
            self._store.has_revision(name)
            and self._store.revision(name).status == RevisionStatus.STARTING
        )

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
        deadline = self._clock() + unit.plan.request_timeout
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
                self._supervisor.stop_instance(
                    unit, instance, drain_timeout=unit.plan.request_timeout
                )
                for instance in list(unit.instances)
            )
        )
