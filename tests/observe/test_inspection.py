"""Reading the inspector's snapshots (written by the app: untrusted) and summing them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from homerun.observe.inspection import MAX_SNAPSHOT_BYTES, read_snapshots, summarize


def snapshot(**fields: Any) -> dict[str, Any]:
    values: dict[str, Any] = {
        "version": 1,
        "pid": 100,
        "port": 9000,
        "written_at": 1.0,
        "server": "uvicorn",
        "workers": 1,
        "threads": 0,
        "busy": 0,
        "peak_busy": 0,
        "requests": 0,
        "saturated_seconds": 0.0,
        "loop": {
            "lag_ms_last": 1.0,
            "lag_ms_mean": 2.0,
            "lag_ms_max": 250.0,
            "samples": 10,
            "stalled_seconds": 0.5,
            "threshold_ms": 100.0,
        },
        "thread_pool": {
            "total": 40,
            "borrowed": 3,
            "peak_borrowed": 40,
            "waiting": 0,
            "peak_waiting": 12,
            "full_seconds": 1.5,
        },
        "blocking": [
            {"place": "main.py:11", "function": "legacy_lookup", "count": 4, "worst_ms": 210.0}
        ],
    }
    values.update(fields)
    return values


def test_processes_are_summed_and_places_merged(tmp_path: Path) -> None:
    (tmp_path / "9000.100.json").write_text(json.dumps(snapshot()))
    (tmp_path / "9001.101.json").write_text(
        json.dumps(
            snapshot(
                pid=101,
                port=9001,
                written_at=2.0,
                loop={**snapshot()["loop"], "lag_ms_mean": 4.0, "lag_ms_max": 300.0},
            )
        )
    )
    summary = summarize(read_snapshots(tmp_path))
    assert summary is not None
    assert summary.processes == 2
    assert summary.loop_lag_ms_mean == 3.0 and summary.loop_lag_ms_max == 300.0
    assert summary.pool_total == 40 and summary.pool_peak_waiting == 12
    assert summary.pool_full_seconds == 3.0
    [place] = summary.blocking
    assert (place.place, place.function, place.count, place.worst_ms) == (
        "main.py:11",
        "legacy_lookup",
        8,
        210.0,
    )
    assert summary.capacity is not None and summary.capacity.sync_pool == 40


def test_gunicorn_workers_give_the_measured_capacity(tmp_path: Path) -> None:
    worker = snapshot(
        server="gunicorn",
        worker_class="ThreadWorker",
        workers=2,
        threads=8,
        requests=30,
        peak_busy=8,
        saturated_seconds=2.0,
        loop=None,
        thread_pool=None,
        blocking=[],
    )
    (tmp_path / "9000.100.json").write_text(json.dumps(worker))
    summary = summarize(read_snapshots(tmp_path))
    assert summary is not None and summary.capacity is not None
    assert summary.capacity.requests_at_once == 16 and summary.capacity.source == "measured"
    assert summary.requests == 30 and summary.saturated_seconds == 2.0


def test_hostile_snapshots_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "1.json").write_text("{not json")
    (tmp_path / "2.json").write_text(json.dumps(snapshot(workers=-5)))
    (tmp_path / "3.json").write_text(json.dumps(snapshot(blocking=[{"place": "x" * 10_000}])))
    (tmp_path / "4.json").write_bytes(b" " * (MAX_SNAPSHOT_BYTES + 1))
    (tmp_path / "5.json").symlink_to("/etc/passwd")
    (tmp_path / "6.json").mkdir()
    os.mkfifo(tmp_path / "7.json")  # opening it to read would wait for a writer forever
    assert read_snapshots(tmp_path) == []
    assert summarize([]) is None
    assert read_snapshots(tmp_path / "missing") == []
