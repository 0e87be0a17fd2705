"""What the runtime inspector costs, and how long the advisor takes to answer.

The same uvicorn app (tests/runtime/apps/inspected, its async `/health` and its sync
`/produtos?seconds=0`, which takes a thread of anyio's pool) is served twice side by side, once
with the inspector loaded (PYTHONPATH and HOMERUN_INSPECT, as homerun sets them) and once
without; each is loaded for a fixed time with a fixed number of keep-alive connections, in
alternating rounds, and the ratio of requests/s (on / off) is printed; the goal is >= 0.97.
Then the advisor's own time: reading and summing 64 snapshot files and advising, as
`homerun services advise` does. Usage: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

from _processes import (
    REPO_ROOT,
    RESULTS,
    core_count,
    free_port,
    git_commit,
    serving,
    utc_stamp,
)
from proxy import LoadResult, find_wrk, run_python_load, run_wrk

from homerun.build.capacity import command_capacity
from homerun.observe.advisor import advise
from homerun.observe.inspection import read_snapshots, summarize
from homerun.runtime.inspection import Inspector

APP = REPO_ROOT / "tests" / "runtime" / "apps" / "inspected"
PATHS = {"async": "/health", "sync": "/produtos?seconds=0"}


@contextmanager
def served(inspected: bool, scratch: Path) -> Iterator[int]:
    port = free_port()
    env = {**os.environ, "PORT": str(port)}
    env.pop("PYTHONPATH", None)
    if inspected:
        env.update(Inspector(scratch / "inspect").env("bench-00001-abc", {}))
    command = [sys.executable, "-m", "uvicorn", "main:app", "--port", str(port), "--no-access-log"]
    log = scratch / f"uvicorn-{'on' if inspected else 'off'}.log"
    with serving(command, f"http://127.0.0.1:{port}/health", "uvicorn", log, cwd=APP, env=env):
        yield port


def load(tool: str | None, url: str, seconds: float, connections: int, target: str) -> LoadResult:
    if tool:
        return run_wrk(tool, target, url, None, seconds, connections, 1)
    return run_python_load(target, url, None, seconds, connections)


def advisor_ms(scratch: Path, repeats: int = 20) -> float:
    """Median time to read 64 snapshots, sum them and advise, as `services advise` does."""
    folder = scratch / "advisor"
    folder.mkdir()
    snapshot = {
        "version": 1, "pid": 1, "port": 1, "written_at": 1.0, "server": "uvicorn",
        "workers": 1, "threads": 0, "busy": 0, "peak_busy": 0, "requests": 0,
        "saturated_seconds": 0.0,
        "loop": {"lag_ms_last": 1, "lag_ms_mean": 1, "lag_ms_max": 250, "samples": 600,
                 "stalled_seconds": 2.0, "threshold_ms": 100},
        "thread_pool": {"total": 40, "borrowed": 0, "peak_borrowed": 40, "waiting": 0,
                        "peak_waiting": 9, "full_seconds": 1.0},
        "blocking": [{"place": f"main.py:{line}", "function": "f", "count": 3, "worst_ms": 200,
                      "stack": ["main.py:1 f"] * 6} for line in range(20)],
    }  # fmt: skip
    for index in range(64):
        (folder / f"{index}.{index + 1}.json").write_text(
            json.dumps({**snapshot, "pid": index + 1})
        )
    declared = command_capacity(["uvicorn", "main:app"], {})
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        advise(
            service="bench",
            revision="bench-00001-abc",
            concurrency=80,
            declared=declared,
            inspection=summarize(read_snapshots(folder)),
        )
        times.append((time.perf_counter() - began) * 1000)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=2.0, help="seconds per load")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--no-install", action="store_true", help="never apt-get install wrk")
    parser.add_argument("--output", type=Path, default=None)
    arguments = parser.parse_args(argv)
    # Bounded: 2 targets x 2 paths x rounds x duration, at most a minute by default.
    if 4 * arguments.rounds * arguments.duration > 120:
        parser.error("--rounds x --duration too long: keep the run under two minutes")
    wrk = None if arguments.tool == "python" else find_wrk(not arguments.no_install)
    if arguments.tool == "wrk" and wrk is None:
        parser.error("wrk not found")
    results: dict[str, dict[str, list[LoadResult]]] = {"on": {}, "off": {}}
    with tempfile.TemporaryDirectory(prefix="homerun-bench-inspector-") as scratch_name:
        scratch = Path(scratch_name)
        with served(True, scratch) as on_port, served(False, scratch) as off_port:
            ports = {"on": on_port, "off": off_port}
            for round_number in range(arguments.rounds):
                order = ("on", "off") if round_number % 2 == 0 else ("off", "on")
                for kind, path in PATHS.items():
                    for target in order:
                        url = f"http://127.0.0.1:{ports[target]}{path}"
                        if round_number == 0:
                            load(wrk, url, 1.0, arguments.connections, target)  # warm-up
                        result = load(wrk, url, arguments.duration, arguments.connections, target)
                        results[target].setdefault(kind, []).append(result)
                        print(
                            f"round {round_number + 1} {kind:<5} inspector {target:<3} "
                            f"{result.requests_per_second:8.0f} req/s  p99 "
                            f"{result.latency_ms.get('p99', 0):6.1f} ms",
                            flush=True,
                        )
        advisor = advisor_ms(scratch)
    summary: dict[str, object] = {}
    print(f"\n{'endpoint':<8} {'off req/s':>10} {'on req/s':>10} {'on/off (median of rounds)':>26}")
    for kind in PATHS:
        off = statistics.median(r.requests_per_second for r in results["off"][kind])
        on = statistics.median(r.requests_per_second for r in results["on"][kind])
        # Each round loads both back to back: the median of the rounds' own ratios is less
        # swayed by what else the machine runs than the ratio of the medians.
        ratio = statistics.median(
            a.requests_per_second / b.requests_per_second
            for a, b in zip(results["on"][kind], results["off"][kind], strict=True)
        )
        summary[kind] = {"off_rps": round(off, 1), "on_rps": round(on, 1), "ratio": ratio}
        print(f"{kind:<8} {off:>10.0f} {on:>10.0f} {ratio:>7.3f}")
    print(f"\nadvisor: {advisor:.1f} ms to read 64 snapshots, sum them and advise (median)")
    output = arguments.output or RESULTS / f"inspector-{utc_stamp()}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "commit": git_commit(),
                "cores": core_count(),
                "tool": "wrk" if wrk else "python-httpx",
                "connections": arguments.connections,
                "duration_seconds": arguments.duration,
                "rounds": arguments.rounds,
                "summary": summary,
                "advisor_ms": round(advisor, 2),
                "runs": {
                    target: {kind: [asdict(r) for r in runs] for kind, runs in by_kind.items()}
                    for target, by_kind in results.items()
                },
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
