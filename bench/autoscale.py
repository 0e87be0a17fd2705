"""Autoscaling under the seed's step load, homerun at --concurrency 80 and 10 vs one uvicorn.

0 to 200 concurrent clients at once on the seed FastAPI app's `/produtos` (a sync sleep(1)),
for a fixed time per target: instances over time, time until the needed instances were ready,
throughput, p50/p99 latency and errors, and the same load against one uvicorn process serving
the same folder without homerun. Usage and recorded figures: bench/README.md; writes
bench/results/autoscale-STAMP.{json,csv,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import csv
import json
import math
import multiprocessing
import platform as host_platform
import shutil
import signal
import ssl
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from _processes import (
    READY_SECONDS,
    REPO_ROOT,
    RESULTS,
    WORK,
    Daemon,
    answers,
    cached_venv,
    core_count,
    free_port,
    git_commit,
    serving,
    utc_stamp,
    wait_for,
)

SEED = REPO_ROOT / "tests" / "apps" / "fastapi_seed"
PATH = "/produtos"  # the seed's sync endpoint: sleep(1) in uvicorn's thread pool
CLIENTS = 200
# Cloud Run's target utilization: an instance is meant to carry 60 % of its concurrency, so
# 200 clients need ceil(200 / 48) = 5 instances at --concurrency 80, ceil(200 / 6) = 34 at 10.
UTILIZATION = 0.6
SAMPLE_SECONDS = 0.25
DEPLOY_SECONDS = 900.0
REQUEST_TIMEOUT = 60.0
# Each client waits ~1 s per request, so 200 clients send at most ~200 requests a second; the
# budget stops a run that is somehow faster (or a client that fails fast in a loop).
MAX_REQUESTS_PER_CLIENT_SECOND = 2


# Load: closed-loop asyncio clients, in one or more processes ----------------------------------


def run_clients(
    url: str, host: str | None, clients: int, start_at: float, duration: float, budget: int
) -> dict[str, Any]:
    """Run `clients` closed-loop clients from `start_at` (time.monotonic(), which Linux shares
    between processes) for `duration` seconds; return every request and the CPU it took."""
    cpu_before = time.process_time()
    records = asyncio.run(_clients(url, host, clients, start_at, duration, budget))
    return {"records": records, "cpu_seconds": time.process_time() - cpu_before}


async def _clients(
    url: str, host: str | None, clients: int, start_at: float, duration: float, budget: int
) -> list[tuple[float, float, int, str]]:
    """(sent, seconds, status, error) per request, `sent` relative to `start_at`."""
    records: list[tuple[float, float, int, str]] = []
    remaining = [budget]
    end = start_at + duration
    headers = {"Host": host} if host else {}

    async def one_client(client: httpx.AsyncClient) -> None:
        await asyncio.sleep(max(0.0, start_at - time.monotonic()))
        while time.monotonic() < end and remaining[0] > 0:
            remaining[0] -= 1
            sent = time.monotonic()
            try:
                response = await client.get(url)
                status, error = response.status_code, ""
            except httpx.HTTPError as failure:
                status, error = 0, type(failure).__name__
            records.append((sent - start_at, time.monotonic() - sent, status, error))

    # A client of its own per simulated user, one keep-alive connection each: one AsyncClient
    # with a pool of 200 connections spends ~15 ms of CPU per request looking through its pool
    # and caps the load near 70 requests/s on 2 cores. The clients share one TLS context (not
    # used on http://, but each client would otherwise load the CA bundle, ~10 ms apiece).
    tls = ssl.create_default_context()
    async with contextlib.AsyncExitStack() as stack:
        per_user = [
            await stack.enter_async_context(
                httpx.AsyncClient(
                    headers=headers, timeout=REQUEST_TIMEOUT, verify=tls, trust_env=False
                )
            )
            for _ in range(clients)
        ]
        if time.monotonic() > start_at:
            print("# warning: the clients were not ready at the step", file=sys.stderr)
        await asyncio.gather(*(one_client(client) for client in per_user))
    return records


# Processes ------------------------------------------------------------------------------------


def seed_venv() -> Path:
    """A virtualenv with the seed's requirements.txt, as homerun's builder makes one (shared
    with bench/proxy.py, which keys it the same way)."""
    requirements = SEED / "requirements.txt"
    return cached_venv(
        WORK / "seed-fastapi-venv", ["-r", str(requirements)], requirements.read_text()
    )


@contextlib.contextmanager
def direct_server(log: Path) -> Iterator[str]:
    """One uvicorn process serving the seed, as homerun's default entrypoint runs it."""
    venv = seed_venv()
    app = WORK / "direct-fastapi-app"
    shutil.rmtree(app, ignore_errors=True)
    shutil.copytree(SEED, app)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    command = [
        str(venv / "bin" / "uvicorn"),
        "main:app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    with serving(command, base + "/usuarios", "uvicorn", log, cwd=app):
        yield base + PATH


class Homerun(Daemon):
    """A fresh daemon under its own HOMERUN_HOME (default autoscaler settings)."""

    def __init__(self, log: Path, zygote: bool = True) -> None:
        # With the zygote off every instance is spawned: the reference for what forking buys.
        super().__init__(WORK, log, None if zygote else {"zygote": False})
        # describe's JSON read straight from the admin socket: `homerun services describe
        # --format json` prints the same, but starting Python 4 times a second would take a
        # good share of the 2 cores being measured.
        self.admin = httpx.Client(
            transport=httpx.HTTPTransport(uds=str(self.home / "admin.sock")),
            base_url="http://homerun",
            timeout=10,
        )

    @contextlib.contextmanager
    def service(self, name: str, *flags: str) -> Iterator[tuple[str, str]]:
        """Deploy the seed as `name`; yield (URL, Host header); delete it afterwards."""
        self.deploy(name, SEED, *flags, timeout=DEPLOY_SECONDS)
        base, host = f"http://127.0.0.1:{self.port}", f"{name}.localhost:{self.port}"
        try:
            wait_for(lambda: answers(base + "/usuarios", host), READY_SECONDS, name)
            yield base + PATH, host
        finally:
            self.cli("services", "delete", name, timeout=120)

    def revision(self, service: str) -> dict[str, Any]:
        described = self.admin.get(f"/v1/services/{service}").json()
        latest = described["latest_ready_revision"]
        return next(r for r in described["revisions"] if r["name"] == latest)

    def stop(self) -> None:
        self.admin.close()
        super().stop()


# One step load, measured ----------------------------------------------------------------------


@dataclass
class Sample:
    t: float
    ready: int
    starting: int
    draining: int
    in_flight: int
    queued: int
    busiest_instance: int  # requests in flight on the fullest ready instance


@dataclass
class StepResult:
    target: str
    concurrency: int | None  # None: uvicorn direct
    needed_instances: int
    duration_seconds: float
    client_processes: int
    zygote: bool | None = None  # homerun's instances forked from a zygote (False: spawned)
    requests: int = 0
    errors: int = 0
    requests_per_second: float = 0.0
    # Over the second half of the load, once scaling has (or should have) settled.
    steady_requests_per_second: float = 0.0
    latency_ms: dict[str, float] = field(default_factory=dict)
    ready_after_seconds: float | None = None  # until `needed_instances` were ready
    peak_instances: int = 0
    client_cpu_percent: float = 0.0  # of one core, summed over the client processes
    error_kinds: dict[str, int] = field(default_factory=dict)


def step_load(
    pool: concurrent.futures.ProcessPoolExecutor,
    args: argparse.Namespace,
    target: str,
    url: str,
    host: str | None,
    concurrency: int | None,
    sample: Callable[[float], Sample] | None = None,
    zygote: bool | None = None,
) -> tuple[StepResult, list[tuple[float, float, int, str]], list[Sample]]:
    """0 to CLIENTS clients at once, for `args.duration` s; `sample()` every SAMPLE_SECONDS."""
    needed = math.ceil(CLIENTS / (concurrency * UTILIZATION)) if concurrency else 1
    print(
        f"# {target}: step to {CLIENTS} clients for {args.duration:g}s"
        + (f", {needed} instances needed" if concurrency else ""),
        flush=True,
    )
    shares = [
        CLIENTS // args.client_processes + (i < CLIENTS % args.client_processes)
        for i in range(args.client_processes)
    ]
    start_at = time.monotonic() + 1.0  # the processes are already up: time to send the task
    budget = int(args.duration * MAX_REQUESTS_PER_CLIENT_SECOND) + 1
    futures = [
        pool.submit(run_clients, url, host, share, start_at, args.duration, budget * share)
        for share in shares
    ]
    samples: list[Sample] = []
    deadline = start_at + args.duration + REQUEST_TIMEOUT + 30
    next_sample = start_at
    while not all(future.done() for future in futures):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{target}: the load clients did not finish")
        if sample is not None and time.monotonic() >= next_sample:
            with contextlib.suppress(httpx.HTTPError):
                samples.append(sample(time.monotonic() - start_at))
            next_sample += SAMPLE_SECONDS
        time.sleep(max(0.0, min(next_sample - time.monotonic(), 0.05)))
    outcomes = [future.result() for future in futures]
    records = sorted(record for outcome in outcomes for record in outcome["records"])
    cpu = sum(outcome["cpu_seconds"] for outcome in outcomes)

    result = StepResult(target, concurrency, needed, args.duration, args.client_processes, zygote)
    ok = [seconds for _, seconds, status, _ in records if status == 200]
    result.requests = len(records)
    result.errors = len(records) - len(ok)
    for _, _, status, error in records:
        if status != 200:
            kind = error or str(status)
            result.error_kinds[kind] = result.error_kinds.get(kind, 0) + 1
    finished_in_time = sum(
        1
        for sent, seconds, status, _ in records
        if status == 200 and sent + seconds <= args.duration
    )
    result.requests_per_second = finished_in_time / args.duration
    half = args.duration / 2
    result.steady_requests_per_second = (
        sum(
            1
            for sent, seconds, status, _ in records
            if status == 200 and half < sent + seconds <= args.duration
        )
        / half
    )
    if len(ok) >= 2:
        cuts = statistics.quantiles(ok, n=100, method="inclusive")
        result.latency_ms = {"p50": cuts[49] * 1000, "p99": cuts[98] * 1000, "max": max(ok) * 1000}
    last = max((sent + seconds for sent, seconds, _, _ in records), default=args.duration)
    result.client_cpu_percent = 100 * cpu / max(last, args.duration)
    if samples:
        result.peak_instances = max(s.ready for s in samples)
        result.ready_after_seconds = next((s.t for s in samples if s.ready >= needed), None)
    else:
        result.peak_instances = 1
    return result, records, samples


def instance_sampler(homerun: Homerun, service: str) -> Callable[[float], Sample]:
    def sample(t: float) -> Sample:
        revision = homerun.revision(service)
        states = [instance["state"] for instance in revision["instances"]]
        return Sample(
            t=t,
            ready=states.count("ready"),
            starting=states.count("starting"),
            draining=states.count("draining"),
            in_flight=revision["in_flight"],
            queued=revision["queue_length"],
            busiest_instance=max(
                (i["in_flight"] for i in revision["instances"] if i["state"] == "ready"), default=0
            ),
        )

    return sample


# Report ---------------------------------------------------------------------------------------


def timeline(
    result: StepResult, records: list[tuple[float, float, int, str]], samples: list[Sample]
) -> list[dict[str, Any]]:
    """One row per SAMPLE_SECONDS: instances (last sample in the bucket) and the latency of
    the requests that completed in it."""
    end = max((sent + seconds for sent, seconds, _, _ in records), default=result.duration_seconds)
    buckets = math.ceil(end / SAMPLE_SECONDS)
    completed: list[list[float]] = [[] for _ in range(buckets + 1)]
    errors = [0] * (buckets + 1)
    for sent, seconds, status, _ in records:
        index = min(int((sent + seconds) / SAMPLE_SECONDS), buckets)
        if status == 200:
            completed[index].append(seconds * 1000)
        else:
            errors[index] += 1
    rows = []
    sample_index = 0
    current: Sample | None = None
    for index in range(buckets + 1):
        t = index * SAMPLE_SECONDS
        while sample_index < len(samples) and samples[sample_index].t < t + SAMPLE_SECONDS:
            current = samples[sample_index]
            sample_index += 1
        latencies = sorted(completed[index])
        rows.append(
            {
                "target": result.target,
                "t_seconds": round(t, 2),
                "clients": CLIENTS if t < result.duration_seconds else 0,
                "ready": current.ready if current else (1 if not samples else ""),
                "starting": current.starting if current else "",
                "draining": current.draining if current else "",
                "in_flight": current.in_flight if current else "",
                "queued": current.queued if current else "",
                "busiest_instance": current.busiest_instance if current else "",
                "completed": len(latencies),
                "errors": errors[index],
                "p50_ms": round(latencies[len(latencies) // 2], 1) if latencies else "",
                "max_ms": round(latencies[-1], 1) if latencies else "",
            }
        )
    return rows


def write_chart(path: Path, rows: list[dict[str, Any]], results: list[StepResult]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (instances_axis, latency_axis) = plt.subplots(
        2, 1, sharex=True, figsize=(10, 7), constrained_layout=True
    )
    for result in results:
        mine = [row for row in rows if row["target"] == result.target]
        times = [row["t_seconds"] for row in mine if row["ready"] != ""]
        ready = [row["ready"] for row in mine if row["ready"] != ""]
        line = instances_axis.step(times, ready, where="post", label=result.target)[0]
        if result.concurrency:
            instances_axis.axhline(
                result.needed_instances, color=line.get_color(), linestyle=":", linewidth=1
            )
        with_latency = [row for row in mine if row["p50_ms"] != ""]
        latency_axis.plot(
            [row["t_seconds"] for row in with_latency],
            [row["p50_ms"] / 1000 for row in with_latency],
            color=line.get_color(),
            label=f"{result.target} p50",
        )
        latency_axis.plot(
            [row["t_seconds"] for row in with_latency],
            [row["max_ms"] / 1000 for row in with_latency],
            color=line.get_color(),
            linestyle="--",
            linewidth=0.8,
            label=f"{result.target} max",
        )
    instances_axis.set_ylabel("ready instances")
    instances_axis.set_title(
        f"Step from 0 to {CLIENTS} clients on the seed's {PATH} (sleep 1 s); "
        "dotted: instances needed"
    )
    instances_axis.legend(loc="center right")
    latency_axis.set_ylabel("latency of requests completing (s)")
    latency_axis.set_xlabel(f"seconds since the step (buckets of {SAMPLE_SECONDS:g} s)")
    latency_axis.set_ylim(bottom=0)
    latency_axis.legend(loc="upper right", fontsize="small", ncol=len(results))
    figure.savefig(path, dpi=110)
    plt.close(figure)


def table(results: list[StepResult], cores: int) -> str:
    lines = [
        f"Step from 0 to {CLIENTS} clients on {PATH} for {results[0].duration_seconds:g} s per "
        f"target; {cores} cores shared by the clients, the router and the app.",
        "",
        "| target | instances needed | ready after s | peak instances | requests/s "
        "| 2nd half requests/s | p50 ms | p99 ms | errors | client CPU |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results:
        ready = "n/a" if r.concurrency is None else _seconds(r.ready_after_seconds)
        needed = "1 (fixed)" if r.concurrency is None else str(r.needed_instances)
        lines.append(
            f"| {r.target} | {needed} | {ready} | {r.peak_instances} | "
            f"{r.requests_per_second:,.1f} | {r.steady_requests_per_second:,.1f} | "
            f"{r.latency_ms.get('p50', 0):,.0f} | "
            f"{r.latency_ms.get('p99', 0):,.0f} | {r.errors} | {r.client_cpu_percent:.0f} % |"
        )
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "never" if value is None else f"{value:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=20.0, help="seconds of load per target")
    parser.add_argument(
        "--concurrency",
        default="80,10",
        help="homerun --concurrency values, one step load each (default 80,10)",
    )
    parser.add_argument(
        "--client-processes",
        type=int,
        default=1,
        help="processes the 200 asyncio clients are spread over (default 1)",
    )
    parser.add_argument("--no-direct", action="store_true", help="skip the plain uvicorn run")
    parser.add_argument(
        "--no-spawn",
        dest="spawn",
        action="store_false",
        help="skip the runs with the zygote off (every instance spawned)",
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the JSON, the CSV and PNG beside it with the same name "
        "(default bench/results/autoscale-STAMP.json)",
    )
    args = parser.parse_args(argv)
    try:
        concurrencies = [int(value) for value in args.concurrency.split(",") if value]
    except ValueError:
        parser.error(f"--concurrency: expected numbers like 80,10, got {args.concurrency!r}")
    if not 0 < args.duration <= 120:
        parser.error("--duration must be in (0, 120]")
    if not all(1 <= value <= 1000 for value in concurrencies):
        parser.error("--concurrency values must be in [1, 1000]")
    if not 1 <= args.client_processes <= 8:
        parser.error("--client-processes must be in [1, 8]")

    WORK.mkdir(parents=True, exist_ok=True)
    cores = core_count()
    # A signal ends the run through the `finally` blocks that stop every process started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stamp = utc_stamp()

    outcomes: list[tuple[StepResult, list[tuple[float, float, int, str]], list[Sample]]] = []
    # Client processes are started once, before any load, so the step isn't their start-up.
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(args.client_processes, mp_context=context) as pool:
        list(pool.map(abs, range(args.client_processes)))
        if not args.no_direct:
            with direct_server(WORK / "autoscale-direct.log") as url:
                outcomes.append(step_load(pool, args, "uvicorn direct", url, None, None))
        for zygote in (True, False) if args.spawn else (True,):
            kind = "" if zygote else ", spawn"
            homerun = Homerun(WORK / f"autoscale-homerun{kind.strip(', ')}.log", zygote=zygote)
            try:
                homerun.start()
                for concurrency in concurrencies:
                    name = f"seed-cc{concurrency}"
                    flags = ("--concurrency", str(concurrency))
                    with homerun.service(name, *flags) as (url, host):
                        sampler = instance_sampler(homerun, name)
                        target = f"homerun cc {concurrency}{kind}"
                        outcomes.append(
                            step_load(pool, args, target, url, host, concurrency, sampler, zygote)
                        )
            finally:
                homerun.stop()

    results = [result for result, _, _ in outcomes]
    rows = [
        row for result, records, samples in outcomes for row in timeline(result, records, samples)
    ]
    json_path = args.output or RESULTS / f"autoscale-{stamp}.json"
    json_path.parent.mkdir(parents=True, exist_ok=True)
    csv_path = json_path.with_suffix(".csv")
    with csv_path.open("w", newline="") as output:
        writer = csv.DictWriter(output, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    png_path = json_path.with_suffix(".png")
    write_chart(png_path, rows, results)
    record = {
        "benchmark": "autoscale",
        "when": stamp,
        "commit": git_commit(),
        "cores": cores,
        "machine": host_platform.machine(),
        "python": host_platform.python_version(),
        "source": str(SEED.relative_to(REPO_ROOT)),
        "path": PATH,
        "clients": CLIENTS,
        "client": "asyncio + httpx, one keep-alive connection per client",
        "settings": {
            "duration_seconds": args.duration,
            "concurrency": concurrencies,
            "client_processes": args.client_processes,
            "autoscaler": "homerun defaults (stable window 60 s, panic window 6 s, tick 2 s)",
        },
        "results": [asdict(result) for result in results],
        "csv": csv_path.name,
        "chart": png_path.name,
    }
    json_path.write_text(json.dumps(record, indent=2) + "\n")
    print()
    print(table(results, cores or 0))
    print(f"\nresults: {json_path}, {csv_path.name}, {png_path.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
