"""The ramp's pure parts: which concurrency levels to load, and where throughput stops
growing (the knee). No I/O, no clock."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from homerun.model.inspection import RampStep

# Past the knee, throughput is within this share of the best seen: more requests in flight
# add only waiting.
KNEE_SHARE = 0.9
# A level whose requests fail more often than this is past what the instance can take.
MAX_ERROR_SHARE = 0.05


def ramp_levels(max_concurrency: int, capacities: Iterable[int] = ()) -> list[int]:
    """1, 2, 4, ... up to `max_concurrency`, plus the capacities the server declares or the
    inspector measured (gunicorn's 8 threads, anyio's 40), so the knee can land on them."""
    levels = {max_concurrency}
    level = 1
    while level < max_concurrency:
        levels.add(level)
        level *= 2
    levels.update(capacity for capacity in capacities if 1 <= capacity < max_concurrency)
    return sorted(levels)


def step_seconds(duration: float, levels: Sequence[int]) -> float:
    return duration / max(1, len(levels))


def knee(steps: Sequence[RampStep]) -> RampStep | None:
    """The lowest concurrency reaching KNEE_SHARE of the best throughput, among the levels
    that did not fail: the most an instance should be given at once."""
    healthy = [
        step for step in steps if step.requests and step.errors / step.requests <= MAX_ERROR_SHARE
    ]
    if not healthy:
        return None
    best = max(step.requests_per_second for step in healthy)
    if best <= 0:
        return None
    return min(
        (step for step in healthy if step.requests_per_second >= KNEE_SHARE * best),
        key=lambda step: step.concurrency,
    )


def instances_for(target_rps: float, knee_rps: float) -> int:
    """Instances that serve `target_rps` when each serves what it did at the knee."""
    return max(1, math.ceil(target_rps / knee_rps))


def percentile_ms(latencies: Sequence[float], quantile: float) -> float | None:
    """A latency percentile in ms (latencies in seconds, sorted or not)."""
    if not latencies:
        return None
    ordered = sorted(latencies)
    index = min(len(ordered) - 1, max(0, math.ceil(quantile * len(ordered)) - 1))
    return round(ordered[index] * 1000, 2)
