"""Reading a big log does not stop the router: its files are read in a thread, from the end."""

from __future__ import annotations

import json
import statistics
import threading
import time
from pathlib import Path

import pytest

from homerun.client import Client

from .harness import APPS, Platform, describe

pytestmark = pytest.mark.e2e

LOG_BYTES = 110 * 1024 * 1024


def write_big_log(path: Path) -> None:
    """110 MB of INFO entries from last year, with one ERROR entry at the very start."""
    path.parent.mkdir(parents=True, exist_ok=True)
    line = (
        json.dumps(
            {
                "severity": "INFO",
                "message": "x" * 400,
                "timestamp": "2025-01-01T00:00:00.000000Z",
                "service": "loglot",
                "logName": "stdout",
            }  # fmt: skip
        ).encode()
        + b"\n"
    )
    first = (
        json.dumps(
            {
                "severity": "ERROR",
                "message": "the oldest error",
                "service": "loglot",
                "timestamp": "2025-01-01T00:00:00.000000Z",
                "logName": "stderr",
            }  # fmt: skip
        ).encode()
        + b"\n"
    )
    with open(path, "wb") as file:
        file.write(first)
        chunk = line * 1024
        for _ in range(LOG_BYTES // len(chunk) + 1):
            file.write(chunk)


def test_reading_a_110_mb_log_keeps_the_router_answering(own_platform: Platform) -> None:
    platform = own_platform
    write_big_log(platform.home / "logs" / "loglot.jsonl")
    platform.deploy_ok("loglot", APPS / "whoami", "--min-instances", "1")
    latencies: list[float] = []
    stop = threading.Event()

    def load() -> None:
        with platform.client("loglot", timeout=10) as client:
            deadline = time.monotonic() + 60  # bounded whatever happens
            for _ in range(100_000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                started = time.monotonic()
                assert client.get("/").status_code == 200
                latencies.append(time.monotonic() - started)
                time.sleep(0.005)

    loader = threading.Thread(target=load)
    loader.start()
    admin = Client(platform.home / "admin.sock")
    try:
        time.sleep(0.5)
        newest = platform.run("logs", "read", "loglot", "--limit", "20", "--format", "json")
        # The daemon's read of the whole file, timed without a CLI's start.
        started = time.monotonic()
        errors = admin.logs("loglot", 5, min_severity="ERROR")
        whole_read = time.monotonic() - started
        time.sleep(0.5)
    finally:
        stop.set()
        loader.join(timeout=30)
        admin.close()
    assert newest.returncode == 0, describe(newest)
    assert [entry["message"] for entry in errors] == ["the oldest error"]  # all 110 MB read
    assert len(latencies) > 20
    # Read on the event loop, the file would hold a request in flight for about the whole read.
    # Read in a thread that kept the GIL, it did nearly as badly: each block's read() let the GIL
    # go and took it straight back, so the loop waited 60-140 ms in 250-400 ms of reading. The
    # reader now hands the GIL over every 2 ms: the worst request waits a few ms more than the
    # typical one (whose own time is mostly the app's: whoami writes its head and body apart).
    typical = statistics.median(latencies)
    assert max(latencies) - typical < whole_read / 5, (
        f"worst {max(latencies):.3f}s, median {typical:.3f}s over {len(latencies)} requests; "
        f"the read took {whole_read:.3f}s"
    )
