"""Worker pools (`homerun worker-pools`): Cloud Run's instances with no URL, no port and no
request-based scaling, kept at a fixed count. A deploy builds (or keeps) the artifact, records
the pool's next revision, stops the instances of the last one and starts the new count; an
instance that exits, whatever its exit code, is started again as pool_decision.py says
(crash backoff). Pools are started again when the daemon starts; instances stop with it."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from pydantic import BaseModel, ConfigDict, Field

from homerun.access.iam import instance_member
from homerun.build.artifact import artifact_record
from homerun.config import Paths, Settings
from homerun.control.deploys import BuildFunction
from homerun.control.environment import effective_entrypoint, metadata_env
from homerun.control.pool_decision import (
    BACKOFF_SECONDS,
    Slot,
    crashes_after_exit,
    decide,
    restart_delay,
)
from homerun.control.retention import unused_venvs
from homerun.control.secrets import SecretValues
from homerun.control.tasks import Tasks
from homerun.errors import BuildError, HomerunError, InvalidSpec
from homerun.model import views
from homerun.model.artifact import ArtifactRecord
from homerun.model.events import BuildLine, Phase, PoolDeployed, PoolEvent
from homerun.model.logs import LogEntry
from homerun.model.pools import MAX_POOL_INSTANCES, validate_pool_name
from homerun.model.volumes import NO_MOUNTS, Mounts, sandbox_needed
from homerun.observe.logs import LogStore, instance_entry, platform_entry
from homerun.pool_store import PoolStore, WorkerPoolRecord
from homerun.routing.types import Address
from homerun.runtime import Instance, InstanceSpec, Runtime, describe_status, stop_all
from homerun.runtime.names import INHERITED
from homerun.scaling.supervisor import InstanceRegistry
from homerun.spec import RevisionChanges, RevisionSpec, expand_k8s_vars

PoolEmit = Callable[[PoolEvent], None]


def log_name(pool: str) -> str:
    """The LogStore's name for a pool's log, `POOL.pool`: apart from a service of that name."""
    return f"{pool}.pool"


class PoolRequest(BaseModel):
    """What `homerun worker-pools deploy` sends to the daemon."""

    model_config = ConfigDict(extra="forbid")

    pool: str
    changes: RevisionChanges = Field(default_factory=RevisionChanges)
    instances: int | None = Field(default=None, ge=0, le=MAX_POOL_INSTANCES)  # None: keep (new: 1)


@dataclass
class _Slot:
    index: int
    instance: Instance | None = None
    started_at: float | None = None  # decision clock
    exited_at: float | None = None
    crashes: int = 0
    restarts: int = 0
    last_exit: str | None = None
    wall_started_at: float | None = None

    def state(self) -> Slot:
        return Slot(self.instance is not None, self.started_at, self.exited_at, self.crashes)


@dataclass
class _Run:
    record: WorkerPoolRecord
    env: dict[str, str]
    mounts: Mounts = NO_MOUNTS  # read with env, when the pool's loop starts
    slots: list[_Slot] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    watchers: set[asyncio.Task[None]] = field(default_factory=set)
    loop: asyncio.Task[None] | None = None


class WorkerPools:
    def __init__(
        self,
        *,
        settings: Settings,
        paths: Paths,
        store: PoolStore,
        logs: LogStore,
        build: BuildFunction,
        runtime: Runtime,
        secrets: SecretValues,
        tasks: Tasks,
        registry: InstanceRegistry,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        host_env: Mapping[str, str],
        metadata_address: Address | None = None,
        backoff_seconds: float = BACKOFF_SECONDS,
        mounts_refused: str | None = None,
    ) -> None:
        # Why its instances (processes) cannot have secret files or volumes (no sandbox).
        self._mounts_refused = mounts_refused
        # Collaborators
        self._settings = settings
        self._store = store
        self._logs = logs
        self._build = build
        self._runtime = runtime
        self._secrets = secrets
        self._tasks = tasks
        self._registry = registry
        self._clock = clock
        self._wall_clock = wall_clock
        self._host_env = host_env
        self._metadata_address = metadata_address
        self._backoff = backoff_seconds
        self._stop_grace = settings.stop_grace_seconds
        self.root = paths.home / "worker-pools" / "artifacts"
        self.venv_cache = paths.home / "worker-pools" / "venvs"
        # Per pool
        self._runs: dict[str, _Run] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    # -- what the admin API asks --------------------------------------------------------

    def deploy(self, request: PoolRequest) -> AsyncIterator[PoolEvent]:
        """Create or update a pool; its events stream to the caller, who may go away."""

        async def work(emit: PoolEmit) -> None:
            pool = validate_pool_name(request.pool)
            async with self._locks.setdefault(pool, asyncio.Lock()):
                await self._deploy(pool, request, emit)

        return self._tasks.stream(work)

    async def delete(self, name: str) -> None:
        async with self._locks.setdefault(name, asyncio.Lock()):
            self._store.pool(name)  # NotFound for an unknown pool
            await self._stop_run(name)
            self._store.delete(name)
            shutil.rmtree(self.root / name, ignore_errors=True)
            self._collect_venvs()
            self._logs.delete(log_name(name))

    def pools(self) -> list[views.WorkerPoolSummary]:
        return [self._view(record) for record in self._store.pools()]

    def describe(self, name: str) -> views.WorkerPoolSummary:
        return self._view(self._store.pool(name))

    async def read_logs(self, name: str, limit: int) -> list[LogEntry]:
        self._store.pool(name)
        self._logs.flush()
        return await asyncio.to_thread(self._logs.read_written, log_name(name), limit=limit)

    def wake(self) -> None:
        """Decide again now for every pool (a waiting instance's backoff included)."""
        for run in self._runs.values():
            run.changed.set()

    # -- startup and shutdown -------------------------------------------------------------

    def restore(self) -> None:
        """After a (re)start: run every pool's instances again."""
        for record in self._store.pools():
            self._event(record.name, f"Worker pool {record.name} starts with the daemon")
            self._run(record)

    async def close(self) -> None:
        """Stop every instance (SIGTERM, SIGKILL after the grace); pools start next time."""
        await asyncio.gather(*(self._stop_run(name) for name in list(self._runs)))

    def close_store(self) -> None:
        self._store.close()

    # -- deploying ------------------------------------------------------------------------

    async def _deploy(self, pool: str, request: PoolRequest, emit: PoolEmit) -> None:
        current = self._store.pool(pool) if self._store.has(pool) else None
        changes = request.changes
        if current is None and changes.source is None:
            raise InvalidSpec(f"worker pool {pool} is new: give the folder of its code, --source")
        template = changes.apply(current.template if current else None)
        if template.mounts_anything and self._mounts_refused is not None:
            raise InvalidSpec(sandbox_needed(self._mounts_refused))
        self._secrets.check(template)
        instances = request.instances
        if instances is None:
            instances = current.instances if current else 1
        generation = (current.generation if current else 0) + 1
        rebuild = changes.source is not None or (
            current is not None
            and template.entrypoint_inputs() != current.template.entrypoint_inputs()
        )
        if rebuild or current is None:
            artifact_dir = f"{generation:05d}"
            emit(Phase(message=f"Building worker pool {pool} from {template.source}"))
            artifact = await self._built(Path(template.source), pool, artifact_dir, template, emit)
            emit(
                Phase(message=f"Entrypoint ({artifact.entrypoint_origin}): {artifact.command_line}")
            )
        else:
            artifact, artifact_dir = current.artifact, current.artifact_dir
            emit(Phase(message=f"Updating worker pool {pool} (no rebuild: its code is unchanged)"))
        await self._stop_run(pool)
        record = self._store.put(
            pool, template, instances, artifact, artifact_dir, self._wall_clock()
        )
        self._collect(pool, keep=artifact_dir)
        self._event(
            pool,
            f"Worker pool {pool} deployed revision {record.revision}: {instances} instance(s) "
            f"of {artifact.command_line}",
        )
        self._run(record)
        emit(
            PoolDeployed(
                pool=pool,
                revision=record.revision,
                instances=instances,
                created=current is None,
                entrypoint=artifact.command_line,
            )
        )

    async def _built(
        self, source: Path, pool: str, artifact_dir: str, template: RevisionSpec, emit: PoolEmit
    ) -> ArtifactRecord:
        dest = self.root / pool / artifact_dir
        shutil.rmtree(dest, ignore_errors=True)  # a build a stopped daemon left half done
        dest.parent.mkdir(parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()

        def output(line: str) -> None:
            loop.call_soon_threadsafe(emit, BuildLine(line=line))

        def build() -> ArtifactRecord:
            record = artifact_record(
                self._build(
                    source,
                    dest,
                    command=template.command,
                    args=template.args,
                    user_env=template.env,
                    venv_cache=self.venv_cache,
                    output=output,
                    max_source_bytes=self._settings.max_source_bytes,
                    function=template.function_target,
                    base_image=template.base_image,
                )
            )
            if record.engine_image is not None:
                raise BuildError(
                    f"{source}/Dockerfile needs a container engine to build, and worker pools "
                    "do not run containers yet (services do); keep the pool's Dockerfile in "
                    "the Python subset, or give the pool a folder without one (its "
                    "requirements.txt is then installed)"
                )
            return record

        try:
            return await asyncio.to_thread(build)
        except BaseException:
            shutil.rmtree(dest, ignore_errors=True)
            raise

    def _collect(self, pool: str, keep: str) -> None:
        folder = self.root / pool
        if folder.is_dir():
            for entry in folder.iterdir():
                if entry.name != keep:
                    shutil.rmtree(entry, ignore_errors=True)
        self._collect_venvs()

    def _collect_venvs(self) -> None:
        if not self.venv_cache.is_dir():
            return
        used = [
            Path(record.artifact.venv) for record in self._store.pools() if record.artifact.venv
        ]
        for venv in unused_venvs(self.venv_cache.iterdir(), used):
            shutil.rmtree(venv, ignore_errors=True)

    # -- running a pool's instances --------------------------------------------------------

    def _run(self, record: WorkerPoolRecord) -> None:
        run = _Run(record, env={})
        self._runs[record.name] = run
        run.loop = self._tasks.spawn(self._loop(run))

    async def _stop_run(self, name: str) -> None:
        run = self._runs.pop(name, None)
        if run is None or run.loop is None:
            return
        run.loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run.loop

    async def _loop(self, run: _Run) -> None:
        record = run.record
        try:
            run.env = self._base_env(record)
            run.mounts = self._secrets.mounts(record.template)
            while True:
                run.changed.clear()
                decision = decide(
                    record.instances, [slot.state() for slot in run.slots], self._clock(),
                    self._backoff,
                )  # fmt: skip
                while len(run.slots) < record.instances:
                    run.slots.append(_Slot(len(run.slots)))
                for index in decision.start:
                    await self._start(run, run.slots[index])
                timeout = None
                if decision.wake_at is not None:
                    timeout = max(0.0, decision.wake_at - self._clock())
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(run.changed.wait(), timeout)
        except asyncio.CancelledError:
            await self._halt(run)
            raise
        except HomerunError as error:  # a secret it reads is gone
            await self._halt(run)
            self._event(record.name, f"Worker pool {record.name} stopped: {error}", "ERROR")
        except Exception as error:  # a bug: stop the instances and say so, not silently
            await self._halt(run)
            self._event(record.name, f"Worker pool {record.name} stopped: {error!r}", "ERROR")
            raise

    async def _start(self, run: _Run, slot: _Slot) -> None:
        record = run.record
        env = dict(run.env)
        argv = [expand_k8s_vars(argument, env) for argument in record.artifact.argv]
        if slot.started_at is not None:
            slot.restarts += 1
        name = f"{record.revision}-{slot.index}-{slot.restarts}"
        spec = InstanceSpec(
            name=name,
            argv=argv,
            env=env,
            cwd=self.root / record.name / record.artifact_dir / record.artifact.cwd,
            port=0,  # a worker pool's instances do not listen: no PORT
            mounts=run.mounts,
        )

        def output(stream: str, line: str) -> None:
            self._logs.emit_serialized(
                log_name(record.name),
                instance_entry(record.name, record.revision, name, stream, line),
            )

        slot.started_at = self._clock()
        slot.wall_started_at = self._wall_clock()
        try:
            instance = await self._runtime.start(spec, output)
        except OSError as error:  # a program that is missing or not executable
            reason = (
                f"cannot start {argv[0] if argv else 'the instance'}: {error.strerror or error}"
            )
            self._exited(run, slot, reason)
            return
        slot.instance = instance
        self._registry.record(name, record.revision, instance.pid)
        watcher = asyncio.ensure_future(self._watch(run, slot, instance, name))
        run.watchers.add(watcher)
        watcher.add_done_callback(run.watchers.discard)

    async def _watch(self, run: _Run, slot: _Slot, instance: Instance, name: str) -> None:
        status = await instance.wait()
        self._registry.forget(name)
        slot.instance = None
        if run.loop is not None and run.loop.cancelling():
            return  # stopped by a deploy, a delete or the daemon's stop
        self._exited(run, slot, describe_status(status))

    def _exited(self, run: _Run, slot: _Slot, how: str) -> None:
        now = self._clock()
        slot.crashes = crashes_after_exit(slot.state(), now)
        slot.exited_at = now
        slot.last_exit = how
        pool = run.record.name
        self._event(
            pool,
            f"Instance {slot.index} of worker pool {pool} ended ({how}); it starts again"
            + (f" in {self._delay(slot):g}s" if slot.crashes else ""),
            "WARNING",
        )
        run.changed.set()

    def _delay(self, slot: _Slot) -> float:
        return restart_delay(slot.crashes, self._backoff)

    async def _halt(self, run: _Run) -> None:
        running = [slot.instance for slot in run.slots if slot.instance is not None]
        await stop_all(running, self._stop_grace)
        if run.watchers:
            await asyncio.wait(list(run.watchers), timeout=self._stop_grace + 2)

    def _base_env(self, record: WorkerPoolRecord) -> dict[str, str]:
        """Later sources win: the host's basics, the image's ENV, the pool's env vars, its
        secrets (read now), then what Cloud Run sets in a worker pool. No PORT."""
        env = {key: self._host_env[key] for key in INHERITED if key in self._host_env}
        env.setdefault("PYTHONUNBUFFERED", "1")
        env.update(record.artifact.env)
        env.update(record.template.env)
        env.update(self._secrets.env(record.template))
        env.update(CLOUD_RUN_WORKER_POOL=record.name, CLOUD_RUN_REVISION=record.revision)
        if self._metadata_address is not None:
            env.update(metadata_env(self._metadata_address))
        return env

    def members(self) -> dict[int, str]:
        """pid -> member of every running instance: the pool's service account when it has
        one, else the pool's own account (access/iam.py)."""
        return {
            slot.instance.pid: instance_member(run.record.name, run.record.template.service_account)
            for run in self._runs.values()
            for slot in run.slots
            if slot.instance is not None
        }

    def _event(self, pool: str, message: str, severity: str = "INFO") -> None:
        self._logs.emit_serialized(
            log_name(pool), orjson.dumps(platform_entry(pool, message, severity=severity))
        )

    # -- views ----------------------------------------------------------------------------

    def _view(self, record: WorkerPoolRecord) -> views.WorkerPoolSummary:
        run = self._runs.get(record.name)
        same = run is not None and run.record.generation == record.generation
        slots = run.slots if run is not None and same else []
        offset = self._wall_clock() - self._clock()
        shown = [
            views.PoolInstance(
                index=slot.index,
                pid=slot.instance.pid if slot.instance is not None else None,
                started_at=slot.wall_started_at,
                restarts=slot.restarts,
                last_exit=slot.last_exit,
                restart_at=(
                    slot.exited_at + self._delay(slot) + offset
                    if slot.instance is None and slot.exited_at is not None
                    else None
                ),
            )
            for slot in slots[: record.instances]
        ]
        template = record.template
        entrypoint, origin = effective_entrypoint(record.artifact, template)
        return views.WorkerPoolSummary(
            name=record.name,
            revision=record.revision,
            created_at=record.created_at,
            updated_at=record.updated_at,
            source=template.source,
            entrypoint=entrypoint,
            entrypoint_origin=origin,
            env=template.env,
            secrets={name: str(ref) for name, ref in template.secrets.items()},
            cpu=template.cpu,
            memory=template.memory,
            instances=record.instances,
            running=sum(1 for slot in shown if slot.pid is not None),
            slots=shown,
        )
