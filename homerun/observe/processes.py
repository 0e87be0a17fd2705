"""CPU and memory of an instance: its process and every descendant (server workers)."""

from __future__ import annotations

from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float
    rss_bytes: int


class ProcessSampler:
    def __init__(self) -> None:
        # psutil.Process objects keep what they need to tell a reused pid from the same one.
        self._known: dict[int, psutil.Process] = {}

    def usage(self, pid: int) -> Usage | None:
        process = self._known.get(pid)
        try:
            if process is None:
                process = self._known[pid] = psutil.Process(pid)
            tree = [process, *process.children(recursive=True)]
        except psutil.Error:
            self._known.pop(pid, None)
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
                continue  # a worker that exited meanwhile
        return Usage(cpu_seconds, rss_bytes)

    def forget(self, live_pids: set[int]) -> None:
        for pid in [pid for pid in self._known if pid not in live_pids]:
            del self._known[pid]
