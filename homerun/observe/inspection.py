"""Reading the runtime inspector's snapshots (HOMERUN_HOME/inspect/REVISION/PORT.PID.json)
and summing them per revision."""

from __future__ import annotations

import itertools
import os
import stat
from collections.abc import Iterable
from pathlib import Path

from pydantic import ValidationError

from homerun.model.inspection import (
    BlockingPlace,
    Capacity,
    ProcessSnapshot,
    RevisionInspection,
)

# An app writes these files itself: bounded in size and number (describe reads them on the
# daemon's loop: 64 files of 64 KiB at worst, where a real one is some 2 KiB).
MAX_SNAPSHOT_BYTES = 64 * 1024
MAX_SNAPSHOTS = 64
MAX_PLACES = 20
MAX_LISTED = 1024


def read_snapshots(folder: Path) -> list[ProcessSnapshot]:
    """Blocking: the newest snapshots of a revision's processes; unreadable ones skipped."""
    try:
        with os.scandir(folder) as listing:
            # A folder an app filled with files is listed only this far.
            entries = list(itertools.islice(listing, MAX_LISTED))
    except OSError:
        return []
    entries = [entry for entry in entries if entry.name.endswith(".json")]
    entries.sort(key=_mtime, reverse=True)
    snapshots = []
    for entry in entries[:MAX_SNAPSHOTS]:
        try:
            data = _read_regular_file(entry.path)
            if data is not None:
                snapshots.append(ProcessSnapshot.model_validate_json(data))
        except (OSError, ValidationError, ValueError):
            continue
    return snapshots


def _read_regular_file(path: str) -> bytes | None:
    """The file's bytes if it is a regular file of at most MAX_SNAPSHOT_BYTES: never through a
    symlink, and never blocking on a FIFO or a device the app put there instead."""
    descriptor = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    try:
        info = os.fstat(descriptor)
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_SNAPSHOT_BYTES:
            return None
        with os.fdopen(descriptor, "rb", closefd=False) as file:
            data = file.read(MAX_SNAPSHOT_BYTES + 1)
        return data if len(data) <= MAX_SNAPSHOT_BYTES else None
    finally:
        os.close(descriptor)


def _mtime(entry: os.DirEntry[str]) -> float:
    try:
        return entry.stat(follow_symlinks=False).st_mtime
    except OSError:
        return 0.0


def summarize(snapshots: Iterable[ProcessSnapshot]) -> RevisionInspection | None:
    """Pure: one revision's processes summed (None when none reported)."""
    processes = list(snapshots)
    if not processes:
        return None
    loops = [process.loop for process in processes if process.loop is not None]
    pools = [process.thread_pool for process in processes if process.thread_pool is not None]
    places: dict[tuple[str, str], BlockingPlace] = {}
    for process in processes:
        for place in process.blocking:
            key = (place.place, place.function)
            seen = places.get(key)
            places[key] = (
                place
                if seen is None
                else seen.model_copy(
                    update={
                        "count": seen.count + place.count,
                        "worst_ms": max(seen.worst_ms, place.worst_ms),
                    }
                )
            )
    samples = sum(loop.samples for loop in loops)
    return RevisionInspection(
        processes=len(processes),
        capacity=_measured_capacity(processes),
        requests=sum(process.requests for process in processes),
        peak_busy=max(process.peak_busy for process in processes),
        saturated_seconds=round(sum(process.saturated_seconds for process in processes), 3),
        loop_lag_ms_mean=round(sum(loop.lag_ms_mean * loop.samples for loop in loops) / samples, 2)
        if samples
        else None,
        loop_lag_ms_max=max((loop.lag_ms_max for loop in loops), default=None),
        loop_stalled_seconds=round(sum(loop.stalled_seconds for loop in loops), 3),
        pool_total=max((pool.total for pool in pools), default=None),
        pool_peak_borrowed=max((pool.peak_borrowed for pool in pools), default=0),
        pool_peak_waiting=max((pool.peak_waiting for pool in pools), default=0),
        pool_full_seconds=round(sum(pool.full_seconds for pool in pools), 3),
        blocking=sorted(places.values(), key=lambda place: -place.count)[:MAX_PLACES],
    )


def _measured_capacity(processes: list[ProcessSnapshot]) -> Capacity | None:
    newest = max(processes, key=lambda process: process.written_at)
    if newest.server == "gunicorn" and newest.threads:
        return Capacity(
            server="gunicorn",
            workers=newest.workers,
            threads=newest.threads,
            requests_at_once=newest.workers * newest.threads,
            source="measured",
        )
    if newest.server == "uvicorn":
        pool = newest.thread_pool.total if newest.thread_pool else None
        return Capacity(
            server="uvicorn",
            workers=newest.workers,
            threads=None,
            requests_at_once=None,
            sync_pool=pool,
            source="measured",
        )
    return None
