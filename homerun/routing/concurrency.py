"""Observed concurrency of a revision: time-weighted averages over sliding windows.

The throttler tells `ConcurrencyMeter` every change of the number of requests in the
revision (in flight on an instance or waiting in its queue); the autoscaler's tick closes a
bucket and reads the averages. A change costs two float operations and no allocation.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass


@dataclass
class _Bucket:
    end: float
    duration: float
    area: float  # concurrency x seconds accumulated over the bucket


class ConcurrencyMeter:
    def __init__(self, now: float, history_seconds: float = 600.0) -> None:
        self.concurrency = 0
        # A new revision counts as active from its creation: its first instance then stays up
        # for a stable window plus the grace before it may scale to zero (Knative keeps a
        # new revision's initial scale the same way).
        self.last_active: float | None = now
        self._changed_at = now
        self._area = 0.0
        self._bucket_start = now
        self._history_seconds = history_seconds
        self._buckets: deque[_Bucket] = deque()

    def change(self, delta: int, now: float) -> None:
        """Requests in the revision went up or down by `delta` at `now`."""
        self._area += self.concurrency * (now - self._changed_at)
        self._changed_at = now
        self.concurrency += delta
        self.last_active = now

    def close_bucket(self, now: float) -> None:
        """End the running bucket at `now` (the autoscaler's tick does this)."""
        self._area += self.concurrency * (now - self._changed_at)
        self._changed_at = now
        if self.concurrency:
            self.last_active = now
        duration = now - self._bucket_start
        if duration > 0:
            self._buckets.append(_Bucket(now, duration, self._area))
        self._area = 0.0
        self._bucket_start = now
        while self._buckets and self._buckets[0].end < now - self._history_seconds:
            self._buckets.popleft()

    def average(self, window: float, now: float) -> float:
        """Mean concurrency over the last `window` seconds (or as much as has been seen).

        A bucket that straddles the window's start counts in proportion: with 1 s buckets
        and a 6 s window, the average is over exactly 6 s once 6 s have been observed.
        """
        start = now - window
        area = 0.0
        seen = 0.0
        for bucket in reversed(self._buckets):
            if bucket.end <= start:
                break
            bucket_start = bucket.end - bucket.duration
            if bucket_start >= start:
                area += bucket.area
                seen += bucket.duration
            else:
                share = (bucket.end - start) / bucket.duration
                area += bucket.area * share
                seen += bucket.end - start
        # The running bucket, up to `now` (in proportion, if it began before the window).
        running = now - max(self._bucket_start, start)
        if running > 0:
            running_area = self._area + self.concurrency * (now - self._changed_at)
            area += running_area * running / (now - self._bucket_start)
            seen += running
        return area / seen if seen > 0 else float(self.concurrency)
