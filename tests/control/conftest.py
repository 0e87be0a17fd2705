"""A whole control plane, wired as the daemon wires it, over a fake runtime: deploys, traffic
and retention run in milliseconds with the real store, supervisor and routing table."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fakes import Clock, FakeRuntime

from homerun.build import Artifact
from homerun.config import Settings
from homerun.control import ControlPlane
from homerun.daemon import control_plane
from homerun.model.events import DeployEvent, Done, Failed
from homerun.observe.logs import LogStore
from homerun.scaling.supervisor import InstanceRegistry, Supervisor
from homerun.spec import DeployRequest, RevisionChanges
from homerun.store import Store


def fake_build(source: Path, dest: Path, **options: Any) -> Artifact:
    """A build that copies nothing: the artifact is a folder with one file."""
    dest.mkdir(parents=True)
    (dest / "app.py").write_text(f"# built from {source}\n")
    return Artifact(
        root=dest,
        cwd=dest,
        argv=["python", "app.py", *(options.get("args") or [])],
        env={},
        venv=None,
        entrypoint_origin="a test",
        server="other",
    )


@dataclass
class Plane:
    control: ControlPlane
    runtime: FakeRuntime
    store: Store
    source: Path
    pokes: list[str] = field(default_factory=list)

    async def deploy(self, service: str, **changes: Any) -> list[DeployEvent]:
        options = {key: changes.pop(key) for key in ("tag", "no_traffic") if key in changes}
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

    def make(**settings: Any) -> Plane:
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
            build=fake_build,
            poke=lambda unit: pokes.append(unit.name),
            clock=clock,
            signing_key=b"k" * 32,
            metadata_address=None,
            dashboard_url=None,
            host_env={"PATH": "/usr/bin"},
            progress_seconds=0.005,
        )
        return Plane(control, runtime, store, source, pokes)

    return make
