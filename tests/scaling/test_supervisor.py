"""The supervisor against real child processes (python's own http.server as the app)."""

import asyncio
import os
import socket
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fakes import Clock, FakeInstance, FakeRuntime, redirected

from homerun.access.peers import listener_in_tree, listening_ports
from homerun.model.engine import ContainerSpec
from homerun.model.limits import Limits, MiB
from homerun.model.states import InstanceState
from homerun.observe.logs import LogStore
from homerun.routing.throttler import Throttler
from homerun.runtime.process import ProcessRuntime
from homerun.scaling.diagnosis import StartFailed
from homerun.scaling.ports import free_port
from homerun.scaling.supervisor import InstanceRegistry, Supervisor
from homerun.scaling.unit import RevisionPlan, RevisionUnit, UnitPhase

READY, DRAINING = InstanceState.READY, InstanceState.DRAINING


def make(
    tmp_path: Path,
    argv: list[str],
    startup_timeout: float = 10,
    *,
    deploying: bool = False,
    clock: Callable[[], float] = time.monotonic,
    **options: Any,
) -> tuple[Supervisor, RevisionUnit, dict[str, int]]:
    recorded: dict[str, int] = {}

    def forget(name: str) -> None:
        recorded.pop(name, None)

    supervisor = Supervisor(
        ProcessRuntime(),
        LogStore(tmp_path / "logs"),
        InstanceRegistry(
            record=lambda name, revision, pid: recorded.__setitem__(name, pid),
            forget=forget,
        ),
        clock=clock,
        probe_interval=0.05,
        stop_grace=2,
        listener_in_tree=listener_in_tree,  # as the daemon wires it
        **options,
        redirected_ports=redirected,
    )
    holder: list[RevisionUnit] = []
    plan = RevisionPlan(
        service="svc",
        name="svc-00001-abc",
        argv=argv,
        env={"PATH": os.environ["PATH"], "K_SERVICE": "svc"},
        cwd=tmp_path,
        concurrency=5,
        startup_timeout=startup_timeout,
        request_timeout=10,
    )
    throttler = Throttler("svc-00001-abc", lambda: supervisor.scale(holder[0], 1), clock)
    unit = RevisionUnit(plan, throttler, deploying=deploying)
    holder.append(unit)
    return supervisor, unit, recorded


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_instance_starts_listens_and_stops(tmp_path: Path) -> None:
    server = ["/bin/sh", "-c", f"exec {sys.executable} -m http.server --bind 127.0.0.1 $PORT"]

    async def scenario() -> None:
        supervisor, unit, recorded = make(tmp_path, server)
        instance = await supervisor.start_instance(unit)
        assert instance.state == READY and instance.endpoint is not None
        assert unit.throttler.endpoints == [instance.endpoint]
        assert recorded == {instance.name: instance.process.pid}
        reader, writer = await asyncio.open_connection("127.0.0.1", instance.port)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        assert (await reader.readline()).startswith(b"HTTP/1.0 200")
        writer.close()
        await supervisor.stop_revision(unit)
        assert instance.state == DRAINING and not alive(instance.process.pid)
        await asyncio.sleep(0.1)
        assert recorded == {} and unit.instances == [] and unit.throttler.endpoints == []
        await supervisor.close()

    asyncio.run(scenario())


def test_crash_on_boot_reports_exit_code_and_last_lines(tmp_path: Path) -> None:
    crash = [sys.executable, "-c", "print('booting'); raise SystemExit(3)"]

    async def scenario() -> None:
        supervisor, unit, _ = make(tmp_path, crash)
        with pytest.raises(StartFailed) as failure:
            await supervisor.start_instance(unit)
        assert "exit code 3" in failure.value.message
        assert failure.value.last_lines == ["booting"]
        assert unit.instances == []
        await supervisor.close()

    asyncio.run(scenario())


def test_never_listening_app_times_out_and_is_killed(tmp_path: Path) -> None:
    sleeper = [sys.executable, "-c", "import time; print('sleeping', flush=True); time.sleep(60)"]

    async def scenario() -> None:
        supervisor, unit, recorded = make(tmp_path, sleeper, startup_timeout=0.5)
        with pytest.raises(StartFailed, match="did not listen on \\$PORT"):
            await supervisor.start_instance(unit)
        assert recorded == {}
        await supervisor.close()

    asyncio.run(scenario())


def test_an_app_listening_on_another_port_fails_in_seconds_saying_which(tmp_path: Path) -> None:
    elsewhere = [
        sys.executable, "-c",
        "import socket, time; s = socket.create_server(('127.0.0.1', 0)); "
        "print('listening on', s.getsockname()[1], flush=True); time.sleep(60)",
    ]  # fmt: skip

    async def scenario() -> None:
        supervisor, unit, _ = make(
            tmp_path, elsewhere, listening_ports=listening_ports, wrong_port_seconds=0.3
        )
        started = time.monotonic()
        with pytest.raises(StartFailed) as failure:
            await supervisor.start_instance(unit)
        assert time.monotonic() - started < 5  # not the 10 s startup timeout
        port = unit.supervised.recent_output[-1].split()[-1]
        assert f"listens on port {port}, not on $PORT=" in failure.value.message
        assert "gunicorn --bind :$PORT main:app" in failure.value.message
        await supervisor.close()

    asyncio.run(scenario())


def test_another_programs_listener_on_the_port_is_not_taken_for_the_instance(
    tmp_path: Path,
) -> None:
    # The port is free when it is handed out; another program binds it before the app does.
    sleeper = [sys.executable, "-c", "import time; time.sleep(60)"]

    async def scenario() -> None:
        supervisor, unit, _ = make(tmp_path, sleeper, startup_timeout=1)
        start = asyncio.ensure_future(supervisor.start_instance(unit))
        for _ in range(5000):  # the spawn takes milliseconds; 5 s at most
            if unit.instances:
                break
            await asyncio.sleep(0.001)
        with socket.create_server(("127.0.0.1", unit.instances[0].port)):
            with pytest.raises(StartFailed, match="another program listens on that port"):
                await start
        assert unit.throttler.endpoints == []
        await supervisor.close()

    asyncio.run(scenario())


def test_waiting_request_gets_503_when_the_start_fails(tmp_path: Path) -> None:
    crash = [sys.executable, "-c", "raise SystemExit(1)"]

    async def scenario() -> None:
        from homerun.routing.throttler import RevisionUnavailable

        supervisor, unit, _ = make(tmp_path, crash)
        with pytest.raises(RevisionUnavailable) as failure:
            await asyncio.wait_for(unit.throttler.acquire(), 10)
        assert failure.value.status == 503 and "failed to start" in failure.value.message
        await supervisor.close()

    asyncio.run(scenario())


def test_instance_ignoring_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    stubborn = [
        sys.executable,
        "-c",
        "import signal, socket, os, time\n"
        "signal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
        "s = socket.socket(); s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen()\n"
        "time.sleep(60)\n",
    ]

    async def scenario() -> None:
        supervisor, unit, _ = make(tmp_path, stubborn)
        instance = await supervisor.start_instance(unit)
        await supervisor.stop_instance(unit, instance)
        assert not alive(instance.process.pid)
        assert instance.process.returncode == -9
        await supervisor.close()

    asyncio.run(scenario())


def test_a_port_given_to_an_instance_is_not_given_again() -> None:
    # The kernel may offer a port again while the instance that got it has not bound it yet.
    taken: set[int] = set()
    for _ in range(300):
        port = free_port(taken)
        assert port not in taken
        taken.add(port)


# -- over a fake runtime and a fake clock: the unit's phase and the supervisor's time ---------


class SlowRuntime(FakeRuntime):
    """Each start takes `seconds` of the fake clock (a 12 s import, say) before it returns."""

    def __init__(self, clock: Clock, seconds: float) -> None:
        super().__init__()
        self._clock = clock
        self._seconds = seconds

    async def start(self, spec: Any, output: Callable[[str, str], None]) -> FakeInstance:
        self._clock.advance(self._seconds)
        return await super().start(spec, output)


def make_fake(
    tmp_path: Path,
    *,
    deploying: bool,
    startup: float = 0.0,
    startup_timeout: float = 240,
    **plan_fields: Any,
) -> tuple[Supervisor, RevisionUnit, SlowRuntime, Clock]:
    clock = Clock()
    runtime = SlowRuntime(clock, startup)
    supervisor = Supervisor(
        runtime,
        LogStore(tmp_path / "logs"),
        InstanceRegistry(record=lambda *_: None, forget=lambda _: None),
        clock=clock,
        probe_interval=0.002,
        stop_grace=1,
        redirected_ports=redirected,
    )
    plan = RevisionPlan(
        service="svc",
        name="svc-00001-abc",
        argv=["app"],
        env={},
        cwd=tmp_path,
        concurrency=5,
        startup_timeout=startup_timeout,
        request_timeout=10,
        **plan_fields,
    )
    unit = RevisionUnit(plan, Throttler(plan.name, lambda: None, clock), deploying=deploying)
    return supervisor, unit, runtime, clock


def test_confirm_ends_the_deploying_phase_once_the_first_instance_stays_up(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        supervisor, unit, _, clock = make_fake(tmp_path, deploying=True)
        assert unit.phase is UnitPhase.DEPLOYING
        instance = await supervisor.start_instance(unit)
        assert unit.phase is UnitPhase.DEPLOYING  # listening is not enough: the deploy confirms
        clock.advance(3)
        await supervisor.confirm(unit, instance, 0.01)
        assert unit.phase is UnitPhase.SERVING and unit.supervised.confirmed_at == clock.now
        await supervisor.stop_revision(unit)
        await supervisor.close()

    asyncio.run(scenario())


def test_an_instance_that_exits_while_confirmed_leaves_the_unit_deploying(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        supervisor, unit, runtime, _ = make_fake(tmp_path, deploying=True)
        instance = await supervisor.start_instance(unit)
        runtime.started[0].exit(1)
        with pytest.raises(StartFailed, match="right after it began listening"):
            await supervisor.confirm(unit, instance, 5)
        assert unit.phase is UnitPhase.DEPLOYING and unit.supervised.confirmed_at is None
        await supervisor.stop_revision(unit)  # what the failed deploy does next
        assert unit.phase is UnitPhase.RETIRED
        await supervisor.close()

    asyncio.run(scenario())


def test_a_private_instance_runs_in_the_revisions_container_and_limits(tmp_path: Path) -> None:
    """`services advise --ramp` loads a private instance: it must be what serves, not the same
    code without --memory, --cpu or the container."""
    limits = Limits(memory_bytes=256 * MiB, cpu_millis=500)
    container = ContainerSpec(image="sha256:" + "0" * 64, port=9090)

    async def scenario() -> None:
        supervisor, unit, runtime, _ = make_fake(
            tmp_path, deploying=False, limits=limits, container=container
        )
        async with supervisor.private_instance(unit) as instance:
            spec = runtime.specs[-1]
            assert (spec.limits, spec.container) == (limits, container)
            assert spec.port == instance.port and instance not in unit.supervised.instances
        assert runtime.started[-1].returncode is not None
        await supervisor.close()

    asyncio.run(scenario())


def test_a_retired_unit_stays_retired(tmp_path: Path) -> None:
    async def scenario() -> None:
        supervisor, unit, _, _ = make_fake(tmp_path, deploying=True)
        instance = await supervisor.start_instance(unit)
        supervisor.retire(unit)
        await supervisor.confirm(unit, instance, 0.01)  # a deploy that finishes too late
        assert unit.phase is UnitPhase.RETIRED and unit.supervised.confirmed_at is None
        assert unit.count(READY) == 1  # retiring stops nothing by itself
        await supervisor.stop_revision(unit)
        await supervisor.close()

    asyncio.run(scenario())


def test_startup_time_is_measured_on_the_injected_clock(tmp_path: Path) -> None:
    async def scenario() -> None:
        supervisor, unit, _, _ = make_fake(tmp_path, deploying=False, startup=12)
        instance = await supervisor.start_instance(unit)
        assert instance.ready_at is not None
        assert instance.ready_at - instance.started_at == 12
        assert list(unit.startup_seconds) == [12] and unit.average_startup == 12
        await supervisor.stop_revision(unit)
        await supervisor.close()

    asyncio.run(scenario())


def test_the_startup_timeout_passes_on_the_injected_clock(tmp_path: Path) -> None:
    # A 240 s timeout, over in milliseconds: the start itself took 241 s of the fake clock.
    async def scenario() -> None:
        supervisor, unit, runtime, _ = make_fake(tmp_path, deploying=True, startup=241)
        runtime.hold = asyncio.Event()  # never listens
        with pytest.raises(StartFailed, match="within the startup timeout of 240s"):
            await supervisor.start_instance(unit)
        assert unit.instances == [] and runtime.started[0].signals
        await supervisor.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["homerun-no-such-program", "--port", "$(PORT)"], "No such file or directory"),
        (["./data.txt"], "Permission denied"),  # not executable
    ],
)
def test_a_command_that_cannot_run_fails_the_start_saying_why(
    tmp_path: Path, argv: list[str], expected: str
) -> None:
    (tmp_path / "data.txt").write_text("not a program\n")

    async def scenario() -> None:
        supervisor, unit, recorded = make(tmp_path, argv)
        with pytest.raises(StartFailed) as failure:
            await supervisor.start_instance(unit)
        detail = failure.value.detail()
        assert detail.startswith(f"the app could not be started: {argv[0]}: {expected}; ")
        assert "printed nothing" not in detail
        assert recorded == {} and unit.instances == []
        await supervisor.close()

    asyncio.run(scenario())
