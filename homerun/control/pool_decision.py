"""Which of a worker pool's instances to start or stop now: a pure function of the pool's
instance count, each slot's state and the time, as a Kubernetes Deployment's kubelet restarts
containers (CrashLoopBackOff: a crashed instance waits 10 s, then 20 s... up to 5 min, and the
wait starts over once an instance ran 10 min)."""

from __future__ import annotations

from dataclasses import dataclass

BACKOFF_SECONDS = 10.0
MAX_BACKOFF_SECONDS = 300.0
STABLE_SECONDS = 600.0  # an instance that ran this long resets its slot's backoff


@dataclass(frozen=True)
class Slot:
    """One instance of the pool, by index: running, or waiting to start again."""

    running: bool
    started_at: float | None = None  # of the running instance (or the last one)
    exited_at: float | None = None  # when the last instance ended; None: never started
    crashes: int = 0  # instances in a row that ended before STABLE_SECONDS


@dataclass(frozen=True)
class PoolDecision:
    start: tuple[int, ...]  # slot indexes to start now
    stop: tuple[int, ...]  # slots past the instance count
    wake_at: float | None  # when a waiting slot may start


def restart_delay(crashes: int, backoff: float = BACKOFF_SECONDS) -> float:
    """10 s after the first crash in a row, doubling, at most 5 min."""
    if crashes <= 0:
        return 0.0
    return min(backoff * 2 ** (crashes - 1), MAX_BACKOFF_SECONDS)


def crashes_after_exit(slot: Slot, now: float) -> int:
    """The slot's crash count once its instance ended at `now`."""
    ran = now - slot.started_at if slot.started_at is not None else 0.0
    return 0 if ran >= STABLE_SECONDS else slot.crashes + 1


def decide(
    instances: int, slots: list[Slot], now: float, backoff: float = BACKOFF_SECONDS
) -> PoolDecision:
    start: list[int] = []
    waits: list[float] = []
    for index, slot in enumerate(slots[:instances]):
        if slot.running:
            continue
        if slot.exited_at is None:
            start.append(index)
            continue
        ready_at = slot.exited_at + restart_delay(slot.crashes, backoff)
        if ready_at <= now:
            start.append(index)
        else:
            waits.append(ready_at)
    start.extend(range(len(slots), instances))  # slots the pool grew by
    stop = tuple(index for index, slot in enumerate(slots) if index >= instances and slot.running)
    return PoolDecision(tuple(start), stop, min(waits) if waits else None)
