"""What the dashboard shows, in one JSON document (see homerun/admin/dashboard.py)."""

from __future__ import annotations

import time
from typing import Any, Protocol

from homerun.model.views import (
    ExecutionSummary,
    JobSummary,
    RevisionSummary,
    ServiceDescription,
    ServiceSummary,
    WorkerPoolSummary,
)
from homerun.observe.logs import LogStore
from homerun.observe.processes import ProcessSampler
from homerun.observe.telemetry import Telemetry

WINDOWS = (300, 3600)
MAX_REVISIONS = 20
MAX_EXECUTIONS = 10  # per job: the newest
# What the page shows of an execution: how it went, its tasks counted by state.
_EXECUTION_FIELDS = {
    "name", "status", "message", "created_at", "completed_at", "task_count", "pending",
    "running", "succeeded", "failed", "cancelled", "retries",
}  # fmt: skip


class ServiceSource(Protocol):
    def services(self) -> list[ServiceSummary]: ...

    def describe(self, service: str) -> ServiceDescription: ...


class JobSource(Protocol):
    def jobs(self) -> list[JobSummary]: ...

    def executions(
        self, job: str | None = None, limit: int | None = None
    ) -> list[ExecutionSummary]: ...


class PoolSource(Protocol):
    def pools(self) -> list[WorkerPoolSummary]: ...


def overview(
    control: ServiceSource,
    telemetry: Telemetry,
    logs: LogStore,
    processes: ProcessSampler,
    window: int,
    jobs: JobSource | None = None,
    pools: PoolSource | None = None,
) -> dict[str, Any]:
    services = []
    for summary in control.services():
        name = summary.name
        described = control.describe(name)
        revisions: list[dict[str, Any]] = []
        instances: list[dict[str, Any]] = []
        decisions: list[dict[str, Any]] = []
        for revision in described.revisions:
            states = {"starting": 0, "ready": 0, "draining": 0}
            for instance in revision.instances:
                states[instance.state] = states.get(instance.state, 0) + 1
                usage = processes.usage(instance.pid)
                rows = telemetry.rows.get(name)
                cpu = rows[-1].instance_cpu_percent.get(instance.name) if rows else None
                instances.append(
                    {
                        "name": instance.name,
                        "revision": revision.name,
                        "state": instance.state,
                        "pid": instance.pid,
                        "in_flight": instance.in_flight,
                        "capacity": revision.concurrency,
                        "cpu_percent": cpu,
                        "rss_bytes": usage.rss_bytes if usage else None,
                    }
                )
            revision_decisions = [
                decision.model_dump()
                for decision in (revision.scaling.decisions if revision.scaling else [])
            ]
            for decision in revision_decisions:
                decisions.append(dict(decision, revision=revision.name))
            if len(revisions) >= MAX_REVISIONS and not revision.instances:
                continue  # older revisions that run nothing: `homerun revisions list` has them
            revisions.append(
                {
                    "name": revision.name,
                    "status": revision.status,
                    "concurrency": revision.concurrency,
                    "instances": states,
                    "in_flight": revision.in_flight,
                    "queue_length": revision.queue_length,
                    "last_decision": revision_decisions[0] if revision_decisions else None,
                    "inside": _inside(revision),
                }
            )
        decisions.sort(key=lambda decision: decision["seconds_ago"])
        services.append(
            {
                "name": name,
                "url": summary.url,
                "ready": summary.ready,
                # Its Knative Ready condition: not ready after a failed deploy, though an
                # earlier revision serves `traffic` (RevisionFailed, and why).
                "readiness": summary.readiness.model_dump(),
                "traffic": [route.model_dump() for route in summary.traffic],
                "revisions": revisions,
                "instances": instances,
                "series": telemetry.series(name, window),
                "decisions": decisions[:20],
                "logs": logs.recent(name, 50),
            }
        )
    return {
        "generated_at": round(time.time(), 3),
        "window": window,
        "services": services,
        "jobs": _jobs(jobs) if jobs is not None else [],
        "worker_pools": _pools(pools) if pools is not None else [],
    }


def _inside(revision: RevisionSummary) -> dict[str, Any] | None:
    """What the runtime inspector measured in the revision's instances, for the dashboard's
    "Inside the instances" panel: capacity, loop lag, thread pool, blocking calls, warnings."""
    inspection = revision.inspection
    if (
        revision.capacity is None
        and inspection is None
        and not revision.warnings
        and revision.ramp is None
        and revision.cost is None
    ):
        return None
    return {
        "capacity": revision.capacity.model_dump() if revision.capacity else None,
        "loop_lag_ms_mean": inspection.loop_lag_ms_mean if inspection else None,
        "loop_lag_ms_max": inspection.loop_lag_ms_max if inspection else None,
        "pool_total": inspection.pool_total if inspection else None,
        "pool_peak_borrowed": inspection.pool_peak_borrowed if inspection else 0,
        "pool_peak_waiting": inspection.pool_peak_waiting if inspection else 0,
        "blocking": [
            place.model_dump(exclude={"stack"})
            for place in (inspection.blocking if inspection else [])
        ][:5],
        "warnings": revision.warnings,
        "ramp": revision.ramp.model_dump() if revision.ramp else None,
        "cost": revision.cost.model_dump() if revision.cost else None,
    }


def _jobs(source: JobSource) -> list[dict[str, Any]]:
    """Each job with its settings and newest executions (their task counts by state)."""
    listed = []
    for job in source.jobs():
        executions = source.executions(job.name, MAX_EXECUTIONS)
        listed.append(
            {
                "name": job.name,
                "task_count": job.task_count,
                "parallelism": job.parallelism,
                "max_retries": job.max_retries,
                "task_timeout_seconds": job.task_timeout_seconds,
                "entrypoint": job.entrypoint,
                "schedule": job.schedule,
                "time_zone": job.time_zone,
                "next_run_at": job.next_run_at,
                "executions": [
                    execution.model_dump(include=_EXECUTION_FIELDS) for execution in executions
                ],
            }
        )
    return listed


def _pools(source: PoolSource) -> list[dict[str, Any]]:
    """Each worker pool: its revision, instances running of its count, and restarts."""
    return [
        {
            "name": pool.name,
            "revision": pool.revision,
            "instances": pool.instances,
            "running": pool.running,
            "restarts": sum(slot.restarts for slot in pool.slots),
            "entrypoint": pool.entrypoint,
            "last_exit": next((slot.last_exit for slot in pool.slots if slot.last_exit), None),
        }
        for pool in source.pools()
    ]
