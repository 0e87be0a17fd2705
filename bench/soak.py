"""Soak: N minutes of mixed load while the platform is changed under it, and what the daemon
holds over time.

One fresh daemon with short scale-to-zero settings serves three services: `steady` (the seed
Flask app, forked from its zygote), `killed` (tests/apps/whoami, spawned, two instances kept)
and `sleepy` (the seed FastAPI app, asked only in bursts, so it goes to zero and back). Client
threads send requests all along; every `--step-seconds` the next step of a cycle runs: a
deploy of a new `steady` revision (settings only, no rebuild), a SIGKILL of one `killed`
instance, a traffic split of `steady` between its last two revisions, `--to-latest` again.
Every `--sample-seconds` the daemon's RSS and open file descriptors (and its descendants'
count and RSS) are sampled and printed. At the end: requests sent and failed (failures within
2 s of an instance kill are counted apart: a request the killed instance held gets a 502),
RSS and open files over time (first, last, maximum, the slope of the second half), and the JSON
to bench/results/soak-STAMP.json. Usage and recorded figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform as host_platform
import random
import signal
import statistics
import sys
import threading
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
)

from homerun.procfs import process_tree

APPS = REPO_ROOT / "tests" / "apps"
AUTOSCALER = {
    "stable-window": "6s",
    "scale-to-zero-grace-period": "2s",
    "tick-interval": "0.5s",
}
MAX_MINUTES = 60.0
MAX_REQUESTS = 2_000_000
KILL_BLAME_SECONDS = 2.0  # a failure this soon after a kill is the kill's
DEPLOY_SECONDS = 600.0


@dataclass
class Sample:
    at: float  # seconds since the load started
    daemon_rss_mib: float
    daemon_open_files: int
    descendants: int
    descendants_rss_mib: float
    requests: int
    failed: int


@dataclass
class Outcome:
    at: float
    service: str
    status: int  # 0: no HTTP answer
    latency_ms: float
    detail: str = ""


@dataclass
class Record:
    outcomes: list[Outcome] = field(default_factory=list)
    steps: list[tuple[float, str, str]] = field(default_factory=list)  # (at, step, result)
    kills: list[float] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    # Each burst of `sleepy`: (at, its instances before it, its first request's ms, status).
    bursts: list[tuple[float, int, float, int]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


def client(
    daemon: Daemon, record: Record, started: float, stop: threading.Event, seed: int
) -> None:
    chooser = random.Random(seed)
    paths = {"steady": "/", "killed": "/slow?seconds=0.05"}
    with httpx.Client(base_url=f"http://127.0.0.1:{daemon.port}", timeout=30, trust_env=False) as c:
        for _ in range(MAX_REQUESTS):
            if stop.is_set():
                return
            service = chooser.choice(("steady", "steady", "killed"))
            record_one(c, daemon, record, started, service, paths[service])


def record_one(
    c: httpx.Client, daemon: Daemon, record: Record, started: float, service: str, path: str
) -> Outcome:
    sent = time.monotonic()
    try:
        response = c.get(path, headers={"Host": f"{service}.localhost:{daemon.port}"})
        status, detail = response.status_code, ("" if response.is_success else response.text)
    except httpx.HTTPError as error:
        status, detail = 0, repr(error)
        time.sleep(0.05)
    done = time.monotonic()
    outcome = Outcome(done - started, service, status, (done - sent) * 1000, detail[:200])
    with record.lock:
        record.outcomes.append(outcome)
    return outcome


def bursts(daemon: Daemon, record: Record, started: float, stop: threading.Event) -> None:
    """`sleepy` gets 20 requests every 15 s: it scales to zero in between (6 s + 2 s)."""
    with httpx.Client(base_url=f"http://127.0.0.1:{daemon.port}", timeout=30, trust_env=False) as c:
        while not stop.wait(15.0):
            before = sum(len(r["instances"]) for r in describe(daemon, "sleepy")["revisions"])
            first = record_one(c, daemon, record, started, "sleepy", "/usuarios")
            record.bursts.append((first.at, before, round(first.latency_ms, 1), first.status))
            for _ in range(19):
                record_one(c, daemon, record, started, "sleepy", "/usuarios")


def sampler(
    daemon: Daemon, record: Record, started: float, stop: threading.Event, every: float
) -> None:
    while True:
        tree = [pid for pid in process_tree(daemon.pid) if pid != daemon.pid]
        with record.lock:
            sent = len(record.outcomes)
            failed = sum(1 for outcome in record.outcomes if outcome.status != 200)
        sample = Sample(
            at=round(time.monotonic() - started, 1),
            daemon_rss_mib=round(rss_mib(daemon.pid), 1),
            daemon_open_files=open_files(daemon.pid),
            descendants=len(tree),
            descendants_rss_mib=round(sum(rss_mib(pid) for pid in tree), 1),
            requests=sent,
            failed=failed,
        )
        record.samples.append(sample)
        print(
            f"  t={sample.at:6.1f}s  daemon RSS {sample.daemon_rss_mib:6.1f} MiB, "
            f"{sample.daemon_open_files:4d} open files; {sample.descendants:3d} descendants "
            f"({sample.descendants_rss_mib:7.1f} MiB RSS); requests {sent}, failed {failed}",
            flush=True,
        )
        if stop.wait(every):
            return


def describe(daemon: Daemon, service: str) -> dict[str, Any]:
    result = daemon.cli("services", "describe", service, "--format", "summary-json")
    if result.returncode != 0:
        raise RuntimeError(f"describe {service} failed: {result.stderr}")
    described: dict[str, Any] = json.loads(result.stdout)
    return described


def step(daemon: Daemon, record: Record, started: float, number: int) -> None:
    """One step of the cycle: deploy, kill an instance, split, back to latest."""
    kind = ("deploy", "kill", "split", "latest")[number % 4]
    at = time.monotonic() - started
    if kind == "deploy":
        done = daemon.cli("services", "update", "steady", "--update-env-vars", f"ROUND={number}")
        result = "ok" if done.returncode == 0 else done.stderr.strip()[-200:]
    elif kind == "split":
        ready = [
            r["name"] for r in describe(daemon, "steady")["revisions"] if r["status"] == "ready"
        ]
        if len(ready) < 2:
            result = "skipped: one ready revision"
        else:
            split = f"{ready[0]}=50,{ready[1]}=50"
            done = daemon.cli("services", "update-traffic", "steady", "--to-revisions", split)
            result = "ok" if done.returncode == 0 else done.stderr.strip()[-200:]
    elif kind == "latest":
        done = daemon.cli("services", "update-traffic", "steady", "--to-latest")
        result = "ok" if done.returncode == 0 else done.stderr.strip()[-200:]
    else:
        instances = [
            instance
            for revision in describe(daemon, "killed")["revisions"]
            for instance in revision["instances"]
            if instance["state"] == "ready"
        ]
        if not instances:
            result = "skipped: no ready instance"
        else:
            victim = instances[0]["pid"]
            # An instance of the daemon this benchmark started: its process group, by pid.
            try:
                os.killpg(os.getpgid(victim), signal.SIGKILL)
                with record.lock:
                    record.kills.append(time.monotonic() - started)
                result = f"killed pid {victim}"
            except ProcessLookupError:
                result = f"pid {victim} was gone"
    record.steps.append((round(at, 1), kind, result))
    print(f"  t={at:6.1f}s  {kind}: {result}", flush=True)


def summarize(record: Record, minutes: float) -> dict[str, Any]:
    outcomes = record.outcomes
    failed = [o for o in outcomes if o.status != 200]
    blamed = [
        o for o in failed if any(0 <= o.at - kill <= KILL_BLAME_SECONDS for kill in record.kills)
    ]
    other = [o for o in failed if o not in blamed]
    latencies = sorted(o.latency_ms for o in outcomes if o.status == 200)
    samples = record.samples
    half = samples[len(samples) // 2 :]

    def slope(values: list[float]) -> float:
        """Least-squares change per minute over the second half (a leak shows as > 0)."""
        times = [s.at / 60 for s in half]
        if len(half) < 2 or len(set(times)) < 2:
            return 0.0
        mean_t, mean_v = statistics.fmean(times), statistics.fmean(values)
        num = sum((t - mean_t) * (v - mean_v) for t, v in zip(times, values, strict=True))
        return num / sum((t - mean_t) ** 2 for t in times)

    return {
        "minutes": minutes,
        "requests": len(outcomes),
        "requests_per_second": round(len(outcomes) / (minutes * 60), 1),
        "failed": len(failed),
        "failed_ratio": round(len(failed) / max(len(outcomes), 1), 5),
        "failed_after_kills": len(blamed),
        "failed_otherwise": len(other),
        "failures_by_status": dict(Counter(str(o.status) for o in failed)),
        "failure_examples": [asdict(o) for o in other[:10]],
        "by_service": dict(Counter(o.service for o in outcomes)),
        "latency_ms": {
            "p50": round(latencies[len(latencies) // 2], 1) if latencies else None,
            "p99": round(latencies[int(len(latencies) * 0.99)], 1) if latencies else None,
            "max": round(latencies[-1], 1) if latencies else None,
        },
        "instance_kills": len(record.kills),
        "sleepy_bursts": len(record.bursts),
        "sleepy_bursts_from_zero": sum(1 for _, before, _, _ in record.bursts if before == 0),
        "sleepy_first_request_ms_from_zero": [
            ms for _, before, ms, _ in record.bursts if before == 0
        ],
        "steps": Counter(kind for _, kind, _ in record.steps),
        "steps_failed": [s for s in record.steps if not s[2].startswith(("ok", "killed", "skip"))],
        "daemon_rss_mib": {
            "first": samples[0].daemon_rss_mib if samples else None,
            "last": samples[-1].daemon_rss_mib if samples else None,
            "max": max(s.daemon_rss_mib for s in samples) if samples else None,
            "second_half_slope_per_minute": round(slope([s.daemon_rss_mib for s in half]), 2),
        },
        "daemon_open_files": {
            "first": samples[0].daemon_open_files if samples else None,
            "last": samples[-1].daemon_open_files if samples else None,
            "max": max(s.daemon_open_files for s in samples) if samples else None,
            "second_half_slope_per_minute": round(
                slope([float(s.daemon_open_files) for s in half]), 2
            ),
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=2.0, help="load time (default 2)")
    parser.add_argument("--clients", type=int, default=6, help="client threads (default 6)")
    parser.add_argument("--step-seconds", type=float, default=8.0, help="between steps (8)")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="between samples (5)")
    parser.add_argument("--output", type=Path, help="default bench/results/soak-STAMP.json")
    args = parser.parse_args(argv)
    if not 0 < args.minutes <= MAX_MINUTES:
        parser.error(f"--minutes must be in (0, {MAX_MINUTES:g}]")
    if not 1 <= args.clients <= 64:
        parser.error("--clients must be in [1, 64]")
    # A signal ends the run through the `finally` block that stops the daemon started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    stamp = utc_stamp()
    WORK.mkdir(parents=True, exist_ok=True)
    config = {"stop-grace-seconds": 3, "deploy-settle-seconds": 0.2, "autoscaler": AUTOSCALER}
    daemon = Daemon(WORK, WORK / f"soak-{stamp}.log", config)
    record = Record()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        daemon.start()
        daemon.deploy("steady", APPS / "flask_seed", timeout=DEPLOY_SECONDS)
        daemon.deploy("killed", APPS / "whoami", "--min-instances", "2", timeout=DEPLOY_SECONDS)
        daemon.deploy("sleepy", APPS / "fastapi_seed", timeout=DEPLOY_SECONDS)
        print(f"# soak: {args.minutes:g} min, {args.clients} clients", flush=True)
        started = time.monotonic()
        threads = [
            threading.Thread(target=client, args=(daemon, record, started, stop, n))
            for n in range(args.clients)
        ]
        threads.append(threading.Thread(target=bursts, args=(daemon, record, started, stop)))
        threads.append(
            threading.Thread(
                target=sampler, args=(daemon, record, started, stop, args.sample_seconds)
            )
        )
        for thread in threads:
            thread.start()
        number = 0
        end = started + args.minutes * 60
        while time.monotonic() + args.step_seconds < end:
            time.sleep(args.step_seconds)
            step(daemon, record, started, number)
            number += 1
        time.sleep(max(0.0, end - time.monotonic()))
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=60)
        daemon.stop()
    summary = summarize(record, args.minutes)
    document = {
        "benchmark": "soak",
        "stamp": stamp,
        "commit": git_commit(),
        "cores": core_count(),
        "python": host_platform.python_version(),
        "settings": {"clients": args.clients, "step_seconds": args.step_seconds, **config},
        "summary": summary,
        "samples": [asdict(sample) for sample in record.samples],
        "steps": record.steps,
        "bursts": record.bursts,
    }
    output = args.output or RESULTS / f"soak-{stamp}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"# wrote {output}")
    return 0 if summary["failed_otherwise"] == 0 and not summary["steps_failed"] else 1


if __name__ == "__main__":
    sys.exit(main())
