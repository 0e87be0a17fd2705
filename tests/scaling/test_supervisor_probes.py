"""Startup, readiness and liveness probes, and the container port, against real processes (a
small http.server app whose health the test steers through files in its folder)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import free_port, redirected

from homerun.access.peers import listener_in_tree
from homerun.model.probes import Probe, ProbeAction
from homerun.model.states import InstanceState
from homerun.observe.logs import LogStore
from homerun.routing.throttler import Throttler
from homerun.runtime.process import ProcessRuntime
from homerun.scaling.diagnosis import StartFailed
from homerun.scaling.supervisor import InstanceRegistry, Supervisor
from homerun.scaling.unit import RevisionPlan, RevisionUnit

APP = Path(__file__).parent / "apps" / "probed_app.py"
READY, UNREADY = InstanceState.READY, InstanceState.UNREADY


def make(
    tmp_path: Path,
    also_redirected: frozenset[int] = frozenset(),
    lowest_port: int = 0,
    **plan_fields: Any,
) -> tuple[Supervisor, RevisionUnit, LogStore]:
    shutil.copy(APP, tmp_path / "app.py")
    logs = LogStore(tmp_path / "logs")
    supervisor = Supervisor(
        ProcessRuntime(),
        logs,
        InstanceRegistry(record=lambda *_: None, forget=lambda _: None),
        clock=time.monotonic,
        probe_interval=0.05,
        stop_grace=2,
        listener_in_tree=listener_in_tree,
        redirected_ports=lambda: redirected() | also_redirected,
        lowest_port=lowest_port,
    )
    plan = RevisionPlan(
        service="svc",
        name="svc-00001-abc",
        argv=[sys.executable, "app.py"],
        env={"PATH": os.environ["PATH"]},
        cwd=tmp_path,
        concurrency=5,
        startup_timeout=plan_fields.pop("startup_timeout", 10),
        request_timeout=10,
        **plan_fields,
    )
    throttler = Throttler(plan.name, lambda: None, time.monotonic)
    return supervisor, RevisionUnit(plan, throttler, deploying=False), logs


async def port_not_given(tmp_path: Path, port: int, why: str, **make_fields: Any) -> None:
    """An instance of a revision whose containerPort is `port` gets a port of its own, and
    its start says `why`."""
    supervisor, unit, logs = make(tmp_path, container_port=port, **make_fields)
    instance = await supervisor.start_instance(unit)
    assert instance.port != port
    assert f"Starting instance {instance.name} on port {instance.port} ({why}" in "\n".join(
        messages(logs)
    )
    await supervisor.stop_revision(unit)
    await supervisor.close()


async def until(condition: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, f"not within {seconds}s: {what}"
        await asyncio.sleep(0.05)


def messages(logs: LogStore) -> list[str]:
    return [entry.get("message", "") for entry in logs.recent("svc", limit=200)]


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(asyncio.wait_for(scenario(), 60))


def http_probe(path: str = "/ready", **timing: int) -> Probe:
    return Probe.model_validate({"action": ProbeAction.HTTP, "path": path, **timing})


def test_an_instance_is_ready_only_once_its_readiness_probe_passes(tmp_path: Path) -> None:
    async def scenario() -> None:
        supervisor, unit, _ = make(tmp_path, readiness_probe=http_probe(period_seconds=0))
        start = asyncio.ensure_future(supervisor.start_instance(unit))
        # It listens at once, but /ready answers 503: still starting, and no endpoint.
        await until(lambda: bool(unit.instances), 10, "the instance to start")
        await asyncio.sleep(1.0)
        assert not start.done() and unit.instances[0].state == InstanceState.STARTING
        assert unit.throttler.endpoints == []
        (tmp_path / "ready").touch()
        instance = await start
        assert instance.state == READY and unit.throttler.endpoints == [instance.endpoint]
        await supervisor.stop_revision(unit)
        await supervisor.close()

    run(scenario)


def test_a_startup_probe_that_never_passes_fails_the_start_with_its_last_answer(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        supervisor, unit, _ = make(tmp_path, startup_probe=http_probe(), startup_timeout=2)
        with pytest.raises(StartFailed) as failure:
            await supervisor.start_instance(unit)
        assert failure.value.message == (
            "the app did not pass its startup probe, GET /ready (GET /ready answered 503), "
            "within the startup timeout of 2s"
        )
        assert unit.instances == []
        await supervisor.close()

    run(scenario)


def test_a_failing_readiness_probe_takes_the_instance_out_of_routing_and_back(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        (tmp_path / "ready").touch()
        probe = http_probe(period_seconds=1, failure_threshold=2, success_threshold=1)
        supervisor, unit, logs = make(tmp_path, readiness_probe=probe)
        instance = await supervisor.start_instance(unit)
        assert unit.throttler.endpoints == [instance.endpoint]
        (tmp_path / "ready").unlink()
        await until(lambda: instance.state == UNREADY, 5, "readiness to fail twice")
        assert unit.throttler.endpoints == [] and unit.active == 0
        assert (
            f"Instance {instance.name} is not ready: readiness probe GET /ready failed 2 times "
            "in a row (GET /ready answered 503); it gets no new requests until the probe "
            "passes again"
        ) in messages(logs)
        (tmp_path / "ready").touch()
        await until(lambda: instance.state == READY, 5, "readiness to pass again")
        assert unit.throttler.endpoints == [instance.endpoint]
        assert instance.process.returncode is None  # never restarted for readiness
        await supervisor.stop_revision(unit)
        await supervisor.close()

    run(scenario)


def test_an_exec_readiness_probe_runs_in_the_instance_folder_with_its_env(tmp_path: Path) -> None:
    async def scenario() -> None:
        command = ("/bin/sh", "-c", 'test -f ready && test -n "$PORT"')
        probe = Probe(action=ProbeAction.EXEC, command=command, period_seconds=1)
        supervisor, unit, _ = make(tmp_path, readiness_probe=probe)
        start = asyncio.ensure_future(supervisor.start_instance(unit))
        await asyncio.sleep(1.0)
        assert not start.done()
        (tmp_path / "ready").touch()
        instance = await start
        assert instance.state == READY
        await supervisor.stop_revision(unit)
        await supervisor.close()

    run(scenario)


def test_an_instance_alive_but_not_answering_is_restarted_by_its_liveness_probe(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        probe = http_probe("/live", period_seconds=1, failure_threshold=2)
        supervisor, unit, logs = make(tmp_path, liveness_probe=probe)
        first = await supervisor.start_instance(unit)
        pid = first.process.pid
        # Its one thread blocks for good: the process lives, and answers nothing more.
        reader, writer = await asyncio.open_connection("127.0.0.1", first.port)
        writer.write(b"GET /hang HTTP/1.1\r\nHost: x\r\n\r\n")
        await writer.drain()
        await until(
            lambda: any(i is not first and i.state == READY for i in unit.instances),
            15,
            "a replacement to be ready",
        )
        await until(lambda: first not in unit.instances, 10, "the hung instance to go")
        writer.close()
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
        assert unit.liveness_restarts == 1
        assert [endpoint.name for endpoint in unit.throttler.endpoints] != [first.name]
        assert any(
            message.startswith(
                f"Instance {first.name} failed its liveness probe GET /live 2 times in a row "
                "(no answer within timeoutSeconds=1); restarting it"
            )
            for message in messages(logs)
        ), messages(logs)
        await supervisor.stop_revision(unit)
        await supervisor.close()

    run(scenario)


def test_the_container_port_is_the_first_instances_port(tmp_path: Path) -> None:
    async def scenario() -> None:
        port = free_port()
        supervisor, unit, logs = make(tmp_path, container_port=port)
        first = await supervisor.start_instance(unit)
        assert first.port == port
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /env HTTP/1.0\r\n\r\n")
        await writer.drain()
        assert (await reader.read()).split(b"\r\n\r\n", 1)[1].split()[1] == str(port).encode()
        writer.close()
        # A second instance cannot have it on the shared loopback: it gets its own, and why.
        second = await supervisor.start_instance(unit)
        assert second.port != port
        assert (
            f"Starting instance {second.name} on port {second.port} (containerPort {port} is "
            "held by another instance: instances share this machine's loopback)"
        ) in messages(logs)
        await supervisor.stop_revision(unit)
        await supervisor.close()

    run(scenario)


def test_a_container_port_that_a_nat_rule_redirects_is_not_given(tmp_path: Path) -> None:
    """Connections to it would go where the rule sends them (a removed container's address),
    never to the instance: it gets a port of its own, and the log says why."""

    port = free_port()
    why = f"connections to 127.0.0.1:{port} are sent elsewhere by a NAT rule"
    run(lambda: port_not_given(tmp_path, port, why, also_redirected=frozenset({port})))


def test_a_container_port_below_what_instances_may_listen_on_is_not_given(
    tmp_path: Path,
) -> None:
    """On this machine's loopback, as a user that is not root, an app cannot listen below
    ip_unprivileged_port_start: it gets a port of its own, and the log says why."""

    port = free_port()
    why = f"containerPort {port} is below {port + 1}, where only root may listen on this machine's"
    run(lambda: port_not_given(tmp_path, port, why, lowest_port=port + 1))


def test_a_probe_is_first_tried_after_its_initial_delay(tmp_path: Path) -> None:
    async def scenario() -> None:
        (tmp_path / "ready").touch()
        probe = http_probe(initial_delay_seconds=2, period_seconds=0)
        supervisor, unit, _ = make(tmp_path, startup_probe=probe)
        started = time.monotonic()
        instance = await supervisor.start_instance(unit)
        assert time.monotonic() - started >= 2 - 0.05
        assert instance.ready_at is not None and instance.ready_at - instance.started_at < 3
        await supervisor.stop_revision(unit)
        await supervisor.close()

    run(scenario)
