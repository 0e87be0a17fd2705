"""The KPA decision, table-driven with simulated time: no clock, no processes."""

from dataclasses import replace

import pytest

from homerun.scaling.autoscaler import (
    PANIC,
    STABLE,
    Decision,
    Observation,
    PanicState,
    ScalingPolicy,
    decide,
)

DEFAULT = ScalingPolicy()  # concurrency 80, target 60 % = 48 per instance


def observe(
    stable: float = 0,
    panic: float | None = None,
    current: float | None = None,
    queued: int = 0,
    ready: int = 1,
    last_active: float | None = 0.0,
) -> Observation:
    return Observation(
        stable_concurrency=stable,
        panic_concurrency=stable if panic is None else panic,
        current_concurrency=(stable if panic is None else panic) if current is None else current,
        queued=queued,
        ready_instances=ready,
        last_active=last_active,
    )


@pytest.mark.parametrize(
    ("policy", "observation", "now", "desired", "mode"),
    [
        # A step from 0 to 200 concurrent requests at concurrency 80: all queued, no instance.
        (DEFAULT, observe(0, 0, current=200, queued=200, ready=0), 0, 5, PANIC),
        # The same step seen once it fills the panic window with one instance up.
        (DEFAULT, observe(20, 200, ready=1), 10, 5, PANIC),
        # Steady 96 concurrent = 2 instances of 48, no panic.
        (DEFAULT, observe(96, 96, ready=2), 100, 2, STABLE),
        (DEFAULT, observe(97, 97, ready=3), 100, 3, STABLE),
        # Scale-down rate 2: from 10 instances at most to 5 in one decision.
        (DEFAULT, observe(1, 1, ready=10), 100, 5, STABLE),
        # Scale-up rate bounds a stable jump: rate 2 from 1 instance allows 2.
        (replace(DEFAULT, max_scale_up_rate=2), observe(480, 0, ready=1), 100, 2, STABLE),
        # Clamping by min-scale and max-scale.
        (replace(DEFAULT, min_scale=3), observe(0, 0, ready=3, last_active=None), 999, 3, STABLE),
        (replace(DEFAULT, max_scale=4), observe(1000, 1000, ready=4), 100, 4, PANIC),
        # containerConcurrency 1: one request per instance, target 0.6 -> 1 instance each.
        (replace(DEFAULT, container_concurrency=1), observe(3, 3, ready=3), 100, 5, STABLE),
        # An explicit target annotation replaces concurrency x utilization.
        (replace(DEFAULT, target=10), observe(30, 30, ready=3), 100, 3, STABLE),
    ],
)
def test_decisions(
    policy: ScalingPolicy, observation: Observation, now: float, desired: int, mode: str
) -> None:
    decision = decide(policy, observation, PanicState(), now)
    assert (decision.desired, decision.mode) == (desired, mode), decision.reason


def test_panic_only_scales_up_and_ends_a_stable_window_after_the_surge() -> None:
    state = PanicState()
    # t=0: 200 concurrent on one instance -> panic, 5 instances.
    first = decide(DEFAULT, observe(20, 200, ready=1), state, now=0)
    assert (first.desired, first.mode) == (5, PANIC)
    # t=30: the surge is gone from the panic window, but panic holds and does not scale down.
    held = decide(DEFAULT, observe(40, 10, ready=5), first.state, now=30)
    assert (held.desired, held.mode) == (5, PANIC)
    # t=59.9: still within a stable window of the last time over the threshold.
    still = decide(DEFAULT, observe(10, 10, ready=5), held.state, now=59.9)
    assert still.mode == PANIC
    # t=60: a full stable window below the threshold -> stable mode, rate-limited scale-down.
    calm = decide(DEFAULT, observe(10, 10, ready=5), still.state, now=60)
    assert (calm.desired, calm.mode) == (2, STABLE)
    assert calm.state == PanicState()


def test_panic_is_extended_while_over_threshold() -> None:
    decision = decide(DEFAULT, observe(20, 200, ready=1), PanicState(), now=0)
    decision = decide(DEFAULT, observe(100, 500, ready=5), decision.state, now=50)
    assert decision.desired == 11 and decision.state.panic_since == 50
    decision = decide(DEFAULT, observe(10, 10, ready=11), decision.state, now=100)
    assert decision.mode == PANIC and decision.desired == 11  # 50 s since the last surge


def test_scale_to_zero_only_after_window_plus_grace() -> None:
    idle = observe(0, 0, ready=1, last_active=0)
    assert decide(DEFAULT, idle, PanicState(), now=60).desired == 1
    assert decide(DEFAULT, idle, PanicState(), now=89.9).desired == 1
    zero = decide(DEFAULT, idle, PanicState(), now=90)
    assert zero.desired == 0 and "scale to zero" in zero.reason
    short = replace(DEFAULT, stable_window=6, scale_to_zero_grace=0)
    assert decide(short, idle, PanicState(), now=6).desired == 0


def test_min_instances_keep_warm_through_idle() -> None:
    warm = replace(DEFAULT, min_scale=1)
    decision = decide(warm, observe(0, 0, ready=1, last_active=0), PanicState(), now=10_000)
    assert decision.desired == 1 and "min-scale" in decision.reason


def test_waiting_request_is_never_scaled_to_zero() -> None:
    waiting = observe(0, 0, current=1, queued=1, ready=0, last_active=None)
    assert decide(DEFAULT, waiting, PanicState(), now=1000).desired == 1


def test_decision_explains_itself() -> None:
    decision: Decision = decide(DEFAULT, observe(96, 96, ready=2), PanicState(), now=5)
    assert decision.describe() == (
        "2 instance(s), stable: 96.0 concurrent over the 60s window, target 48 per instance"
    )


def test_simulated_step_load_scales_out_then_back_to_zero() -> None:
    """Walk 5 simulated minutes in 2 s ticks: 0 -> 200 clients for 60 s -> idle."""
    policy = replace(DEFAULT, stable_window=60, scale_to_zero_grace=30)
    state = PanicState()
    ready = 0
    history = []
    last_active = None
    for tick in range(150):
        now = tick * 2.0
        load = 200.0 if 10 <= now < 70 else 0.0
        if load:
            last_active = now
        # Averages of a square wave, as a meter would report them.
        stable = 200 * max(0.0, min(now, 70) - max(now - 60, 10)) / 60 if now >= 10 else 0.0
        panic = 200 * max(0.0, min(now, 70) - max(now - 6, 10)) / 6 if now >= 10 else 0.0
        queued = int(max(0.0, load - ready * 80))
        decision = decide(
            policy,
            Observation(stable, panic, load, queued, ready, last_active),
            state,
            now,
        )
        state = decision.state
        ready = decision.desired  # instances start instantly in this simulation
        history.append((now, ready, decision.mode))
    peak = max(count for _, count, _ in history)
    assert peak == 5
    assert next(now for now, count, _ in history if count == 5) == 10.0  # at the step
    assert history[-1][1] == 0
    first_zero = next(now for now, count, _ in history if now > 70 and count == 0)
    assert first_zero >= 70 + 60 + 30 - 2
