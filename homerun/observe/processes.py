"""CPU and memory of an instance: its process and every descendant (server workers)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import psutil

# Finding a process's descendants means reading the parent of every process on the machine
# (/proc/*/stat): done once per instance every this many seconds, or when one of them has
# gone, rather than at every sample. A worker started meanwhile counts from the next look.
TREE_SECONDS = 10.0


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float
    rss_bytes: int


class ProcessSampler:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # pid -> (the process and its descendants, when they were listed). psutil.Process
        # objects keep what they need to tell a reused pid from the same one.
        self._trees: dict[int, tuple[list[psutil.Process], float]] = {}

    def usage(self, pid: int) -> Usage | None:
        tree = self._tree(pid)
        if tree is None:
            return None
        cpu_seconds = 0.0
        rss_bytes = 0
        for member in tree:
            try:
                with member.oneshot():
                    times = member.cpu_times()
                    cpu_seconds += times.user + times.system
                    rss_bytes += member.memory_info().rss
            except psutil.Error:
                # A worker that exited: list the tree again next time.
                self._trees[pid] = (tree, float("-inf"))
                if member is tree[0]:
                    return None
        return Usage(cpu_seconds, rss_bytes)

    def forget(self, live_pids: set[int]) -> None:
        for pid in [pid for pid in self._trees if pid not in live_pids]:
            del self._trees[pid]

    def _tree(self, pid: int) -> list[psutil.Process] | None:
        now = self._clock()
        known = self._trees.get(pid)
        if known is not None and now - known[1] < TREE_SECONDS:
            return known[0]
        try:
            process = known[0][0] if known is not None else psutil.Process(pid)
            tree = [process, *process.children(recursive=True)]
        except psutil.Error:
            self._trees.pop(pid, None)
            return None
        self._trees[pid] = (tree, now)
        return tree
