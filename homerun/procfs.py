"""What /proc says about a process tree (Linux)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import psutil


def process_tree(root: int) -> Iterator[int]:
    """`root` and its descendants (a server's workers), from /proc/PID/task/TID/children.

    Each process's children are read from its own threads' lists, not by reading the parent
    of every process on the machine. A process that exits meanwhile is skipped. A kernel
    without those lists (CONFIG_PROC_CHILDREN) gets psutil's scan of every process instead.
    """
    if os.path.isdir(f"/proc/{root}") and not os.path.exists(f"/proc/{root}/task/{root}/children"):
        yield from _scanned_tree(root)
        return
    pending, seen = [root], set()
    while pending:
        pid = pending.pop()
        if pid in seen:
            continue
        seen.add(pid)
        yield pid
        try:
            tasks = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                children = Path(f"/proc/{pid}/task/{task}/children").read_text().split()
            except OSError:
                continue
            pending.extend(int(child) for child in children)


def _scanned_tree(root: int) -> Iterator[int]:
    try:
        process = psutil.Process(root)
        descendants = process.children(recursive=True)
    except psutil.Error:
        return
    yield root
    yield from (child.pid for child in descendants)
