"""Reading a big log does not stop the router: its files are read in a thread, from the end."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

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
    try:
        time.sleep(0.5)
        newest = platform.run("logs", "read", "loglot", "--limit", "20", "--format", "json")
        errors = platform.run(
            "logs", "read", "loglot", "--severity", "ERROR", "--limit", "5", "--format", "json"
        )
        time.sleep(0.5)
    finally:
        stop.set()
        loader.join(timeout=30)
    assert newest.returncode == 0, describe(newest)
    assert errors.returncode == 0, describe(errors)
    assert "the oldest error" in errors.stdout  # the whole 110 MB was read
    assert len(latencies) > 20
    assert max(latencies) < 0.25, f"max {max(latencies):.3f}s over {len(latencies)} requests"
