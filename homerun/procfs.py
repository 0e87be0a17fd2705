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


def first_descendant(root: int) -> int | None:
    """A process `root` started (a sandbox's or a container's first process, inside what the
    process outside set up); None when it has none, or is gone."""
    return next((pid for pid in process_tree(root) if pid != root), None)


def _scanned_tree(root: int) -> Iterator[int]:
    try:
        process = psutil.Process(root)
        descendants = process.children(recursive=True)
    except psutil.Error:
        return
    yield root
    yield from (child.pid for child in descendants)


def marked_processes(member: int, mark: bytes) -> list[psutil.Process]:
    """The processes in the PID namespace that `member` is in whose environment holds `mark`
    (one NAME=VALUE entry), with their descendants (which may have cleared their own): what a
    command started with the mark set left running there. Empty when `member` is gone."""
    try:
        namespace = os.readlink(f"/proc/{member}/ns/pid")
    except OSError:
        return []
    found: dict[int, psutil.Process] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.readlink(f"/proc/{entry.name}/ns/pid") != namespace:
                continue
            environment = Path(f"/proc/{entry.name}/environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        if mark not in environment:
            continue
        for pid in process_tree(int(entry.name)):
            if pid not in found:
                try:
                    # psutil's Process refuses a signal once its pid names another process.
                    found[pid] = psutil.Process(pid)
                except psutil.Error:
                    continue
    return list(found.values())


def lock_holders(paths: list[Path]) -> set[int]:
    """Processes holding a POSIX or flock lock on any of `paths`, from /proc/locks (where the
    holder's pid, the device as hex major:minor and the inode name each lock)."""
    wanted = set()
    for path in paths:
        try:
            stat = os.stat(path)
        except OSError:
            continue
        wanted.add(f"{os.major(stat.st_dev):02x}:{os.minor(stat.st_dev):02x}:{stat.st_ino}")
    holders: set[int] = set()
    try:
        lines = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return holders
    for line in lines:
        fields = line.split()
        # "1: POSIX  ADVISORY  WRITE 1234 08:01:5678 0 EOF" ("->" marks a blocked waiter)
        if len(fields) >= 6 and fields[1] != "->" and fields[5] in wanted:
            try:
                holders.add(int(fields[4]))
            except ValueError:
                continue
    holders.discard(os.getpid())
    return holders


def process_name(pid: int) -> str:
    """The process's command name (/proc/PID/comm), or "?" once it is gone."""
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"
