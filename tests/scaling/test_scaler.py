"""The scaler's loop over simulated minutes: a fake clock, a fake supervisor, the real
autoscaler, throttler and concurrency meter. Minutes pass in milliseconds."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from fakes import Clock, FakeSupervisor

from homerun.model.states import InstanceState
from homerun.observe.logs import LogStore
from homerun.routing.throttler import RevisionUnavailable, Throttler
from homerun.scaling.autoscaler import PANIC, STABLE, ScalingPolicy
from homerun.scaling.scaler import Scaler
from homerun.scaling.unit import RevisionPlan, RevisionUnit, UnitPhase

TICK = 2.0  # Knative's, the daemon's default
POLICY = ScalingPolicy()  # concurrency 80, target 48 per instance, 60 s window, 30 s grace
IDLE_BEFORE_ZERO = POLICY.stable_window + POLICY.scale_to_zero_grace  # 90 s


class EndOfScenario(Exception):
    pass


@dataclass
class Sample:
    """What the loop left after one of its turns."""

    at: float  # seconds since the scenario began
    active: int
    mode: str | None  # of the latest decision


@dataclass
class Scenario:
    """The scaler's `sleep`: each call moves the clock, does what the scenario does by then,
    notes the unit's instances, and ends the run at the horizon."""

    clock: Clock
    horizon: float
    events: list[tuple[float, Callable[[], object]]] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    unit: RevisionUnit = field(init=False)  # the one it watches, once made

    def __post_init__(self) -> None:
        self.start = self.clock.now

    def at(self, seconds: float, action: Callable[[], object]) -> None:
        self.events.append((seconds, action))
        self.events.sort(key=lambda event: event[0])

    async def sleep(self, seconds: float) -> None:
        decisions = self.unit.scaling.decisions
        mode = decisions[-1].mode if decisions else None
        self.samples.append(Sample(self.elapsed, self.unit.active, mode))
        end = self.elapsed + seconds
        while self.events and self.events[0][0] <= end:
            when, action = self.events.pop(0)
            await self.clock.sleep(max(0.0, when - self.elapsed))
            action()
        await self.clock.sleep(end - self.elapsed)
        if self.elapsed >= self.horizon:
            raise EndOfScenario

    @property
    def elapsed(self) -> float:
        return self.clock.now - self.start

    def active_between(self, start: float, end: float) -> set[int]:
        return {sample.active for sample in self.samples if start <= sample.at < end}

    def first(self, condition: Callable[[Sample], bool]) -> Sample:
        return next(sample for sample in self.samples if condition(sample))


@dataclass
class Rig:
    clock: Clock
    scenario: Scenario
    supervisor: FakeSupervisor
    unit: RevisionUnit
    scaler: Scaler
    logs: LogStore


def make(
    tmp_path: Path,
    *,
    horizon: float = 0,
    deploying: bool = False,
    policy: ScalingPolicy = POLICY,
) -> Rig:
    """One revision, its scaler paced by a scenario that ends `horizon` seconds in."""
    clock = Clock()
    scenario = Scenario(clock, horizon)
    supervisor = FakeSupervisor(clock)
    logs = LogStore(tmp_path / "logs")
    holder: list[RevisionUnit] = []
    scaler = Scaler(
        supervisor,
        logs,
        units=lambda: holder,
        clock=clock,
        tick_interval=TICK,
        sleep=scenario.sleep,
    )
    plan = RevisionPlan(
        service="svc",
        name="svc-00001-abc",
        argv=["app"],
        env={},
        cwd=tmp_path,
        concurrency=policy.container_concurrency,
        startup_timeout=240,
        request_timeout=300,
        policy=policy,
    )
    unit = RevisionUnit(
        plan, Throttler(plan.name, lambda: scaler.poke(unit), clock), deploying=deploying
    )
    holder.append(unit)
    scenario.unit = unit
    return Rig(clock, scenario, supervisor, unit, scaler, logs)


async def play(rig: Rig) -> None:
    with pytest.raises(EndOfScenario):
        await rig.scaler.run()


def requests(rig: Rig, delta: int) -> Callable[[], None]:
    """`delta` requests arrive (or finish) in the revision, as the router's meter sees them."""
    return lambda: rig.unit.throttler.meter.change(delta, rig.clock())


def test_a_burst_scales_up_in_panic_holds_for_the_window_then_goes_to_zero(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        rig = make(tmp_path, horizon=300)
        scenario = rig.scenario
        rig.supervisor.start(rig.unit, ready=True)  # the instance its deploy started
        # 200 requests at once for 30 s: 200 / 48 per instance = 5 instances.
        scenario.at(10, requests(rig, +200))
        scenario.at(40, requests(rig, -200))
        await play(rig)

        # Up within three ticks: the 6 s panic window holds over 2 x capacity 4 s in.
        panic = scenario.first(lambda sample: sample.mode == PANIC)
        surge = scenario.first(lambda sample: sample.active == 5)
        assert 10 < panic.at <= surge.at <= 16 and surge.mode == PANIC
        # In panic the count only goes up: 5 until a stable window after the panic began.
        assert scenario.active_between(surge.at, panic.at + POLICY.stable_window) == {5}
        calm = scenario.first(lambda sample: sample.mode == STABLE and sample.at > panic.at)
        assert calm.at == panic.at + POLICY.stable_window
        # Then down step by step (at most halved per decision), never to zero while the
        # revision was active within the window plus the grace...
        assert 0 not in scenario.active_between(0, 40 + IDLE_BEFORE_ZERO)
        assert 1 in scenario.active_between(0, 40 + IDLE_BEFORE_ZERO)
        # ...and to zero at the first tick past it.
        assert scenario.first(lambda sample: sample.active == 0).at == 40 + IDLE_BEFORE_ZERO
        assert rig.unit.scaling.decisions[-1].mode == STABLE

    asyncio.run(main())


def test_a_queued_request_gets_an_instance_at_once_not_at_the_next_tick(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make(tmp_path)
        request = asyncio.ensure_future(rig.unit.throttler.acquire())  # no instance: it queues
        await asyncio.sleep(0)  # the request queues and pokes the scaler...
        await asyncio.sleep(0)  # ...which decides in the loop's next turn
        assert rig.supervisor.scaled == [(rig.clock.now, rig.unit.name, 1)]
        request.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await request

    asyncio.run(main())


def test_a_request_waiting_at_max_instances_gets_429_after_the_overload_wait(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        policy = ScalingPolicy(container_concurrency=1, max_scale=1)
        rig = make(tmp_path, horizon=30, policy=policy)
        rig.supervisor.start(rig.unit, ready=True)  # with no endpoint: every request queues
        request = asyncio.ensure_future(rig.unit.throttler.acquire())
        await asyncio.sleep(0)
        await play(rig)
        with pytest.raises(RevisionUnavailable) as refused:
            await request
        assert refused.value.status == 429
        assert rig.unit.overloaded_requests == 1
        (warning,) = [e for e in rig.logs.read("svc", limit=100) if e["severity"] == "WARNING"]
        assert "waited 10.0s for a free instance at max-instances" in warning["message"]

    asyncio.run(main())


def test_a_deploying_revision_is_left_alone_until_its_deploy_confirms_it(
    tmp_path: Path,
) -> None:
    # The newcomer's report: a 12 s start, and "Scaling slow-00001-wcv from 1 to 0" 0.5 s in.
    async def main() -> None:
        rig = make(tmp_path, horizon=600, deploying=True)
        scenario, supervisor = rig.scenario, rig.supervisor
        first = supervisor.start(rig.unit)  # the deploy's start_instance: starting, no requests
        confirmed = 12 + 2 * IDLE_BEFORE_ZERO  # a deploy far longer than window + grace
        scenario.at(12, lambda: supervisor.listens(first))
        scenario.at(confirmed, lambda: supervisor.confirm(rig.unit))
        await play(rig)

        # While it deploys the scaler neither decides nor acts, whatever the meter says.
        assert [call for call in supervisor.scaled if call[0] - scenario.start < confirmed] == []
        assert scenario.active_between(0, confirmed) == {1}
        # Confirmed, it scales as any revision does: its first instance stays up a stable
        # window plus the grace from the confirmation, then goes.
        assert rig.unit.phase is UnitPhase.SERVING
        assert scenario.active_between(confirmed, confirmed + IDLE_BEFORE_ZERO) == {1}
        assert scenario.first(lambda s: s.active == 0).at == confirmed + IDLE_BEFORE_ZERO
        scaled_to_zero = [e["message"] for e in rig.logs.read("svc", limit=100)
                          if " to 0 instance(s)" in e["message"]]  # fmt: skip
        assert len(scaled_to_zero) == 1 and "scale to zero" in scaled_to_zero[0]

    asyncio.run(main())


def test_a_deploying_revision_is_not_scaled_even_when_a_request_pokes_it(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make(tmp_path, deploying=True)
        rig.supervisor.start(rig.unit)
        rig.scaler.poke(rig.unit)
        await asyncio.sleep(0)
        assert rig.supervisor.scaled == [] and rig.unit.count(InstanceState.STARTING) == 1

    asyncio.run(main())


def test_a_retired_revision_is_left_alone(tmp_path: Path) -> None:
    async def main() -> None:
        rig = make(tmp_path, horizon=200)
        rig.supervisor.start(rig.unit, ready=True)
        rig.unit.supervised.retire()  # what Supervisor.retire does
        rig.scaler.poke(rig.unit)
        await play(rig)
        assert rig.supervisor.scaled == [] and rig.unit.active == 1

    asyncio.run(main())


def test_a_serving_revision_that_never_had_a_request_keeps_one_instance_for_window_and_grace(
    tmp_path: Path,
) -> None:
    # A revision restored at the daemon's start (ready already, not deploying): the meter
    # counts it active from its creation.
    async def main() -> None:
        rig = make(tmp_path, horizon=120)
        rig.supervisor.start(rig.unit, ready=True)
        await play(rig)
        assert rig.scenario.active_between(0, IDLE_BEFORE_ZERO) == {1}
        assert rig.scenario.first(lambda sample: sample.active == 0).at == IDLE_BEFORE_ZERO

    asyncio.run(main())
