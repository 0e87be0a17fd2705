"""The control plane built from its parts (control/), each given its collaborators: nothing is
set on a part after it is made."""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Callable, Mapping

from homerun.access.iam import user_member
from homerun.access.project import Project
from homerun.access.tokens import SigningKey, TokenAuthority
from homerun.build.images import ImageStore
from homerun.config import Paths, Settings
from homerun.control import ControlPlane
from homerun.control.access import Guards, Iam
from homerun.control.advice import Advisor
from homerun.control.deploys import BuildFunction, Deploys
from homerun.control.domain_mappings import DomainMappings
from homerun.control.executions import Executions, NoRuntime
from homerun.control.exports import Exports
from homerun.control.images import Images
from homerun.control.job_artifacts import JobArtifacts
from homerun.control.job_logs import JobLogs
from homerun.control.job_views import JobViews
from homerun.control.jobs import Jobs
from homerun.control.live import LiveRevisions
from homerun.control.ramp import Ramp
from homerun.control.resolved import routed_revisions
from homerun.control.revisions import Revisions
from homerun.control.scheduler import Call, Calls, Scheduler
from homerun.control.schedules import Schedules
from homerun.control.secrets import Secrets, SecretValues
from homerun.control.tasks import Tasks
from homerun.control.traffic import Traffic
from homerun.control.urls import Urls
from homerun.control.views import Views
from homerun.control.worker_pools import WorkerPools
from homerun.mapping_store import MappingStore
from homerun.model.engine import Engine
from homerun.model.run_as import ProcessUsers
from homerun.observe.logs import LogStore
from homerun.pool_store import PoolStore
from homerun.routing.types import Address
from homerun.runtime import Runtime
from homerun.runtime.inspection import Inspector
from homerun.runtime.process import process_start_ticks
from homerun.scaling.supervisor import InstanceRegistry, Supervisor
from homerun.scaling.unit import RevisionUnit
from homerun.scheduler_store import SchedulerStore
from homerun.secret_store import SecretStore
from homerun.store import Store


def control_plane(
    *,
    settings: Settings,
    paths: Paths,
    store: Store,
    logs: LogStore,
    supervisor: Supervisor,
    build: BuildFunction,
    poke: Callable[[RevisionUnit], None],
    clock: Callable[[], float],
    signing_key: SigningKey,
    metadata_address: Address | None,
    dashboard_url: str | None,
    host_env: Mapping[str, str] = os.environ,
    progress_seconds: float = 1.0,
    runtime: Runtime | None = None,
    task_registry: InstanceRegistry | None = None,
    wall_clock: Callable[[], float] = time.time,
    engine: Engine | None = None,
    release_images: Callable[[set[str]], object] | None = None,
    containers: str | None = None,
    sandbox: str | None = None,
    mounts_refused: str | None = None,
    scheduler_call: Call | None = None,
    process_users: ProcessUsers | None = None,
) -> ControlPlane:
    """The control plane's parts, each given what it works with. `runtime` (the supervisor's)
    runs jobs' tasks; their pids go to `task_registry` (by default the store's instances, which
    a restarted daemon kills if a killed one left them)."""
    urls = Urls(settings.domain, settings.port)
    # ID tokens: issued by this platform (its URL), which is also the audience of tokens
    # good for any of its services (`homerun auth print-identity-token` without
    # --audiences).
    authority = TokenAuthority(signing_key, urls.platform, project=Project(settings.project))
    # The OS user running the daemon owns the platform and may invoke every service, as a
    # project's owner may on Cloud Run.
    guards = Guards(store, authority, urls, owner=user_member(getpass.getuser()))
    tasks = Tasks()
    secret_store = SecretStore(paths.secrets)
    secret_values = SecretValues(secret_store)
    inspector = (
        Inspector(paths.inspections, settings.inspector_block_ms) if settings.inspector else None
    )
    mapping_store = MappingStore(paths.database)
    live = LiveRevisions(
        settings=settings,
        paths=paths,
        store=store,
        logs=logs,
        supervisor=supervisor,
        guards=guards,
        secrets=secret_values,
        tasks=tasks,
        poke=poke,
        clock=clock,
        host_env=host_env,
        metadata_address=metadata_address,
        inspector=inspector,
        domains=mapping_store.routes,
        mounts_refused=mounts_refused,
        process_users=process_users,
    )
    advisor = Advisor(
        store=store,
        folder=inspector.folder if inspector else None,
        prices=settings.prices,
        usage=live.usage,
    )
    images = ImageStore(paths.images, clock=wall_clock)
    job_artifacts = JobArtifacts(paths, store, tasks)
    revisions = Revisions(
        paths=paths,
        store=store,
        logs=logs,
        live=live,
        tasks=tasks,
        retention=settings.revision_retention,
        image_venvs=images.venvs,
        # Jobs run images podman built too: those of jobs and running executions stay.
        engine_images=lambda: images.engine_images() | job_artifacts.engine_images(),
        release_images=release_images,
    )
    traffic = Traffic(store=store, logs=logs, live=live, revisions=revisions, secrets=secret_values)
    iam = Iam(store, logs, authority, access_changed=live.refresh_access)
    job_logs = JobLogs(logs)
    registry = task_registry or InstanceRegistry(
        record=lambda name, execution, pid: store.record_instance(
            name, execution, pid, process_start_ticks(pid)
        ),
        forget=store.forget_instance,
    )
    executions = Executions(
        store=store,
        logs=job_logs,
        runtime=runtime or NoRuntime(),
        secrets=secret_values,
        artifacts=job_artifacts,
        tasks=tasks,
        registry=registry,
        clock=clock,
        wall_clock=wall_clock,
        host_env=host_env,
        hosts_file=paths.hosts,
        metadata_address=metadata_address,
        runs_containers=engine is not None,
        mounts_refused=mounts_refused,
        stop_grace=settings.stop_grace_seconds,
        # Parallelism 0 is "as many as possible": on Cloud Run a number that grows with the
        # CPUs used; here 4 tasks per CPU of this machine.
        max_parallelism=4 * (os.cpu_count() or 1),
    )
    schedules = Schedules(
        store=store, logs=job_logs, executions=executions, tasks=tasks, wall_clock=wall_clock
    )
    return ControlPlane(
        authority=authority,
        store=store,
        logs=logs,
        tasks=tasks,
        live=live,
        revisions=revisions,
        traffic=traffic,
        deploys=Deploys(
            settings=settings,
            paths=paths,
            store=store,
            logs=logs,
            supervisor=supervisor,
            build=build,
            live=live,
            revisions=revisions,
            traffic=traffic,
            iam=iam,
            secrets=secret_values,
            tasks=tasks,
            urls=urls,
            images=images,
            clock=clock,
            progress_seconds=progress_seconds,
            engine=engine,
        ),
        iam=iam,
        secrets=Secrets(
            secret_store,
            store,
            routed=lambda: routed_revisions(store),
            latest_changed=live.secret_changed,
        ),
        views=Views(
            store=store,
            logs=logs,
            live=live,
            revisions=revisions,
            supervisor=supervisor,
            urls=urls,
            owner=guards.owner,
            clock=clock,
            router_url=f"http://{settings.listen}:{settings.port}",
            dashboard_url=dashboard_url,
            advisor=advisor,
            container_engine=f"{engine.name} {engine.version}" if engine else None,
            containers=containers,
            sandbox=sandbox,
        ),
        jobs=Jobs(
            settings=settings,
            store=store,
            logs=job_logs,
            build=build,
            artifacts=job_artifacts,
            secrets=secret_values,
            executions=executions,
            views=JobViews(store, job_logs, next_run=schedules.next_run),
            schedules=schedules,
            tasks=tasks,
            wall_clock=wall_clock,
            images=images,
            engine=engine,
            mounts_refused=mounts_refused,
        ),
        advisor=advisor,
        worker_pools=WorkerPools(
            settings=settings,
            paths=paths,
            store=PoolStore(paths.database),
            logs=logs,
            build=build,
            runtime=runtime or NoRuntime(),
            secrets=secret_values,
            tasks=tasks,
            registry=registry,
            clock=clock,
            wall_clock=wall_clock,
            host_env=host_env,
            metadata_address=metadata_address,
            mounts_refused=mounts_refused,
        ),
        ramp=Ramp(store=store, live=live, supervisor=supervisor, advisor=advisor, clock=clock),
        exports=Exports(store=store, images=images),
        scheduler=Scheduler(
            store=SchedulerStore(paths.database),
            logs=logs,
            authority=authority,
            tasks=tasks,
            domain=settings.domain,
            call=scheduler_call
            or Calls(settings.domain, (_loopback(settings.listen), settings.port)),
            wall_clock=wall_clock,
        ),
        images=Images(
            store=images,
            settings=settings,
            paths=paths,
            build=build,
            revisions=revisions,
            tasks=tasks,
            engine=engine,
        ),
        domain_mappings=DomainMappings(
            settings=settings,
            paths=paths,
            mappings=mapping_store,
            store=store,
            logs=logs,
            routes_changed=live.rebuild,
            wall_clock=wall_clock,
        ),
    )


def _loopback(listen: str) -> str:
    """The address to reach the router at: its own, or loopback when it listens on all."""
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(listen, listen)
