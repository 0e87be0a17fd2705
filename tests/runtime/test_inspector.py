"""The runtime inspector inside a real uvicorn process: event-loop lag, the blocking call's
place (logged once, then counted), anyio's thread pool, written where the daemon reads it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from fakes import free_port

from homerun.model.inspection import RevisionInspection
from homerun.observe.inspection import read_snapshots, summarize
from homerun.runtime.inspection import Inspector

APP = Path(__file__).parent / "apps" / "inspected"


class Served:
    def __init__(self, process: subprocess.Popen[bytes], port: int, folder: Path, log: Path):
        self.process = process
        self.port = port
        self.folder = folder
        self.log = log

    def get(self, path: str, **params: float) -> httpx.Response:
        with httpx.Client(trust_env=False, timeout=30) as client:
            return client.get(f"http://127.0.0.1:{self.port}{path}", params=params)

    def summary(self, ready: object = None, timeout: float = 10.0) -> RevisionInspection:
        """The snapshot once `ready(summary)` holds (the app writes it every second)."""
        deadline = time.monotonic() + timeout
        while True:
            summary = summarize(read_snapshots(self.folder))
            if summary is not None and (ready is None or ready(summary)):  # type: ignore[operator]
                return summary
            if time.monotonic() > deadline:
                pytest.fail(f"no such snapshot in {timeout}s: {summary}\n{self.log.read_text()}")
            time.sleep(0.1)


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    port = free_port()
    inspector = Inspector(tmp_path / "inspect", block_ms=100)
    env = {
        **os.environ,
        "PORT": str(port),
        **inspector.env("rev-00001-abc", {"PYTHONPATH": ""}),
    }
    log = tmp_path / "app.log"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "main:app", "--port", str(port)],
            cwd=APP,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"uvicorn did not start:\n{log.read_text()}")
                time.sleep(0.05)
        yield Served(process, port, inspector.revision_folder("rev-00001-abc"), log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_a_blocking_call_in_a_coroutine_is_placed_logged_once_and_counted(served: Served) -> None:
    for _ in range(4):
        assert served.get("/lookup", seconds=0.3).status_code == 200
    summary = served.summary(lambda s: s.blocking and s.blocking[0].count >= 4)
    [place] = summary.blocking
    assert (place.place, place.function) == ("main.py:12", "legacy_lookup")
    # How late the probe woke: the stall less the part of it the probe slept through anyway.
    assert 200 <= place.worst_ms <= 1000
    assert place.stack[:2] == ["main.py:12 legacy_lookup", "main.py:17 lookup"]
    assert summary.loop_lag_ms_max is not None and summary.loop_lag_ms_max >= 200
    warnings = [
        json.loads(line)
        for line in served.log.read_text().splitlines()
        if line.startswith("{") and '"WARNING"' in line
    ]
    assert len(warnings) == 1, warnings  # once per place, however many stalls
    assert warnings[0]["inspector"] == {
        "kind": "blocking-call",
        "place": "main.py:12",
        "function": "legacy_lookup",
    }
    assert "main.py:12 in legacy_lookup" in warnings[0]["message"]


def test_sync_endpoints_fill_anyios_40_threads(served: Served) -> None:
    # One client shared by the threads, its pool big enough: 80 requests of 1 s start within
    # that second even on a busy machine, so more than 40 overlap.
    with (
        httpx.Client(
            base_url=f"http://127.0.0.1:{served.port}",
            trust_env=False,
            timeout=60,
            limits=httpx.Limits(max_connections=100),
        ) as client,
        ThreadPoolExecutor(80) as pool,
    ):
        statuses = list(
            pool.map(lambda _: client.get("/produtos", params={"seconds": 1.0}).status_code,
                     range(80))
        )  # fmt: skip
    assert set(statuses) == {200}
    summary = served.summary(lambda s: s.pool_peak_waiting > 0)
    assert summary.pool_total == 40 and summary.pool_peak_borrowed == 40
    assert summary.pool_full_seconds > 0
    assert summary.capacity is not None and summary.capacity.sync_pool == 40
    assert not summary.blocking  # threads, not the loop, waited


def test_an_idle_app_has_no_lag_and_no_blocking(served: Served) -> None:
    assert served.get("/health").status_code == 200
    summary = served.summary(lambda s: s.loop_lag_ms_mean is not None)
    assert not summary.blocking
    assert summary.loop_lag_ms_mean is not None and summary.loop_lag_ms_mean < 50
