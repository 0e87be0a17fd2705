"""The autoscaler: a pure decision of how many instances a revision needs (Knative's KPA).

Nothing here reads a clock or touches a process: the caller passes what was observed and
`now`, and gets back the desired instance count, the reason, and the state to pass next time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

STABLE, PANIC = "stable", "panic"


@dataclass(frozen=True)
class ScalingPolicy:
    """One revision's scaling settings (Knative config-autoscaler, Cloud Run defaults)."""

    container_concurrency: int = 80
    target_utilization: float = 0.6  # Cloud Run aims at 60 % of containerConcurrency
    target: float | None = None  # autoscaling.knative.dev/target: a per-instance override
    min_scale: int = 0
    max_scale: int = 100
    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace: float = 30.0

    @property
    def target_per_instance(self) -> float:
        """Concurrency one instance should carry: 80 x 60 % = 48 by default."""
        if self.target is not None:
            return min(self.target, self.container_concurrency)
        return max(self.container_concurrency * self.target_utilization, 0.01)

    @property
    def panic_window(self) -> float:
        return self.stable_window * self.panic_window_percentage / 100


@dataclass(frozen=True)
class Observation:
    """What the metrics saw for one revision, averaged over the two windows."""

    stable_concurrency: float  # requests in flight or queued, averaged over the stable window
    panic_concurrency: float  # the same over the panic window
    current_concurrency: float  # right now
    queued: int  # requests waiting for a slot right now
    ready_instances: int
    last_active: float | None  # when the revision last had a request in flight or queued


@dataclass(frozen=True)
class PanicState:
    panic_since: float | None = None
    max_panic_instances: int = 0


@dataclass(frozen=True)
class Decision:
    desired: int
    mode: str
    reason: str
    state: PanicState
    at: float

    def describe(self) -> str:
        return f"{self.desired} instance(s), {self.mode}: {self.reason}"


def decide(policy: ScalingPolicy, observed: Observation, state: PanicState, now: float) -> Decision:
    target = policy.target_per_instance
    # Knative divides by at least one instance, so that scaling from zero can enter panic.
    ready = max(1, observed.ready_instances)
    max_up = math.ceil(policy.max_scale_up_rate * ready)
    max_down = math.floor(ready / policy.max_scale_down_rate)

    # Requests queue only when capacity is short: then the demand right now counts as the
    # panic signal at once, instead of after the 6 s panic window has filled with it.
    # (Knative ramps over the window; a step from 0 to 200 requests would wait ~5 s for
    # its fifth instance.)
    panic_input = observed.panic_concurrency
    if observed.queued:
        panic_input = max(panic_input, observed.current_concurrency)
    stable_wanted = math.ceil(round(observed.stable_concurrency / target, 6))
    panic_wanted = math.ceil(round(panic_input / target, 6))
    stable_count = min(max(stable_wanted, max_down), max_up)
    panic_count = min(max(panic_wanted, max_down), max_up)

    # Knative compares the unrounded demand: 2.0 x the ready instances' target by default.
    over_threshold = panic_input / target / ready >= policy.panic_threshold_percentage / 100
    panic_since = state.panic_since
    max_panic = state.max_panic_instances
    if over_threshold:
        panic_since = now
    elif panic_since is not None and now - panic_since >= policy.stable_window:
        panic_since, max_panic = None, 0

    if panic_since is not None:
        # In panic, only scale up: never below the most the panic asked for.
        max_panic = max(max_panic, panic_count, stable_count, observed.ready_instances)
        desired, mode = max_panic, PANIC
        reason = (
            f"{panic_input:.1f} concurrent over the {policy.panic_window:g}s panic window, "
            f"target {target:g} per instance"
        )
    else:
        desired, mode = stable_count, STABLE
        reason = (
            f"{observed.stable_concurrency:.1f} concurrent over the {policy.stable_window:g}s "
            f"window, target {target:g} per instance"
        )

    if desired == 0 and observed.ready_instances > 0:
        # Scale to zero only after a whole stable window without traffic plus the grace.
        idle_for = None if observed.last_active is None else now - observed.last_active
        needed_idle = policy.stable_window + policy.scale_to_zero_grace
        if idle_for is not None and idle_for < needed_idle:
            desired = 1
            reason += f"; idle {idle_for:.0f}s of {needed_idle:g}s before scaling to zero"
        else:
            reason += "; idle past the window and grace: scale to zero"
    if observed.current_concurrency > 0 and desired == 0:
        desired = 1  # a request is waiting: never decide zero under it
        reason += "; a request is waiting"

    clamped = min(max(desired, policy.min_scale), policy.max_scale)
    if clamped != desired:
        bound = "min" if clamped > desired else "max"
        reason += f"; clamped to {bound}-scale {clamped}"
    return Decision(clamped, mode, reason, PanicState(panic_since, max_panic), now)
