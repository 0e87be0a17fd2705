"""A whole control plane, wired as the daemon wires it, over a fake runtime: deploys, traffic
and retention run in milliseconds with the real store, supervisor and routing table."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fakes import Clock, FakeInstance, FakeRuntime, redirected

from homerun.build import Artifact
from homerun.config import Settings
from homerun.control import ControlPlane
from homerun.daemon.wiring import control_plane
from homerun.model.engine import Engine
from homerun.model.events import DeployEvent, Done, Failed
from homerun.observe.logs import LogStore
from homerun.scaling.supervisor import InstanceRegistry, Supervisor
from homerun.spec import DeployRequest, RevisionChanges
from homerun.store import Store


def fake_build(source: Path, dest: Path, **options: Any) -> Artifact:
    """A build that copies nothing: the artifact is a folder with one file. A source with a
    file ENGINE_IMAGE stands for a Dockerfile the container engine built: the artifact names
    the image that file holds."""
    dest.mkdir(parents=True)
    (dest / "app.py").write_text(f"# built from {source}\n")
    engine_image = source / "ENGINE_IMAGE"
    return Artifact(
        root=dest,
        cwd=dest,
        argv=["python", "app.py", *(options.get("args") or [])],
        env={},
        venv=None,
        entrypoint_origin="a test",
        server="other",
        engine_image=engine_image.read_text().strip() if engine_image.exists() else None,
    )


@dataclass
class Plane:
    control: ControlPlane
    runtime: FakeRuntime
    store: Store
    source: Path
    pokes: list[str] = field(default_factory=list)

    async def deploy(self, service: str, **changes: Any) -> list[DeployEvent]:
        request_fields = ("tag", "no_traffic", "update_labels", "description", "revision_suffix")
        options = {key: changes.pop(key) for key in request_fields if key in changes}
        request = DeployRequest(
            service=service,
            changes=RevisionChanges(**changes),
            allow_unauthenticated=True,
            **options,
        )
        return [event async for event in self.control.deploys.deploy(request)]

    async def deployed(self, service: str, **changes: Any) -> Done:
        events = await self.deploy(service, **changes)
        assert isinstance(events[-1], Done), events
        return events[-1]

    async def failed(self, service: str, **changes: Any) -> Failed:
        events = await self.deploy(service, **changes)
        assert isinstance(events[-1], Failed), events
        return events[-1]


@pytest.fixture
def make_plane(tmp_path: Path) -> Callable[..., Plane]:
    """`make_plane(**settings)` inside a running event loop (the supervisor needs one)."""

    def make(
        build: Callable[..., Artifact] = fake_build,
        mounts_refused: str | None = None,
        **settings: Any,
    ) -> Plane:
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        configured = Settings(**{"deploy_settle_seconds": 0.0, "stop_grace_seconds": 1.0,
                                 **settings})  # fmt: skip
        paths = configured.paths(home)
        paths.revisions.mkdir(exist_ok=True)
        store = Store(paths.database)
        logs = LogStore(paths.logs)
        runtime = FakeRuntime()
        clock = Clock()
        supervisor = Supervisor(
            runtime,
            logs,
            InstanceRegistry(record=lambda *_: None, forget=lambda _: None),
            clock=clock,
            probe_interval=0.002,
            stop_grace=1.0,
            redirected_ports=redirected,
        )
        source = tmp_path / "source"
        source.mkdir(exist_ok=True)
        pokes: list[str] = []
        control = control_plane(
            settings=configured,
            paths=paths,
            store=store,
            logs=logs,
            supervisor=supervisor,
            build=build,
            poke=lambda unit: pokes.append(unit.name),
            clock=clock,
            signing_key=b"k" * 32,
            metadata_address=None,
            dashboard_url=None,
            host_env={"PATH": "/usr/bin"},
            progress_seconds=0.005,
            mounts_refused=mounts_refused,
        )
        return Plane(control, runtime, store, source, pokes)

    return make


# -- jobs: a plane whose tasks run on a runtime the test holds ------------------------------


class RecordingRuntime(FakeRuntime):
    """The fake runtime for tasks, which do not listen: an instance runs until the test ends
    it (`exit`) or a signal does. Each start's spec and output sink are kept: a test reads a
    task's env and makes it print. `fail` and `unstartable` work as in FakeRuntime."""

    def __init__(self) -> None:
        super().__init__()
        self.specs: list[Any] = []
        self.outputs: list[Callable[[str, str], None]] = []

    async def start(self, spec: Any, output: Callable[[str, str], None]) -> FakeInstance:
        self.specs.append(spec)
        self.outputs.append(output)
        if self.unstartable is not None:
            raise self.unstartable
        instance = FakeInstance(spec.name, spec.port, None)
        self.started.append(instance)
        if self.fail:
            output("stderr", "ModuleNotFoundError: No module named 'flask'")
            instance.exit(1)
        return instance


@dataclass
class JobsPlane:
    control: ControlPlane
    runtime: RecordingRuntime
    store: Store
    source: Path
    clock: Clock
    wall: Clock  # the wall clock: attempts' times, schedules
    logs: LogStore
    registered: dict[str, int] = field(default_factory=dict)  # task instance -> pid


# 2026-12-04T10:00:30Z, a Friday
WALL_NOW = 1_796_378_430.0


@pytest.fixture
def make_jobs_plane(tmp_path: Path) -> Callable[..., JobsPlane]:
    """`make_jobs_plane(**settings)`, as make_plane, with the runtime given to the plane for
    jobs' tasks; a second call makes a new plane over the same home (a daemon restart)."""

    def make(
        wall_now: float = WALL_NOW, engine: Engine | None = None, **settings: Any
    ) -> JobsPlane:
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        configured = Settings(**{"stop_grace_seconds": 1.0, **settings})
        paths = configured.paths(home)
        paths.revisions.mkdir(exist_ok=True)
        store = Store(paths.database)
        logs = LogStore(paths.logs)
        runtime = RecordingRuntime()
        clock = Clock()
        wall = Clock(wall_now)
        registered: dict[str, int] = {}
        source = tmp_path / "source"
        source.mkdir(exist_ok=True)
        control = control_plane(
            settings=configured,
            paths=paths,
            store=store,
            logs=logs,
            supervisor=Supervisor(
                runtime,
                logs,
                InstanceRegistry(record=lambda *_: None, forget=lambda _: None),
                clock=clock,
                probe_interval=0.002,
                stop_grace=1.0,
                redirected_ports=redirected,
            ),
            build=fake_build,
            poke=lambda unit: None,
            clock=clock,
            signing_key=b"k" * 32,
            metadata_address=("127.0.0.1", 9),  # written into the tasks' env only
            dashboard_url=None,
            host_env={"PATH": "/usr/bin"},
            runtime=runtime,
            task_registry=InstanceRegistry(
                record=lambda name, execution, pid: registered.__setitem__(name, pid),
                forget=lambda name: registered.__delitem__(name),
            ),
            wall_clock=wall,
            engine=engine,
        )
        return JobsPlane(control, runtime, store, source, clock, wall, logs, registered)

    return make


def run(make_plane: Callable[..., Plane], scenario: Callable[[Plane], Awaitable[None]]) -> None:
    """A control plane from `make_plane`, `scenario` run against it, the plane closed after."""

    async def main() -> None:
        plane = make_plane()
        try:
            await scenario(plane)
        finally:
            await plane.control.close()

    asyncio.run(main())
