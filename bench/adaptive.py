"""Fixed --concurrency 80 vs --concurrency auto, the seed's FastAPI app at twice its capacity.

The seed's `/produtos` (sleep(1) in anyio's 40 threads) gets 80 closed-loop clients: twice
what one instance serves at once. Two services of one daemon, one after the other in the
same run: `fixed` (--concurrency 80) and `auto` (--concurrency auto: the router adapts each
instance's limit to its latency, routing/adaptive.py), each on one warm instance and no room
for a second. Printed: requests/s, p50/p99, and how many requests waited inside the
instance for a thread (the runtime inspector's count) against in the router's queue.
Usage: bench/README.md; writes bench/results/adaptive-STAMP.json.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from _processes import RESULTS, WORK, core_count, git_commit, utc_stamp
from autoscale import Homerun, run_clients

CLIENTS = 80  # one instance takes 40 at once (anyio's threads): twice its capacity
TARGETS = {"fixed": ("--concurrency", "80"), "auto": ("--concurrency", "auto")}


def measure(homerun: Homerun, name: str, flags: tuple[str, ...], seconds: float) -> dict[str, Any]:
    # One instance, no second: the overload lasts the whole run, and what differs is where the
    # 40 requests beyond its threads wait: inside it (fixed 80) or in the router's queue (auto).
    with homerun.service(name, *flags, "--min-instances", "1", "--max-instances", "1") as (
        url,
        host,
    ):
        print(f"# {name}: {CLIENTS} clients on /produtos for {seconds:g}s", flush=True)
        start_at = time.monotonic() + 1.0
        budget = int(seconds * 3 * CLIENTS)
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            load = pool.submit(run_clients, url, host, CLIENTS, start_at, seconds, budget)
            inside, queued = [], []
            # The second half: the limit has adapted by then. What waits for a thread inside
            # the instance (the inspector's snapshot) and in the router's queue (describe).
            time.sleep(1.0 + seconds / 2)
            while not load.done():
                advice = homerun.admin.get(f"/v1/services/{name}/advice").json()
                inside.append((advice.get("inspection") or {}).get("pool_waiting", 0))
                queued.append(homerun.revision(name)["queue_length"])
                time.sleep(1.0)
            outcome = load.result()
        advice = homerun.admin.get(f"/v1/services/{name}/advice").json()
    records = outcome["records"]
    ok = sorted(latency for _, latency, status, _ in records if status == 200)
    in_time = sum(
        1 for sent, latency, status, _ in records if status == 200 and sent + latency <= seconds
    )
    cuts = statistics.quantiles(ok, n=100, method="inclusive") if len(ok) >= 2 else [0.0] * 99
    inspection = advice.get("inspection") or {}
    return {
        "target": name,
        "requests": len(records),
        "errors": len(records) - len(ok),
        "requests_per_second": round(in_time / seconds, 2),
        "p50_ms": round(cuts[49] * 1000, 1),
        "p99_ms": round(cuts[98] * 1000, 1),
        "mean_waiting_in_app": round(statistics.mean(inside), 1) if inside else None,
        "mean_queued_in_router": round(statistics.mean(queued), 1) if queued else None,
        "peak_waiting_in_app": inspection.get("pool_peak_waiting"),
        "peak_threads_busy": inspection.get("pool_peak_borrowed"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0, help="seconds of load each")
    parser.add_argument("--output", type=Path, default=None)
    arguments = parser.parse_args(argv)
    if arguments.duration > 30:
        parser.error("--duration at most 30 s: the run must stay near a minute")
    WORK.mkdir(parents=True, exist_ok=True)
    homerun = Homerun(WORK / "adaptive-daemon.log")
    results = []
    try:
        homerun.start()
        for name, flags in TARGETS.items():
            results.append(measure(homerun, name, flags, arguments.duration))
    except (RuntimeError, httpx.HTTPError) as error:
        print(f"adaptive: {error}", file=sys.stderr)
        return 1
    finally:
        homerun.stop()
    print(
        f"\n{'target':<7} {'req/s':>7} {'p50 ms':>8} {'p99 ms':>8} {'waiting in app':>15} "
        f"{'in router queue':>16}  (means over the second half)"
    )
    for row in results:
        print(
            f"{row['target']:<7} {row['requests_per_second']:>7g} {row['p50_ms']:>8g} "
            f"{row['p99_ms']:>8g} {row['mean_waiting_in_app']!s:>15} "
            f"{row['mean_queued_in_router']!s:>16}"
        )
    fixed, auto = results
    ratios = {
        "auto_vs_fixed_rps": round(auto["requests_per_second"] / fixed["requests_per_second"], 3)
        if fixed["requests_per_second"]
        else None,
        "auto_vs_fixed_p99": round(auto["p99_ms"] / fixed["p99_ms"], 3)
        if fixed["p99_ms"]
        else None,
    }
    print(
        f"\nauto / fixed: requests/s {ratios['auto_vs_fixed_rps']}, "
        f"p99 {ratios['auto_vs_fixed_p99']}"
    )
    output = arguments.output or RESULTS / f"adaptive-{utc_stamp()}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(
        json.dumps(
            {
                "commit": git_commit(),
                "cores": core_count(),
                "clients": CLIENTS,
                "duration_seconds": arguments.duration,
                "results": results,
                "ratios": ratios,
            },
            indent=2,
        )
        + "\n"
    )
    print(f"results: {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
