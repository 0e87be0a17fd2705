"""Density: what N services at zero instances cost, and how fast each answers its first request.

N services of the same app (the seed Flask app by default) are deployed to a fresh daemon with
short scale-to-zero settings; once every one is at zero instances, the PSS of the daemon's
descendants (bases, zygotes, the reaper: everything but the daemon itself) is read from
/proc/PID/smaps_rollup and divided by N; then the first request to each service, in the order
they were deployed (least recently used first), is timed through the router. Three daemons,
one after the other: the zygote with the memory budget (`zygote-memory-budget-bytes`), the
zygote without eviction (a budget nothing reaches), and `zygote: false` (every instance
spawned). Usage and recorded figures: bench/README.md; writes bench/results/density-STAMP.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host_platform
import signal
import statistics
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _processes import (
    REPO_ROOT,
    RESULTS,
    WORK,
    Daemon,
    core_count,
    git_commit,
    utc_stamp,
    wait_for,
)

from homerun.procfs import process_tree

MiB = 1024 * 1024
GOAL_MIB_PER_SERVICE = 5.0
GOAL_FIRST_REQUEST_MS = 100.0
DEPLOY_SECONDS = 600.0
# Short windows, so that every service is at zero soon after its deploy (docs/design.md,
# Scaling): no traffic for the stable window plus the grace, decided every half second.
AUTOSCALER = {
    "stable-window": "6s",
    "scale-to-zero-grace-period": "2s",
    "tick-interval": "0.5s",
}
AT_ZERO_SECONDS = 180.0
# After the last instance went: zygotes evicted, their exits reaped, PSS settled.
SETTLE_SECONDS = 3.0
NO_EVICTION = 1 << 40  # a budget of 1 TiB: nothing is ever stopped


@dataclass(frozen=True)
class App:
    name: str
    source: Path
    path: str


APPS = {
    "flask": App("flask", REPO_ROOT / "tests" / "apps" / "flask_seed", "/"),
    "fastapi": App("fastapi", REPO_ROOT / "tests" / "apps" / "fastapi_seed", "/usuarios"),
}


@dataclass
class Target:
    label: str
    config: dict[str, Any]


@dataclass
class Result:
    app: str
    target: str
    services: int
    config: dict[str, Any]
    deploy_seconds: float = 0.0
    at_zero_after_seconds: float = 0.0
    processes: dict[str, int] = field(default_factory=dict)  # by name (comm): how many
    pss_mib: dict[str, float] = field(default_factory=dict)  # by name: their PSS
    total_pss_mib: float = 0.0
    pss_mib_per_service: float = 0.0
    first_request_ms: list[float] = field(default_factory=list)
    first_request_errors: int = 0

    @property
    def median_ms(self) -> float:
        return statistics.median(self.first_request_ms) if self.first_request_ms else 0.0

    def percentile_ms(self, fraction: float) -> float:
        ordered = sorted(self.first_request_ms)
        if not ordered:
            return 0.0
        return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]

    def summary(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "first_request_median_ms": round(self.median_ms, 1),
            "first_request_p90_ms": round(self.percentile_ms(0.9), 1),
            "first_request_max_ms": round(max(self.first_request_ms, default=0.0), 1),
            "first_requests_within_goal": sum(
                ms <= GOAL_FIRST_REQUEST_MS for ms in self.first_request_ms
            ),
        }


class Homerun(Daemon):
    def __init__(self, log: Path, config: dict[str, Any], pythonpath: str | None) -> None:
        super().__init__(WORK, log, config)
        if pythonpath:
            # Another checkout's homerun (an export of an older commit, say) for a before/after.
            self.env["PYTHONPATH"] = pythonpath
        self.admin = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.home / "admin.sock")),
            base_url="http://homerun",
            timeout=10,
        )

    def instances(self, service: str) -> int:
        described = self.admin.get(f"/v1/services/{service}").json()
        return sum(len(revision["instances"]) for revision in described["revisions"])

    def stop(self) -> None:
        self.admin.close()
        super().stop()


def pss_of_descendants(daemon_pid: int) -> tuple[Counter[str], Counter[str]]:
    """(how many, PSS in bytes) of the daemon's descendants, by process name."""
    counts: Counter[str] = Counter()
    sizes: Counter[str] = Counter()
    for pid in process_tree(daemon_pid):
        if pid == daemon_pid:
            continue
        try:
            name = Path(f"/proc/{pid}/comm").read_text().strip()
            with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
                pss = next(
                    int(line.split()[1]) * 1024 for line in rollup if line.startswith(b"Pss:")
                )
        except (OSError, StopIteration, ValueError):
            continue
        counts[name] += 1
        sizes[name] += pss
    return counts, sizes


def measure(app: App, target: Target, services: int, pythonpath: str | None) -> Result:
    result = Result(app.name, target.label, services, target.config)
    homerun = Homerun(WORK / f"density-{app.name}-{target.label}.log", target.config, pythonpath)
    names = [f"{app.name}-{index:03d}" for index in range(services)]
    try:
        homerun.start()
        started = time.monotonic()
        for name in names:
            homerun.deploy(name, app.source, timeout=DEPLOY_SECONDS)
        result.deploy_seconds = round(time.monotonic() - started, 1)

        print(f"# {target.label}: waiting until every service is at zero", flush=True)
        waited = time.monotonic()
        wait_for(
            lambda: all(homerun.instances(name) == 0 for name in names),
            AT_ZERO_SECONDS,
            "every service at zero",
        )
        result.at_zero_after_seconds = round(time.monotonic() - waited, 1)
        time.sleep(SETTLE_SECONDS)
        counts, sizes = pss_of_descendants(homerun.pid)
        result.processes = dict(counts)
        result.pss_mib = {name: round(size / MiB, 1) for name, size in sizes.items()}
        result.total_pss_mib = round(sum(sizes.values()) / MiB, 1)
        result.pss_mib_per_service = round(sum(sizes.values()) / MiB / services, 2)

        print(f"# {target.label}: first request to each service", flush=True)
        base = f"http://127.0.0.1:{homerun.port}"
        with httpx.Client(timeout=60, trust_env=False) as client:
            for name in names:
                host = f"{name}.localhost:{homerun.port}"
                began = time.perf_counter()
                try:
                    response = client.get(base + app.path, headers={"Host": host})
                    ok = response.status_code == 200
                except httpx.HTTPError:
                    ok = False
                elapsed_ms = (time.perf_counter() - began) * 1000
                if ok:
                    result.first_request_ms.append(round(elapsed_ms, 1))
                else:
                    result.first_request_errors += 1
    finally:
        homerun.stop()
    return result


def ratio(numerator: float, denominator: float) -> str:
    return f"{numerator / denominator:.2f}" if denominator else "-"


def table(results: list[Result], cores: int) -> str:
    lines = [
        f"Services at zero, then a first request to each ({cores} cores); PSS in MiB, "
        f"goals: ≤ {GOAL_MIB_PER_SERVICE:g} MiB per service and ≤ {GOAL_FIRST_REQUEST_MS:g} ms",
        "",
        "| app | target | services | PSS at zero | per service | processes | first request "
        "median ms | p90 ms | max ms | within 100 ms | errors |",
        "| --- | --- | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        processes = ", ".join(f"{count} {name}" for name, count in sorted(result.processes.items()))
        within = sum(ms <= GOAL_FIRST_REQUEST_MS for ms in result.first_request_ms)
        lines.append(
            f"| {result.app} | {result.target} | {result.services} | {result.total_pss_mib:.1f} "
            f"| {result.pss_mib_per_service:.2f} | {processes or '-'} | {result.median_ms:.1f} "
            f"| {result.percentile_ms(0.9):.1f} | {max(result.first_request_ms, default=0):.1f} "
            f"| {within}/{result.services} | {result.first_request_errors} |"
        )
    by_app: dict[str, dict[str, Result]] = {}
    for result in results:
        by_app.setdefault(result.app, {})[result.target] = result
    lines += [
        "",
        "| app | ratio | PSS per service | first request median |",
        "| --- | --- | ---: | ---: |",
    ]
    for app, targets in by_app.items():
        budget = targets.get("budget")
        for other in ("no eviction", "zygote off"):
            if budget is not None and other in targets:
                reference = targets[other]
                lines.append(
                    f"| {app} | budget / {other} | "
                    f"{ratio(budget.pss_mib_per_service, reference.pss_mib_per_service)} | "
                    f"{ratio(budget.median_ms, reference.median_ms)} |"
                )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--services", type=int, default=40, help="services deployed (default 40)")
    parser.add_argument(
        "--apps", default="flask", help="flask, fastapi or both, comma-separated (default flask)"
    )
    parser.add_argument(
        "--budget-mib",
        type=float,
        default=None,
        help="zygote-memory-budget-bytes in MiB for the budget target (default: homerun's)",
    )
    parser.add_argument(
        "--targets",
        default="budget,no eviction,zygote off",
        help="which daemons, comma-separated (default all three)",
    )
    parser.add_argument(
        "--pythonpath",
        help="run the daemons from this homerun source tree instead (for a before/after)",
    )
    parser.add_argument(
        "--output", type=Path, help="the JSON (default bench/results/density-STAMP.json)"
    )
    args = parser.parse_args(argv)
    if not 1 <= args.services <= 100:
        parser.error("--services must be in [1, 100]")
    apps = [name for name in args.apps.split(",") if name]
    if not apps or any(name not in APPS for name in apps):
        parser.error(f"--apps: choose from {', '.join(APPS)}")
    common = {"stop-grace-seconds": 3, "deploy-settle-seconds": 0.2, "autoscaler": AUTOSCALER}
    budget = (
        {}
        if args.budget_mib is None
        else {"zygote-memory-budget-bytes": int(args.budget_mib * MiB)}
    )
    every = {
        "budget": Target("budget", {**common, **budget}),
        "no eviction": Target("no eviction", {**common, "zygote-memory-budget-bytes": NO_EVICTION}),
        "zygote off": Target("zygote off", {**common, "zygote": False}),
    }
    chosen = [name.strip() for name in args.targets.split(",") if name.strip()]
    if not chosen or any(name not in every for name in chosen):
        parser.error(f"--targets: choose from {', '.join(every)}")
    if args.pythonpath:
        # An older tree refuses settings it does not know: keep to those it has.
        for name in chosen:
            every[name].config.pop("zygote-memory-budget-bytes", None)

    WORK.mkdir(parents=True, exist_ok=True)
    # A signal ends the run through the `finally` blocks that stop every daemon started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stamp = utc_stamp()
    cores = core_count()
    results = [
        measure(APPS[app], every[target], args.services, args.pythonpath)
        for app in apps
        for target in chosen
    ]
    record = {
        "benchmark": "density",
        "when": stamp,
        "commit": git_commit(),
        "cores": cores,
        "machine": host_platform.machine(),
        "python": host_platform.python_version(),
        "settings": {
            "services": args.services,
            "autoscaler": AUTOSCALER,
            "pythonpath": args.pythonpath,
            "goals": {
                "pss_mib_per_service": GOAL_MIB_PER_SERVICE,
                "first_request_ms": GOAL_FIRST_REQUEST_MS,
            },
        },
        "results": [result.summary() for result in results],
    }
    output = args.output or RESULTS / f"density-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(record, indent=2) + "\n")
    print()
    print(table(results, cores))
    print(f"\nresults: {output}")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
