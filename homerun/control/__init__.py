"""The control plane: deploys, traffic, revisions, access and secrets over the store, and the
live routing state the router reads. One module per concept; daemon.py wires them.

    live.py       LiveRevisions: units, routes and the routing table (their one owner)
    plan.py       pure: what a deploy or `services replace` will do
    deploys.py    Deploys: applies a plan (artifact, record, first instance, traffic)
    traffic.py    Traffic: `services update-traffic`, and what follows a traffic change
    revisions.py  Revisions: deletion, retention, artifacts and virtualenvs on disk
    access.py     Guards (the router's per-service check) and Iam (bindings, tokens)
    secrets.py    SecretValues (what revisions read) and Secrets (`homerun secrets`)
    views.py      Views: describe, list, status, Knative documents
    advice.py     Advisor: `services advise` (the runtime inspector's measurements, advised on)
    ramp.py       Ramp: `services advise --ramp`, a bounded load on a private instance
    images.py     Images: `builds submit|list`, `images list|delete` (the local image store)
    exports.py    Exports: `services export` (the serving revision as a Knative Service)
    jobs.py       Jobs: `jobs create|deploy|update|delete` (plan in job_plan.py); its
                  executions (executions.py) run tasks as task_decision.py decides
    worker_pools.py  WorkerPools: instances with no port kept at a count (pool_decision.py)
    domain_mappings.py  DomainMappings: a user's domain routed to a service
    scheduler.py  Scheduler: Cloud Scheduler's HTTP jobs (a URL called on a cron schedule)
"""

from __future__ import annotations

from dataclasses import dataclass

from homerun.access.tokens import TokenAuthority
from homerun.control.access import Iam
from homerun.control.advice import Advisor
from homerun.control.deploys import Deploys
from homerun.control.domain_mappings import DomainMappings
from homerun.control.exports import Exports
from homerun.control.images import Images
from homerun.control.jobs import Jobs
from homerun.control.live import LiveRevisions
from homerun.control.ramp import Ramp
from homerun.control.revisions import Revisions
from homerun.control.scheduler import Scheduler
from homerun.control.secrets import Secrets
from homerun.control.tasks import Tasks
from homerun.control.traffic import Traffic
from homerun.control.views import Views
from homerun.control.worker_pools import WorkerPools
from homerun.observe.logs import LogStore, platform_entry
from homerun.store import Store


@dataclass(frozen=True)
class ControlPlane:
    """The parts the admin API calls, and the control plane's startup and shutdown."""

    authority: TokenAuthority  # signs and checks ID tokens
    store: Store
    logs: LogStore
    tasks: Tasks
    live: LiveRevisions
    revisions: Revisions
    traffic: Traffic
    deploys: Deploys
    iam: Iam
    secrets: Secrets
    views: Views
    jobs: Jobs
    advisor: Advisor
    worker_pools: WorkerPools
    ramp: Ramp
    images: Images
    domain_mappings: DomainMappings
    exports: Exports
    scheduler: Scheduler

    async def restore(self) -> None:
        """After a (re)start: route every service to its ready revisions and start them."""
        failed = self.store.fail_unfinished_revisions(
            "the daemon stopped before this revision became ready"
        )
        for name in failed:
            revision = self.store.revision(name)
            self.logs.emit(
                platform_entry(
                    revision.service,
                    f"Revision {name} marked failed: the daemon stopped during its deploy",
                    severity="ERROR",
                    revision=name,
                )
            )
        self.live.rebuild()
        self.revisions.empty_trash()
        for record in self.store.services():
            self.revisions.collect_garbage(record.name)
        self.images.discard_unfinished()
        self.revisions.collect_venvs()
        self.jobs.restore()
        self.tasks.spawn(self.revisions.fill_digests())
        self.worker_pools.restore()
        self.scheduler.start()

    def members(self) -> dict[int, str]:
        """pid -> member (the identity it calls with) of every running instance, job task and
        worker pool instance: the metadata server answers them, the router knows them."""
        return {
            **self.live.instance_members(),
            **self.jobs.executions.members(),
            **self.worker_pools.members(),
        }

    async def close(self) -> None:
        await self.jobs.executions.close()  # their tasks stop; executions resume next start
        await self.worker_pools.close()  # their instances stop; pools start again next start
        await self.tasks.close()
        await self.live.close()

    def close_stores(self) -> None:
        """Once the admin API has stopped answering. With every connection to the database
        closed, SQLite folds its write-ahead log into the file and removes it: once homerun is
        down, the file alone is the store."""
        self.worker_pools.close_store()
        self.scheduler.close_store()
        self.domain_mappings.close()


__all__ = ["ControlPlane"]
