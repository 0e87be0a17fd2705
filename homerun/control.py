"""The control plane: deploys, the live routing table, and what describe and list report."""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import shutil
import string
import time
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

from homerun.build import Artifact
from homerun.config import Paths, Settings
from homerun.errors import HomerunError, InvalidSpec
from homerun.observe.logs import LogStore, platform_entry
from homerun.routing.proxy import Route, RouteError
from homerun.routing.table import RoutingTable, ServiceRoutes, TrafficTarget, select
from homerun.routing.throttler import Throttler
from homerun.scaling.policy import policy_for
from homerun.scaling.supervisor import RevisionUnit, StartFailed, Supervisor
from homerun.spec import DeployRequest, validate_service_name
from homerun.store import FAILED, READY, RevisionRecord, Store, TrafficEntry

# build(source, dest, command=, args=, user_env=, venv_cache=, output=) -> Artifact
BuildFunction = Callable[..., Artifact]
Event = dict[str, Any]

# The environment an instance starts from, as a container starts from its image's.
_INHERITED_ENV = ("PATH", "HOME", "LANG", "LC_ALL", "TZ", "TMPDIR", "SSL_CERT_FILE")


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
    ) -> None:
        self._settings = settings
        self._paths = paths
        self._store = store
        self._logs = logs
        self._supervisor = supervisor
        self._build = build
        self._poke = poke
        self._clock = clock
        self._roll = random.random
        # Live state, rebuilt from the store at startup.
        self.units: dict[str, RevisionUnit] = {}
        self._routes: dict[str, Route] = {}
        self._table = RoutingTable(settings.domain)
        self._deploy_locks: dict[str, asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.dashboard_url: str | None = None  # set by the daemon once it listens

    # -- the data plane's question ------------------------------------------------------

    def resolve(self, host: str) -> Route | RouteError:
        selection = select(self._table, host, self._roll())
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
        events: asyncio.Queue[Event | None] = asyncio.Queue()
        task = asyncio.ensure_future(self._deploy(request, events.put_nowait))
        self._tasks.add(task)

        def finished(done: asyncio.Task[None]) -> None:
            self._tasks.discard(done)
            events.put_nowait(None)

        task.add_done_callback(finished)
        return _drain(events)

    async def _deploy(self, request: DeployRequest, emit: Callable[[Event], None]) -> None:
        try:
            service = validate_service_name(request.service)
            request.spec.check()
            lock = self._deploy_locks.setdefault(service, asyncio.Lock())
            async with lock:
                await self._deploy_locked(service, request, emit)
        except HomerunError as error:
            emit({"event": "error", "message": str(error)})
        except Exception as error:  # a bug: report it rather than leave the client hanging
            emit({"event": "error", "message": f"internal error: {error!r}"})
            raise

    async def _deploy_locked(
        self, service: str, request: DeployRequest, emit: Callable[[Event], None]
    ) -> None:
        spec = request.spec
        source = Path(spec.source)
        seq = self._store.next_seq(service)
        name = f"{service}-{seq:05d}-{_suffix()}"
        dest = self._paths.revisions / name
        loop = asyncio.get_running_loop()

        def output(line: str) -> None:
            loop.call_soon_threadsafe(emit, {"event": "build", "line": line})

        emit({"event": "phase", "message": f"Building revision {name} from {source}"})
        try:
            artifact = await asyncio.to_thread(
                self._build,
                source,
                dest,
                command=spec.command,
                args=spec.args,
                user_env=spec.env,
                venv_cache=self._paths.venv_cache,
                output=output,
            )
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise
        stored_artifact = _artifact_record(artifact)
        revision = self._store.create_revision(
            service, name, seq, spec, stored_artifact, request.allow_unauthenticated
        )
        self._logs.emit(
            platform_entry(
                service,
                f"Revision {name} built; entrypoint from "
                f"{artifact.entrypoint_origin}: {' '.join(artifact.argv)}",
                revision=name,
            )
        )
        emit(
            {
                "event": "phase",
                "message": f"Entrypoint ({artifact.entrypoint_origin}): {' '.join(artifact.argv)}",
            }
        )
        emit({"event": "phase", "message": f"Starting revision {name}"})
        unit = self._unit(revision)
        try:
            instance = await self._supervisor.start_instance(unit)
            await self._supervisor.confirm(unit, instance, self._settings.deploy_settle_seconds)
        except StartFailed as failure:
            unit.retired = True
            self.units.pop(name, None)
            self._routes.pop(name, None)
            await self._supervisor.stop_revision(unit)
            self._store.set_revision_status(name, FAILED, failure.detail())
            self._logs.emit(
                platform_entry(
                    service,
                    f"Revision {name} failed: {failure.message}",
                    severity="ERROR",
                    revision=name,
                )
            )
            previous = self._store.latest_ready(service)
            keeps = f"; {previous.name} keeps serving" if previous else ""
            raise HomerunError(
                f"revision {name} is not ready: {failure.detail()}\n"
                f"Traffic was not moved{keeps}. Fix the app and deploy again "
                f"(`homerun logs read {service}` shows its full log)."
            ) from None
        self._store.set_revision_status(name, READY)
        self._store.set_traffic(service, [TrafficEntry(percent=100, latest=True)])
        self._rebuild_table()
        startup_ms = ((instance.ready_at or 0) - instance.started_at) * 1000
        self._logs.emit(
            platform_entry(
                service, f"Revision {name} is ready and serves 100% of traffic", revision=name
            )
        )
        emit(
            {
                "event": "done",
                "service": service,
                "revision": name,
                "url": self.url(service),
                "startup_ms": round(startup_ms),
            }
        )

    # -- queries and other commands ---------------------------------------------------------

    def url(self, service: str) -> str:
        port = self._settings.port
        suffix = "" if port == 80 else f":{port}"
        return f"http://{service}.{self._settings.domain}{suffix}"

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
        env.update(
            K_SERVICE=revision.service,
            K_REVISION=revision.name,
            K_CONFIGURATION=revision.service,
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
        self._routes[revision.name] = Route(
            revision.service, revision.name, throttler, revision.spec.timeout_seconds
        )
        return unit

    def _rebuild_table(self) -> None:
        """Swap in a routing table built from the store; retire revisions left without routes."""
        services: dict[str, ServiceRoutes] = {}
        serving: set[str] = set()
        for record in self._store.services():
            latest = self._store.latest_ready(record.name)
            targets = []
            for entry in record.traffic:
                revision_name = latest.name if entry.latest and latest else entry.revision
                if revision_name is None:
                    continue
                revision = self._store.revision(revision_name)
                if revision.status != READY:
                    continue
                self._unit(revision)
                serving.add(revision_name)
                targets.append(TrafficTarget(revision_name, entry.percent, entry.tag))
            services[record.name] = ServiceRoutes(record.name, tuple(targets))
        self._table = RoutingTable(self._settings.domain, services)
        for name in [name for name in self.units if name not in serving]:
            unit = self.units.pop(name)
            unit.retired = True
            self._routes.pop(name, None)
            self._background(self._retire(unit))

    async def _retire(self, unit: RevisionUnit) -> None:
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
        routes = self._table.services.get(service)
        traffic = [
            {"revision": target.revision, "percent": target.percent, "tag": target.tag}
            for target in (routes.traffic if routes else ())
        ]
        return {
            "name": record.name,
            "url": self.url(record.name),
            "ready": bool(traffic),
            "latest_ready_revision": latest.name if latest else None,
            "traffic": traffic,
            "allow_unauthenticated": record.allow_unauthenticated,
            "created_at": record.created_at,
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
            "annotations": revision.spec.annotations,
            "instances": instances,
            "in_flight": unit.throttler.in_flight if unit else 0,
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


def _artifact_record(artifact: Artifact) -> dict[str, Any]:
    return {
        "argv": artifact.argv,
        "env": artifact.env,
        "cwd": str(artifact.cwd.relative_to(artifact.root)),
        "venv": str(artifact.venv) if artifact.venv else None,
        "entrypoint_origin": artifact.entrypoint_origin,
        "server": artifact.server,
    }


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
