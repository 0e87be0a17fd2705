"""What describe, list and status report, read from the store and the live state."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Iterable
from typing import Any

from homerun.control.advice import Advisor
from homerun.control.environment import effective_entrypoint
from homerun.control.live import LiveRevisions
from homerun.control.resolved import resolved_traffic
from homerun.control.revisions import Revisions
from homerun.control.urls import Urls
from homerun.knative import (
    RevisionView,
    ServiceView,
    image_for,
    ready_condition,
    render_revision,
    render_service,
)
from homerun.model import views
from homerun.model.annotations import ADAPTIVE_CONCURRENCY
from homerun.model.logs import LogEntry
from homerun.model.states import InstanceState
from homerun.observe.logs import LogStore
from homerun.scaling.supervisor import Supervisor
from homerun.spec import RevisionSpec
from homerun.store import RevisionRecord, ServiceRecord, Store
from homerun.traffic import served_percent, tags_of


class Views:
    def __init__(
        self,
        *,
        store: Store,
        logs: LogStore,
        live: LiveRevisions,
        revisions: Revisions,
        supervisor: Supervisor,
        urls: Urls,
        owner: str,
        clock: Callable[[], float],
        router_url: str,
        dashboard_url: str | None,
        advisor: Advisor | None = None,
        container_engine: str | None = None,
        containers: str | None = None,
        sandbox: str | None = None,
    ) -> None:
        self._store = store
        self._logs = logs
        self._live = live
        self._revisions = revisions
        self._supervisor = supervisor
        self._urls = urls
        self._owner = owner
        self._clock = clock
        self._router_url = router_url
        self._dashboard_url = dashboard_url
        self._advisor = advisor
        self._container_engine = container_engine  # "podman 4.3.1"; None: no engine
        self._containers = containers  # how images' instances run (ContainerRuntime.describe)
        self._sandbox = sandbox  # what instances of the process runtime get, or lack

    def status(self) -> views.PlatformStatus:
        return views.PlatformStatus(
            pid=os.getpid(),
            router=self._router_url,
            dashboard=self._dashboard_url,
            services=len(self._store.services()),
            revisions=len(self._store.revisions()),
            instances=self._live.instances(),
            container_engine=self._container_engine,
            containers=self._containers,
            sandbox=self._sandbox,
        )

    def services(self) -> list[views.ServiceSummary]:
        return [self.service(record.name) for record in self._store.services()]

    def describe(self, service: str) -> views.ServiceDescription:
        return views.ServiceDescription(
            **dict(self.service(service)),
            revisions=[self._revision(r) for r in self._store.revisions(service)],
        )

    def revisions(self, service: str | None) -> list[views.RevisionSummary]:
        if service is not None:
            self._store.service(service)  # NotFound for an unknown service
        return [self._revision(revision) for revision in self._store.revisions(service)]

    def revision(self, name: str) -> views.RevisionSummary:
        return self._revision(self._store.revision(name))

    async def logs(self, service: str, limit: int, **filters: str | None) -> list[LogEntry]:
        """Newest entries; filters: revision, min_severity, since, after, trace (see LogStore.read).
        Files are read in a thread: the router's requests go on meanwhile."""
        self._store.service(service)
        self._logs.flush()  # on the loop, which is where entries are added
        return await asyncio.to_thread(
            functools.partial(self._logs.read_written, service, limit=limit, **filters)
        )

    # -- Knative documents --------------------------------------------------------------

    def knative_service(self, service: str) -> dict[str, Any]:
        return render_service(self._service_view(self._store.service(service)))

    def _service_view(self, record: ServiceRecord, *, digests: bool = True) -> ServiceView:
        """The Service as Knative's render takes it; without `digests`, no revision's artifact
        digest (none is needed for its conditions, and an old revision's is hashed once)."""
        tags = {entry.tag for entry in record.traffic if entry.tag}
        return ServiceView(
            name=record.name,
            created_at=record.created_at,
            generation=record.generation,
            labels=record.labels,
            annotations=record.annotations,
            traffic=record.traffic,
            revisions=[
                self._knative_view(r, digest=digests) for r in self._store.revisions(record.name)
            ],
            url=self._urls.service(record.name),
            tag_urls={tag: self._urls.tag(record.name, tag) for tag in tags if tag},
        )

    def knative_revision(self, name: str) -> dict[str, Any]:
        revision = self._store.revision(name)
        view = self._knative_view(revision)
        routed = any(t.revision == name for t in resolved_traffic(self._store, revision.service))
        image = revision.spec.image or (
            image_for(revision.service, view.digest) if view.digest else None
        )
        return render_revision(view, routed, image)

    def _knative_view(self, revision: RevisionRecord, *, digest: bool = True) -> RevisionView:
        return RevisionView(
            name=revision.name,
            service=revision.service,
            spec=revision.spec,
            status=revision.status,
            message=revision.message,
            created_at=revision.created_at,
            ready_at=revision.ready_at,
            digest=self._revisions.digest_of(revision) if digest else None,
        )

    # -- summaries ----------------------------------------------------------------------

    def service(self, service: str) -> views.ServiceSummary:
        record = self._store.service(service)
        latest = self._store.latest_ready(service)
        latest_created = self._store.latest_created(service)
        routes = self._live.table.services.get(service)
        traffic = [
            views.Route(
                revision=target.revision,
                percent=target.percent,
                tag=target.tag,
                url=self._urls.tag(service, target.tag) if target.tag else None,
            )
            for target in (routes.traffic if routes else ())
        ]
        # What `describe --format yaml` says, decided where it is rendered: not ready when the
        # latest revision failed, though an earlier one serves `traffic`.
        readiness = ready_condition(self._service_view(record, digests=False))
        return views.ServiceSummary(
            name=record.name,
            url=self._urls.service(record.name),
            ready=readiness.status == "True",
            readiness=readiness,
            latest_ready_revision=latest.name if latest else None,
            latest_created_revision=latest_created.name if latest_created else None,
            traffic=traffic,
            # The traffic block as set, LATEST unresolved (`traffic` is what routes now).
            traffic_spec=[views.TrafficSpec(**entry.to_json()) for entry in record.traffic],
            allow_unauthenticated=record.allow_unauthenticated,
            ingress=record.ingress,
            invokers=sorted(self._store.members(service)),
            owner=self._owner,
            created_at=record.created_at,
            generation=record.generation,
        )

    def _revision(self, revision: RevisionRecord) -> views.RevisionSummary:
        unit = self._live.units.get(revision.name)
        now = self._clock()
        artifact = revision.artifact
        digest = self._revisions.digest_of(revision)
        resolved = (
            resolved_traffic(self._store, revision.service)
            if self._store.has_service(revision.service)
            else []
        )
        scaling = None
        if unit is not None:
            policy = unit.plan.policy
            scaling = views.Scaling(
                min_instances=policy.min_scale,
                max_instances=policy.max_scale,
                target_per_instance=policy.target_per_instance,
                stable_window_seconds=policy.stable_window,
                overloaded_requests=unit.overloaded_requests,
                waited_requests=len(unit.throttler.waits),
                median_wait_ms=_median_ms(unit.throttler.waits),
                decisions=[
                    views.Decision(
                        seconds_ago=round(now - decision.at, 1),
                        desired=decision.desired,
                        mode=decision.mode,
                        reason=decision.reason,
                    )
                    for decision in reversed(unit.scaling.decisions)
                ],
            )
        entrypoint = effective_entrypoint(artifact, revision.spec) if artifact else None
        start_mode = None
        if unit is not None:
            mode, reason = self._supervisor.start_mode(unit)
            start_mode = views.StartMode(mode=mode, reason=reason)
        return views.RevisionSummary(
            name=revision.name,
            service=revision.service,
            status=revision.status,
            message=revision.message,
            created_at=revision.created_at,
            entrypoint=entrypoint[0] if entrypoint else None,
            entrypoint_origin=entrypoint[1] if entrypoint else None,
            concurrency=revision.spec.container_concurrency,
            adaptive_concurrency=revision.spec.annotations.get(ADAPTIVE_CONCURRENCY) == "auto",
            timeout_seconds=revision.spec.timeout_seconds,
            env=revision.spec.env,
            # Names and versions only: a secret's value is never part of a description.
            secrets={name: str(ref) for name, ref in revision.spec.secrets.items()},
            mounts=mount_summary(revision.spec),
            annotations=revision.spec.annotations,
            image=revision.spec.image or (image_for(revision.service, digest) if digest else None),
            source=revision.spec.source,
            percent=served_percent(resolved, revision.name),
            tags=[
                views.Tag(tag=tag, url=self._urls.tag(revision.service, tag))
                for tag in tags_of(resolved, revision.name)
            ],
            instances=[
                views.InstanceView(
                    name=instance.name,
                    state=InstanceState(instance.state),
                    pid=instance.process.pid,
                    port=instance.port,
                    in_flight=instance.endpoint.in_flight if instance.endpoint else 0,
                    limit=instance.endpoint.capacity
                    if instance.endpoint and instance.endpoint.limiter
                    else None,
                    age_seconds=round(now - instance.started_at, 1),
                )
                for instance in (unit.instances if unit else [])
            ],
            in_flight=unit.throttler.in_flight if unit else 0,
            start_mode=start_mode,
            queue_length=unit.throttler.queue_length if unit else 0,
            memory_limit_exceeded=unit.memory_exceeded if unit else 0,
            scaling=scaling,
            **self._advice_fields(revision),
        )

    def _advice_fields(self, revision: RevisionRecord) -> dict[str, Any]:
        """The capacity, measurements and warnings of the advisor, for describe."""
        if self._advisor is None:
            return {}
        advice = self._advisor.for_revision(revision)
        return {
            "capacity": advice.capacity,
            "inspection": advice.inspection,
            "ramp": advice.ramp,
            "cost": advice.cost,
            "warnings": [
                finding.message for finding in advice.findings if finding.severity == "warning"
            ],
        }


def _median_ms(seconds: Iterable[float]) -> float | None:
    ordered = sorted(seconds)
    return round(ordered[len(ordered) // 2] * 1000, 1) if ordered else None


def mount_summary(spec: RevisionSpec) -> dict[str, str]:
    """mount path -> what is mounted there, for describe (names and versions, never values)."""
    mounts = {path: f"secret {ref} (read-only file)" for path, ref in spec.secret_files.items()}
    for path, name in spec.volume_mounts.items():
        size = spec.volumes[name].size_limit
        mounts[path] = f"in-memory volume {name}" + (f", at most {size}" if size else "")
    return dict(sorted(mounts.items()))
