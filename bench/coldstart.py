"""Cold start: from "start an instance" to its first 200, spawned vs forked from a zygote.

For the seed Flask app (examples/cloudrun_example, its Dockerfile's `exec gunicorn --bind
:$PORT --workers 1 --threads 8 --timeout 0 main:app`) and the seed FastAPI app
(tests/apps/fastapi_seed, the default `exec uvicorn main:app --host 127.0.0.1 --port $PORT`),
each built by homerun's builder, the same instance spec is started N times by a ProcessRuntime
(spawn) and by a ZygoteRuntime (fork), alternating, and timed from the start call to the first
200 response; where homerun can make control groups (root, cgroup v1), a third runtime forks
in them too (LimitedRuntime over a ZygoteRuntime: each instance in its own memory, cpu, pids
and freezer groups), alternating with the others, for the cost of that. Then K instances of
each kind run side by side and their resident and proportional set sizes are read from
/proc/PID/smaps_rollup. Usage and figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import platform as host_platform
import shutil
import signal
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _processes import REPO_ROOT, RESULTS, VENV_CACHE, free_port, git_commit
from _processes import WORK as BENCH_WORK

from homerun.build import Artifact, build
from homerun.runtime import Instance, InstanceSpec
from homerun.runtime.cgroups import Cgroups, available
from homerun.runtime.limited import LimitedRuntime
from homerun.runtime.netns import NetNamespace, Networks, open_connection
from homerun.runtime.netns import can_make as can_make_networks
from homerun.runtime.process import ProcessRuntime
from homerun.runtime.sandbox import probe as probe_sandbox
from homerun.runtime.zygote import ZygoteRuntime

WORK = BENCH_WORK / "coldstart"  # git-ignored; the venv cache is shared with proxy.py
GOAL_MS = 50.0  # issue 7: median at most 50 ms ...
GOAL_RATIO = 0.2  # ... and at most a fifth of spawning the same command
FIRST_200_SECONDS = 30.0


@dataclass(frozen=True)
class App:
    label: str
    source: Path
    path: str  # what to GET for a 200


APPS = [
    App("Flask (gunicorn)", REPO_ROOT / "examples" / "cloudrun_example", "/"),
    App("FastAPI (uvicorn)", REPO_ROOT / "tests" / "apps" / "fastapi_seed", "/usuarios"),
]


def instance_spec(artifact: Artifact, revision: str) -> InstanceSpec:
    """As the supervisor makes it: the artifact's env, PORT, K_* and unbuffered output."""
    port = free_port()
    service = revision.split("-")[0]
    env = dict(
        artifact.env,
        PORT=str(port),
        K_SERVICE=service,
        K_REVISION=revision,
        K_CONFIGURATION=service,
        PYTHONUNBUFFERED="1",
    )
    return InstanceSpec(
        name=f"{revision}-{port}",
        argv=list(artifact.argv),
        env=env,
        cwd=artifact.cwd,
        port=port,
        revision=revision,
    )


async def status_of(port: int, path: str, network: NetNamespace | None = None) -> int | None:
    try:
        reader, writer = await open_connection("127.0.0.1", port, network)
    except OSError:
        return None
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n".encode())
        line = await asyncio.wait_for(reader.readline(), FIRST_200_SECONDS)
    except (OSError, TimeoutError):
        return None
    finally:
        writer.close()
    parts = line.split()
    return int(parts[1]) if len(parts) >= 2 and parts[1].isdigit() else None


async def first_200(
    port: int, path: str, instance: Instance, network: NetNamespace | None = None
) -> None:
    """Ask until a 200 comes back; a refused connection is retried after 1 ms."""
    deadline = time.monotonic() + FIRST_200_SECONDS
    while True:
        if await status_of(port, path, network) == 200:
            return
        if instance.returncode is not None:
            raise RuntimeError(f"the instance exited ({instance.returncode}) before answering")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no 200 from port {port} within {FIRST_200_SECONDS:g} s")
        await asyncio.sleep(0.001)


async def stop(instance: Instance) -> None:
    instance.signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(instance.wait(), 10)
    except TimeoutError:
        instance.signal(signal.SIGKILL)
        await instance.wait()
    instance.signal(signal.SIGKILL)  # what is left of the group (the supervisor does the same)


async def cold_start(
    runtime: Any, artifact: Artifact, revision: str, path: str, networks: Networks | None = None
) -> float:
    """Milliseconds from the start call to the first 200 (asked in the revision's network
    namespace when it has one); the instance is stopped after."""
    spec = instance_spec(artifact, revision)
    began = time.perf_counter()
    instance = await runtime.start(spec, lambda stream, line: None)
    try:
        network = networks.get(revision) if networks is not None else None
        await first_200(spec.port, path, instance, network)
        return (time.perf_counter() - began) * 1000
    finally:
        await stop(instance)


# -- memory -----------------------------------------------------------------------------


def group_members(pgid: int) -> list[int]:
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as stat:
                    fields = stat.read().rsplit(b")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != b"Z" and int(fields[2]) == pgid:
                members.append(int(entry))
    return members


def rss_pss_kib(pids: list[int]) -> tuple[int, int]:
    """Resident and proportional set size, summed over pids (from smaps_rollup)."""
    rss = pss = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as rollup:
                for line in rollup:
                    name, _, value = line.partition(":")
                    if name == "Rss":
                        rss += int(value.split()[0])
                    elif name == "Pss":
                        pss += int(value.split()[0])
        except OSError:
            continue
    return rss, pss


async def memory(
    runtime: Any, artifact: Artifact, revision: str, path: str, count: int, zygote: int | None
) -> dict[str, Any]:
    """K instances side by side, each answered once: RSS and PSS per instance (its process
    group: gunicorn's master and worker), and the zygote's own."""
    instances = []
    try:
        for _ in range(count):
            spec = instance_spec(artifact, revision)
            instance = await runtime.start(spec, lambda stream, line: None)
            instances.append(instance)
            await first_200(spec.port, path, instance)
        await asyncio.sleep(0.5)  # let lazily started threads (gthread's pool) settle
        per_instance = [rss_pss_kib(group_members(instance.pid)) for instance in instances]
        zygote_rss, zygote_pss = rss_pss_kib([zygote]) if zygote else (0, 0)
    finally:
        await asyncio.gather(*(stop(instance) for instance in instances))
    rss = statistics.mean(rss for rss, _ in per_instance) / 1024
    pss = statistics.mean(pss for _, pss in per_instance) / 1024
    return {
        "instances": count,
        "rss_mib": round(rss, 1),
        "pss_mib": round(pss, 1),
        "zygote_rss_mib": round(zygote_rss / 1024, 1),
        "zygote_pss_mib": round(zygote_pss / 1024, 1),
        # What each instance costs the machine when the zygote's share is spread over them.
        "pss_with_zygote_share_mib": round(pss + zygote_pss / 1024 / count, 1),
    }


# -- one app ----------------------------------------------------------------------------


async def measure_app(app: App, artifact: Artifact, args: argparse.Namespace) -> dict[str, Any]:
    spawner, zygotes = ProcessRuntime(), ZygoteRuntime()
    groups = available(f"bench-{os.getpid()}")
    limited = (
        LimitedRuntime(ZygoteRuntime(), Cgroups(groups.folders))
        if {"memory", "cpu"} <= set(groups.folders)
        else None
    )
    # And in the revision's sandbox (runtime/sandbox.py), in control groups as well: the cost
    # of both together against the groups alone, same run (issue 13: goal ≤ 20 ms median).
    (WORK / "home").mkdir(parents=True, exist_ok=True)
    # As root, in the revision's own network namespace too (runtime/netns.py), as the daemon.
    sandbox, _ = probe_sandbox("auto", WORK / "home")
    sandbox_groups = available(f"bench-sandbox-{os.getpid()}")
    networks = Networks() if sandbox is not None and can_make_networks() is None else None
    sandboxed = (
        LimitedRuntime(
            ZygoteRuntime(sandbox=sandbox, networks=networks), Cgroups(sandbox_groups.folders)
        )
        if limited is not None and sandbox is not None
        else None
    )
    spawner.open()
    zygotes.open()
    if limited is not None:
        limited.open()
    if sandboxed is not None:
        sandboxed.open()
    revision = f"bench{APPS.index(app)}-00001-abc"
    in_cgroups: list[float] = []
    in_sandbox: list[float] = []
    try:
        # A revision's first instance: the zygote imports the app first (as in a deploy).
        first = []
        for _ in range(args.first_runs):
            zygotes.forget(revision)
            first.append(await cold_start(zygotes, artifact, revision, app.path))
        mode = zygotes.mode(revision)
        if mode[0] != "zygote":
            raise RuntimeError(f"{app.label} is not forked: {mode[1]}")
        spawn: list[float] = []
        fork: list[float] = []
        for _ in range(args.runs):  # alternating, so drift of the machine hits both alike
            spawn.append(await cold_start(spawner, artifact, revision, app.path))
            fork.append(await cold_start(zygotes, artifact, revision, app.path))
            if limited is not None:
                if not in_cgroups:  # its own zygote imports the app first
                    await cold_start(limited, artifact, revision, app.path)
                in_cgroups.append(await cold_start(limited, artifact, revision, app.path))
            if sandboxed is not None:
                if not in_sandbox:  # its own zygote, in the sandbox, imports the app first
                    await cold_start(sandboxed, artifact, revision, app.path, networks)
                in_sandbox.append(
                    await cold_start(sandboxed, artifact, revision, app.path, networks)
                )
        memory_spawn = await memory(spawner, artifact, revision, app.path, args.instances, None)
        memory_zygote = await memory(
            zygotes, artifact, revision, app.path, args.instances, zygotes.zygote_pid(revision)
        )
    finally:
        if networks is not None:
            networks.close()
        if sandboxed is not None:
            sandboxed.close()
        else:
            for folder in sandbox_groups.folders.values():
                with contextlib.suppress(OSError):
                    folder.rmdir()
        if limited is not None:
            limited.close()  # removes the bench's groups too
        else:
            for folder in groups.folders.values():
                with contextlib.suppress(OSError):
                    folder.rmdir()
        zygotes.close()
        spawner.close()
    return {
        "app": app.label,
        "source": str(app.source.relative_to(REPO_ROOT)),
        "argv": artifact.argv,
        "mode": mode,
        "samples_ms": {
            "spawn": spawn,
            "zygote": fork,
            "zygote_first": first,
            "zygote_cgroups": in_cgroups,
            "zygote_cgroups_sandbox": in_sandbox,
        },
        "summary": {
            "spawn": summarize(spawn),
            "zygote": summarize(fork),
            "zygote_first": summarize(first),
            "zygote_cgroups": summarize(in_cgroups),
            "zygote_cgroups_sandbox": summarize(in_sandbox),
        },
        "memory": {"spawn": memory_spawn, "zygote": memory_zygote},
    }


def summarize(samples: list[float]) -> dict[str, float]:
    if not samples:
        return {}
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {
        "median_ms": round(statistics.median(ordered), 1),
        "p90_ms": round(p90, 1),
        "min_ms": round(ordered[0], 1),
        "max_ms": round(ordered[-1], 1),
    }


# -- report -----------------------------------------------------------------------------


def tables(results: list[dict[str, Any]], runs: int, cores: int) -> str:
    lines = [
        f"Start to first 200, {runs} runs each (alternating), {cores} cores. Goal: zygote median "
        f"≤ {GOAL_MS:g} ms and ≤ {GOAL_RATIO:g} × spawn.",
        "",
        "| app | spawn median ms | spawn p90 ms | zygote median ms | zygote p90 ms "
        "| **zygote / spawn** (median) | goal | first instance of a revision ms |",
        "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    for result in results:
        spawn, fork = result["summary"]["spawn"], result["summary"]["zygote"]
        first = result["summary"]["zygote_first"]
        ratio = fork["median_ms"] / spawn["median_ms"]
        met = fork["median_ms"] <= GOAL_MS and ratio <= GOAL_RATIO
        lines.append(
            f"| {result['app']} | {spawn['median_ms']:.1f} | {spawn['p90_ms']:.1f} "
            f"| {fork['median_ms']:.1f} | {fork['p90_ms']:.1f} | **{ratio:.2f}** "
            f"| {'met' if met else 'NOT met'} | {first['median_ms']:.1f} |"
        )
    lines += [
        "",
        "Forked into control groups of its own (memory, cpu, pids, freezer) vs not, same run "
        "(issue 13: at most a few ms more)",
        "",
        "| app | zygote median ms | zygote + cgroups median ms | p90 ms | **difference** ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        fork, grouped = result["summary"]["zygote"], result["summary"]["zygote_cgroups"]
        if not grouped:
            lines.append(f"| {result['app']} | {fork['median_ms']:.1f} | (no cgroups) | | |")
            continue
        lines.append(
            f"| {result['app']} | {fork['median_ms']:.1f} | {grouped['median_ms']:.1f} "
            f"| {grouped['p90_ms']:.1f} | **{grouped['median_ms'] - fork['median_ms']:+.1f}** |"
        )
    lines += [
        "",
        "Forked in the revision's sandbox (bubblewrap: mount view, PID namespace, own user) and "
        "control groups vs in control groups alone, same run (issue 13: goal ≤ 20 ms median)",
        "",
        "| app | zygote + cgroups median ms | + sandbox median ms | p90 ms | **difference** ms |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        grouped = result["summary"]["zygote_cgroups"]
        boxed = result["summary"].get("zygote_cgroups_sandbox")
        if not grouped or not boxed:
            lines.append(f"| {result['app']} | | (no sandbox or no cgroups here) | | |")
            continue
        lines.append(
            f"| {result['app']} | {grouped['median_ms']:.1f} | {boxed['median_ms']:.1f} "
            f"| {boxed['p90_ms']:.1f} | **{boxed['median_ms'] - grouped['median_ms']:+.1f}** |"
        )
    lines += [
        "",
        "Memory of instances running side by side, each answered once (MiB; an instance is its "
        "process group: gunicorn's master and worker, or uvicorn's one process)",
        "",
        "| app | start | instances | RSS each | PSS each | zygote RSS | zygote PSS "
        "| PSS each + share of zygote |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for result in results:
        for kind in ("spawn", "zygote"):
            row = result["memory"][kind]
            zygote_cells = (
                f"{row['zygote_rss_mib']:.1f} | {row['zygote_pss_mib']:.1f}"
                if kind == "zygote"
                else "- | -"
            )
            shared = row["pss_with_zygote_share_mib"]
            lines.append(
                f"| {result['app']} | {kind} | {row['instances']} | {row['rss_mib']:.1f} "
                f"| {row['pss_mib']:.1f} | {zygote_cells} | {shared:.1f} |"
            )
    return "\n".join(lines)


def built(app: App) -> Artifact:
    dest = WORK / app.source.name
    shutil.rmtree(dest, ignore_errors=True)
    return build(
        app.source,
        dest,
        command=None,
        args=None,
        user_env={},
        venv_cache=Path(os.environ.get("HOMERUN_VENV_CACHE") or VENV_CACHE),
        output=lambda line: None,
    )


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    task = asyncio.current_task()
    assert task is not None
    # A SIGTERM ends the run through the `finally` blocks that stop every process started here.
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    results = []
    for app in APPS:
        print(f"building {app.source.relative_to(REPO_ROOT)} ...", flush=True)
        artifact = await asyncio.to_thread(built, app)
        print(f"measuring {app.label}: {' '.join(artifact.argv)}", flush=True)
        results.append(await measure_app(app, artifact, args))
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--runs", type=int, default=20, help="cold starts per app and kind")
    parser.add_argument(
        "--first-runs", type=int, default=3, help="first starts of a revision (zygote imports)"
    )
    parser.add_argument(
        "--instances", type=int, default=4, help="instances side by side for the memory figures"
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the JSON (default bench/results/coldstart-STAMP.json)",
    )
    # Shared by bench/run_all.py with the load benchmarks; a cold start has no load.
    parser.add_argument("--duration", help=argparse.SUPPRESS)
    parser.add_argument("--connections", help=argparse.SUPPRESS)
    parser.add_argument("--tool", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if not 1 <= args.runs <= 200 or not 1 <= args.first_runs <= 20:
        parser.error("--runs must be in [1, 200] and --first-runs in [1, 20]")
    if not 1 <= args.instances <= 16:
        parser.error("--instances must be in [1, 16]")

    WORK.mkdir(parents=True, exist_ok=True)
    cores = len(os.sched_getaffinity(0))
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    results = asyncio.run(run(args))
    print()
    print(tables(results, args.runs, cores))
    record = {
        "benchmark": "coldstart",
        "when": stamp,
        "commit": git_commit(),
        "cores": cores,
        "machine": host_platform.machine(),
        "python": host_platform.python_version(),
        "settings": {
            "runs": args.runs,
            "first_runs": args.first_runs,
            "instances": args.instances,
        },
        "goal": {"median_ms": GOAL_MS, "ratio": GOAL_RATIO},
        "apps": results,
    }
    path = args.output or RESULTS / f"coldstart-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"\nresults: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
