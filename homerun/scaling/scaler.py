"""The scaler: every tick, observe each revision, ask the autoscaler, have the supervisor act.

Deciding (autoscaler.py), measuring (routing/concurrency.py) and acting (supervisor.py) stay
apart, as in Knative; this loop only carries numbers between them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Protocol

from homerun.model.states import InstanceState
from homerun.observe.logs import LogStore, platform_entry
from homerun.scaling.autoscaler import Decision, Observation, decide
from homerun.scaling.unit import RevisionUnit, UnitPhase

# Cloud Run: a request that finds every allowed instance busy waits this long at least...
MIN_OVERLOAD_WAIT = 10.0
# ...or 3.5 times the revision's average startup time, whichever is longer, then gets 429.
OVERLOAD_WAIT_STARTUPS = 3.5
# How often waiting requests are checked against that limit.
EXPIRY_INTERVAL = 0.5


class Actuator(Protocol):
    """What the scaler needs of the supervisor: move a revision toward a number of instances."""

    def scale(self, unit: RevisionUnit, desired: int) -> None: ...


class Scaler:
    """Decides for serving units only: a deploying unit's instances are its deploy's to
    decide, a retired one's are draining. Writes `unit.scaling` and nothing else."""

    def __init__(
        self,
        supervisor: Actuator,
        logs: LogStore,
        units: Callable[[], Iterable[RevisionUnit]],
        clock: Callable[[], float],
        tick_interval: float,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._supervisor = supervisor
        self._logs = logs
        self._units = units
        # The loop's "now" comes from the clock; `sleep` only paces it (tests pass one that
        # moves a simulated clock instead of waiting).
        self._clock = clock
        self._sleep = sleep
        self._tick_interval = tick_interval
        self._poked: set[RevisionUnit] = set()

    async def run(self) -> None:
        """Decide for every revision each tick; check overloaded queues more often."""
        next_tick = self._clock()
        while True:
            now = self._clock()
            for unit in list(self._units()):
                if unit.phase is not UnitPhase.SERVING:
                    continue
                if now >= next_tick:
                    unit.throttler.meter.close_bucket(now)
                    self.decide(unit, now)
                self._expire_overloaded(unit, now)
            if now >= next_tick:
                next_tick = now + self._tick_interval
            await self._sleep(min(EXPIRY_INTERVAL, self._tick_interval))

    def poke(self, unit: RevisionUnit) -> None:
        """A request is waiting: decide at once (coalesced: one decision per loop turn)."""
        if unit in self._poked:
            return
        self._poked.add(unit)
        asyncio.get_running_loop().call_soon(self._poked_decision, unit)

    def _poked_decision(self, unit: RevisionUnit) -> None:
        self._poked.discard(unit)
        if unit.phase is UnitPhase.SERVING:
            self.decide(unit, self._clock())

    def decide(self, unit: RevisionUnit, now: float) -> Decision:
        policy = unit.plan.policy
        throttler = unit.throttler
        meter = throttler.meter
        record = unit.scaling
        # A revision counts as active from its deploy's confirmation too: its first instance
        # then stays up a stable window plus the grace (60 + 30 s by default) after the deploy,
        # however long it took to start (the meter counts from the unit's creation, and a
        # 120 s start would otherwise be scaled to zero right after its deploy).
        last_active = meter.last_active
        confirmed_at = unit.supervised.confirmed_at
        if confirmed_at is not None and (last_active is None or confirmed_at > last_active):
            last_active = confirmed_at
        observation = Observation(
            stable_concurrency=meter.average(policy.stable_window, now),
            panic_concurrency=meter.average(policy.panic_window, now),
            current_concurrency=meter.concurrency,
            queued=throttler.queue_length,
            ready_instances=unit.count(InstanceState.READY),
            last_active=last_active,
        )
        decision = decide(policy, observation, record.panic_state, now)
        record.panic_state = decision.state
        previous = record.decisions[-1] if record.decisions else None
        record.decisions.append(decision)
        if decision.desired != unit.active:
            self._logs.emit(
                platform_entry(
                    unit.service,
                    f"Scaling {unit.name} from {unit.active} to {decision.desired} "
                    f"instance(s): {decision.reason}",
                    revision=unit.name,
                    desired=decision.desired,
                    mode=decision.mode,
                )
            )
        elif previous is not None and previous.mode != decision.mode:
            self._logs.emit(
                platform_entry(
                    unit.service,
                    f"{unit.name} is in {decision.mode} mode: {decision.reason}",
                    revision=unit.name,
                )
            )
        self._supervisor.scale(unit, decision.desired)
        return decision

    def _expire_overloaded(self, unit: RevisionUnit, now: float) -> None:
        """At max-instances with every instance full, queued requests get 429 in time."""
        policy = unit.plan.policy
        if not unit.throttler.queue_length or unit.active < policy.max_scale:
            return
        wait = max(MIN_OVERLOAD_WAIT, OVERLOAD_WAIT_STARTUPS * unit.average_startup)
        expired = unit.throttler.expire_waiters(
            now - wait,
            429,
            f"every instance of {unit.name} is busy (max-instances "
            f"{policy.max_scale}, concurrency {unit.concurrency}); retry later",
        )
        if expired:
            unit.scaling.overloaded_requests += expired
            self._logs.emit(
                platform_entry(
                    unit.service,
                    f"{expired} request(s) to {unit.name} waited {wait:.1f}s for a free "
                    "instance at max-instances and got 429",
                    severity="WARNING",
                    revision=unit.name,
                )
            )
