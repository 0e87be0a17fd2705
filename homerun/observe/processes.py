"""CPU and memory of an instance: its process and every descendant (server workers)."""

from __future__ import annotations

from dataclasses import dataclass

import psutil

from homerun.procfs import process_tree


@dataclass(frozen=True)
class Usage:
    cpu_seconds: float
    rss_bytes: int


class ProcessSampler:
    """Sums an instance's process tree as it is at each sample: a worker started since the
    last one counts at once; one that exited leaves the memory figure, while its CPU time stays
    counted through its parent (which reaped it)."""

    def usage(self, pid: int) -> Usage | None:
        """None when the instance's main process is gone."""
        cpu_seconds = 0.0
        rss_bytes = 0
        found = False
        for member in process_tree(pid):
            try:
                process = psutil.Process(member)
                with process.oneshot():
                    times = process.cpu_times()
                    rss = process.memory_info().rss
            except psutil.Error:
                if member == pid:
                    return None
                continue  # a worker that exited meanwhile
            # With the time of children it has reaped: a worker that exits takes its CPU time
            # out of the tree, and its parent's count takes it in, so the total never drops.
            cpu_seconds += times.user + times.system + times.children_user + times.children_system
            rss_bytes += rss
            found = True
        return Usage(cpu_seconds, rss_bytes) if found else None
