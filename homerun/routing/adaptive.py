"""`--concurrency auto`: each instance's concurrency limit follows its measured latency, in
the style of Envoy's adaptive concurrency filter (a gradient of the minimum latency over the
latest window's, plus a little headroom), between 1 and the revision's --concurrency.

A 40-thread app behind a limit of 80 holds 40 requests waiting inside it, where no new
instance can take them; with the limit near 40 they wait in the router's queue, where the
autoscaler sees them and the next free slot anywhere takes them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

# Requests per window: the limit moves once per window.
WINDOW = 10
# Latency this much over the minimum still counts as unqueued (Envoy's buffer is 25 %; a
# thread pool's queue shows as whole extra request times, so a tighter one suits it).
BUFFER = 0.1
# A window moves the limit by at most these factors.
MIN_GRADIENT, MAX_GRADIENT = 0.5, 2.0
# Requests that found at most this many in flight on their instance measure its unqueued
# latency (Envoy pins concurrency to 3 to measure it).
LOW_LOAD = 3


def next_limit(limit: float, min_latency: float, window_latency: float, max_limit: int) -> float:
    """Pure: the limit after a window whose mean latency was `window_latency`.

    Worked through for the FastAPI seed (1 s requests, 40 threads) behind 80: at 80 in
    flight a request takes 2 s, so the gradient is 1.1 / 2 = 0.55 and the limit falls to
    0.55 x 80 + sqrt(80) = 53; there requests take 53/40 = 1.33 s, and so on, to where
    1.1 x 40 + sqrt(limit) = limit: about 51 (about 11 requests queued in the app, not 40).
    """
    if window_latency <= 0:
        return limit
    gradient = min(MAX_GRADIENT, max(MIN_GRADIENT, min_latency * (1 + BUFFER) / window_latency))
    return float(min(max_limit, max(1.0, gradient * limit + math.sqrt(limit))))


@dataclass(eq=False)
class AdaptiveLimit:
    """One instance's limit and what it measured (the router's event loop only)."""

    max_limit: int
    limit: float = 0.0  # 0: start at max_limit
    min_latency: float | None = None
    _window_total: float = 0.0
    _window_count: int = 0
    _history: list[float] = field(default_factory=list)  # limits after each window, newest last

    def __post_init__(self) -> None:
        if not self.limit:
            self.limit = float(self.max_limit)

    @property
    def capacity(self) -> int:
        return max(1, round(self.limit))

    def sample(self, latency: float, in_flight_at_start: int) -> bool:
        """A request's latency (to its first byte); True when the limit changed."""
        if in_flight_at_start <= LOW_LOAD and (
            self.min_latency is None or latency < self.min_latency
        ):
            self.min_latency = latency
        self._window_total += latency
        self._window_count += 1
        if self._window_count < WINDOW:
            return False
        mean = self._window_total / self._window_count
        self._window_total, self._window_count = 0.0, 0
        if self.min_latency is None:
            return False  # nothing to compare with yet: a request at low load sets it
        before = self.capacity
        self.limit = next_limit(self.limit, self.min_latency, mean, self.max_limit)
        self._history = [*self._history[-99:], self.limit]
        return self.capacity != before
