"""Which idle zygotes to stop so that the rest fit a memory budget: those quickest to make
again first, least recently used first among equals."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class IdleZygote:
    """A zygote none of whose instances runs or starts, as the decision sees it."""

    key: int  # whatever the caller finds it again by
    pss: int  # bytes: its private pages plus its share of the pages it shares
    last_used: int  # when it last forked or saw an instance exit; only the order matters
    base: int | None = None  # the key of the idle base it was forked from, if any
    # Forked from a base that stays: made again in tens of milliseconds (a fork and the app's
    # import), where a base or a zygote on its own takes an interpreter and every import.
    quick: bool = False


def evictions(idle: Sequence[IdleZygote], budget: int) -> list[int]:
    """The keys of the zygotes to stop, in order, so that the others' PSS adds up to `budget`
    at most: first the zygotes forked from a base (the next start of their revision forks a
    new one from the base), least recently used first; then bases and zygotes on their own,
    least recently used first. A base goes only after every zygote forked from it: they die
    with it, and it counts as used when any of them was.

    Say a budget of 64 MiB and, from least to most recently used, base P (20 MiB), a zygote C
    on its own (25 MiB), and zygotes A and B (10 MiB each) forked from P: 65 MiB in all. A
    goes (55 MiB left), though C was used longer ago: A's next start takes a fork from P and
    the app's import (some 30 ms), C's an interpreter and every import (some 300 ms).
    """
    total = sum(zygote.pss for zygote in idle)
    if total <= budget:
        return []
    children: dict[int, int] = {}
    recency = {zygote.key: zygote.last_used for zygote in idle}
    for zygote in idle:
        if zygote.base is not None and zygote.base in recency:
            children[zygote.base] = children.get(zygote.base, 0) + 1
            recency[zygote.base] = max(recency[zygote.base], zygote.last_used)
    # Ties go to the zygotes forked from a base before the base.
    order = sorted(
        idle,
        key=lambda zygote: (not zygote.quick, recency[zygote.key], zygote.key in children),
    )
    stopped = []
    for zygote in order:
        if total <= budget:
            break
        if children.get(zygote.key):
            continue  # a zygote forked from it is kept
        stopped.append(zygote.key)
        total -= zygote.pss
        if zygote.base in children:
            children[zygote.base] -= 1
    return stopped


def pss_bytes(pid: int) -> int | None:
    """A process's proportional set size: its private pages and its share of those it shares
    (with its base and the zygotes forked from it, or with other interpreters' file pages)."""
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
            for line in rollup:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
