"""The ramp's levels and its knee (pure)."""

from __future__ import annotations

import pytest

from homerun.model.inspection import RampResult, RampStep
from homerun.observe.advisor import advise
from homerun.observe.ramp import instances_for, knee, percentile_ms, ramp_levels


def step(concurrency: int, rps: float, errors: int = 0, requests: int = 100) -> RampStep:
    return RampStep(
        concurrency=concurrency,
        seconds=2.0,
        requests=requests,
        errors=errors,
        requests_per_second=rps,
        p50_ms=1000.0,
        p99_ms=1000.0 * max(1, concurrency / 40),
    )


def test_levels_double_up_to_the_maximum_and_include_the_capacities() -> None:
    assert ramp_levels(80) == [1, 2, 4, 8, 16, 32, 64, 80]
    assert ramp_levels(80, [40, 8, 200, 0]) == [1, 2, 4, 8, 16, 32, 40, 64, 80]
    assert ramp_levels(1) == [1]


def test_the_knee_is_where_throughput_stops_growing() -> None:
    # The FastAPI seed's 1 s sync endpoint: anyio's 40 threads cap it at 40 req/s.
    steps = [step(1, 1), step(8, 8), step(32, 31.5), step(40, 39.6), step(64, 40), step(80, 40)]
    best = knee(steps)
    assert best is not None and best.concurrency == 40


def test_levels_that_fail_are_not_the_knee() -> None:
    steps = [step(1, 10), step(2, 19), step(4, 38, errors=30)]
    best = knee(steps)
    assert best is not None and best.concurrency == 2
    assert knee([step(1, 0, errors=100)]) is None
    assert knee([]) is None


@pytest.mark.parametrize(("target", "rps", "instances"), [(200, 40, 5), (201, 40, 6), (1, 40, 1)])
def test_instances_for_a_target(target: float, rps: float, instances: int) -> None:
    assert instances_for(target, rps) == instances


def test_percentiles() -> None:
    assert percentile_ms([], 0.5) is None
    assert percentile_ms([0.003, 0.001, 0.002], 0.5) == 2.0
    assert percentile_ms([0.001] * 99 + [1.0], 0.99) == 1.0


def test_the_ramps_knee_is_the_advice_with_instances_for_the_target() -> None:
    steps = [step(1, 1), step(32, 31.5), step(40, 39.6), step(64, 40)]
    ramp = RampResult(steps=steps, knee=40, knee_rps=39.6, instance="s-1-advise-ab", seconds=16)
    advice = advise(
        service="s",
        revision="s-1",
        concurrency=80,
        declared=None,
        inspection=None,
        ramp=ramp,
        target_rps=200,
    )
    assert advice.recommended_concurrency == 40
    assert advice.instances_for_target == 6
    [finding] = [f for f in advice.findings if f.kind == "ramp"]
    assert "39.6 req/s at 40 request(s) in flight" in finding.message
    assert "at 64 in flight it served 40 req/s" in finding.message


def test_below_one_cpu_a_knee_above_one_asks_for_a_whole_cpu_too() -> None:
    steps = [step(1, 1), step(4, 3.9), step(8, 4)]
    ramp = RampResult(steps=steps, knee=4, knee_rps=3.9, instance="s-1-advise-ab", seconds=12)
    advice = advise(
        service="s",
        revision="s-1",
        concurrency=1,
        declared=None,
        inspection=None,
        ramp=ramp,
        cpu="500m",
    )
    # `--concurrency 4` alone would be refused at half a CPU, as on Cloud Run.
    assert advice.recommended_concurrency == 4 and advice.recommended_cpu == "1"
    [finding] = [f for f in advice.findings if f.kind == "cpu-below-one"]
    assert finding.message == (
        "at --cpu 500m, below one CPU, an instance takes one request at a time, as on Cloud "
        "Run: --concurrency 4 needs --cpu 1 or more."
    )
    whole = advise(
        service="s", revision="s-1", concurrency=1, declared=None, inspection=None, ramp=ramp
    )
    assert whole.recommended_cpu is None
