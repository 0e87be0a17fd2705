"""Requests/s and p50/p99 latency of the seed apps, reached directly and through homerun.

For each seed app (Flask under gunicorn, FastAPI under uvicorn), both targets serve the same
folder with the same command (the Dockerfile's CMD for Flask, homerun's default uvicorn command
for FastAPI) from the same packages, so the difference is the router's cost; nginx in front of
the direct server is the reference proxy. All of an app's targets run side by side; each is
loaded for a fixed time with a fixed number of keep-alive connections, in alternating rounds.
Usage and recorded figures: bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import math
import os
import platform as host_platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
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

FLASK_FOLDERS = [
    REPO_ROOT / "tests" / "apps" / "flask_seed",
    REPO_ROOT / "examples" / "cloudrun_example",
]
FASTAPI_FOLDER = REPO_ROOT / "tests" / "apps" / "fastapi_seed"
# homerun's default command for an ASGI app found in main.py with no Dockerfile or Procfile
# (homerun/build/entrypoint.py); the direct target runs the same, and the run checks that the
# deployed revision's entrypoint is this.
UVICORN_COMMAND = "exec uvicorn main:app --host 127.0.0.1 --port $PORT"
# The target with request logs, metrics and dashboard series off (`telemetry: false`).
QUIET = "homerun, telemetry off"
# The target with no sandbox (`sandbox: off`): instances share the daemon's network namespace,
# so the router connects to them on the host's loopback, as before the sandbox existed.
UNSANDBOXED = "homerun, sandbox off"
# homerun's Router in a process of its own, no daemon (`--router-alone`): what of the daemon's
# CPU per request is the router's.
ALONE = "homerun's router alone"
NGINX = "nginx"
# The same nginx writing an access log line per request (Debian's default `combined` format,
# unbuffered), as homerun writes a request log entry: the like-for-like reference of its CPU.
NGINX_LOGGING = "nginx, access log"
DEPLOY_SECONDS = 900.0
# The Python load generator stops at this many requests per second of duration even if the
# target is faster, so a run is bounded in requests as well as in time.
PYTHON_MAX_REQUESTS_PER_SECOND = 50_000


@dataclass
class LoadResult:
    target: str
    url: str
    tool: str
    duration_seconds: float
    connections: int
    requests: int
    errors: int
    requests_per_second: float
    latency_ms: dict[str, float] = field(default_factory=dict)
    # CPU time of the proxy's own processes (not the app's) per request, when there is one:
    # user + system, and the two apart (the kernel's share: the reads, writes and waits).
    proxy_cpu_ms_per_request: float | None = None
    proxy_user_ms_per_request: float | None = None
    proxy_system_ms_per_request: float | None = None


# Apps -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class App:
    """A seed app as served here: the folder homerun deploys, the shell command homerun runs it
    with (run by hand for the direct target), the packages that command needs, and the path
    the load asks for."""

    name: str  # the --apps value
    label: str  # the table's caption
    folder: Path
    path: str
    service: str  # its name in homerun
    command: str
    pip_args: list[str]
    venv_key: str  # what the direct virtualenv holds: it is made again when this changes
    venv_name: str

    def describe(self) -> dict[str, Any]:
        return {
            "app": self.name,
            "label": self.label,
            "folder": str(self.folder.relative_to(REPO_ROOT)),
            "path": self.path,
            "service": self.service,
            "command": self.command,
            "direct_pip_install": [a.removeprefix(f"{REPO_ROOT}/") for a in self.pip_args],
        }


def dockerfile_parts(folder: Path) -> tuple[list[str], str]:
    """The packages of the seed Dockerfile's `RUN pip install` and its shell-form CMD."""
    packages: list[str] = []
    command = ""
    for line in (folder / "Dockerfile").read_text().splitlines():
        words = line.split(None, 1)
        if len(words) < 2:
            continue
        if words[0] == "RUN" and words[1].startswith("pip install"):
            packages += shlex.split(words[1])[2:]
        elif words[0] == "CMD":
            command = words[1]
    if not packages or not command:
        raise SystemExit(f"{folder}/Dockerfile: expected `RUN pip install ...` and a shell CMD")
    return packages, command


def flask_seed() -> App:
    """The seed's Flask folder, run by its Dockerfile's CMD (gunicorn, 1 worker, 8 threads)."""
    folder = next((f for f in FLASK_FOLDERS if (f / "Dockerfile").exists()), None)
    if folder is None:
        raise SystemExit(f"the seed Flask folder is missing: looked in {FLASK_FOLDERS}")
    packages, command = dockerfile_parts(folder)
    return App(
        name="flask",
        label="Seed Flask app (gunicorn 1 worker, 8 threads), GET /",
        folder=folder,
        path="/",
        service="helloworld",
        command=command,
        pip_args=packages,
        venv_key=" ".join(packages),
        venv_name="seed-flask-venv",
    )


def fastapi_seed() -> App:
    """The seed's FastAPI folder (main.py and requirements.txt only), so homerun runs it with
    its default uvicorn command; loaded at the async endpoint, as /produtos sleeps 1 s."""
    requirements = FASTAPI_FOLDER / "requirements.txt"
    if not requirements.exists():
        raise SystemExit(f"the seed FastAPI folder is missing: {FASTAPI_FOLDER}")
    return App(
        name="fastapi",
        label="Seed FastAPI app (uvicorn, 1 process), GET /usuarios (async)",
        folder=FASTAPI_FOLDER,
        path="/usuarios",
        service="fastapi-seed",
        command=UVICORN_COMMAND,
        pip_args=["-r", str(requirements)],
        # As bench/autoscale.py keys the same virtualenv, so the two share it.
        venv_key=requirements.read_text(),
        venv_name="seed-fastapi-venv",
    )


APPS: dict[str, Callable[[], App]] = {"flask": flask_seed, "fastapi": fastapi_seed}


# Processes ------------------------------------------------------------------------------------


@contextlib.contextmanager
def direct_server(app: App, scratch: Path, log: Path) -> Iterator[int]:
    """The app's command run by hand with `sh -c` in a virtualenv with its packages; yields
    its port."""
    venv = cached_venv(WORK / app.venv_name, app.pip_args, app.venv_key)
    copy = scratch / f"{app.name}-app"
    shutil.copytree(app.folder, copy)
    port = free_port()
    env = dict(os.environ, PORT=str(port), PATH=f"{venv / 'bin'}:{os.environ.get('PATH', '')}")
    url = f"http://127.0.0.1:{port}{app.path}"
    with serving(["sh", "-c", app.command], url, f"{app.name} direct", log, cwd=copy, env=env):
        yield port


@dataclass
class Deployed:
    url: str
    host: str
    pid: int  # the daemon's: its CPU time is the router's (instances are other processes)
    entrypoint: list[str]  # the revision's argv, as homerun describes it


@contextlib.contextmanager
def homerun_service(
    app: App,
    scratch: Path,
    log: Path,
    deploy_flags: list[str],
    config: dict[str, object] | None = None,
) -> Iterator[Deployed]:
    """A fresh daemon (`homerun up`, its own HOMERUN_HOME) with the app's folder deployed."""
    daemon = Daemon(scratch, log, config)
    try:
        daemon.start()
        daemon.deploy(app.service, app.folder, *deploy_flags, timeout=DEPLOY_SECONDS)
        host = f"{app.service}.localhost:{daemon.port}"
        url = f"http://127.0.0.1:{daemon.port}{app.path}"
        wait_for(lambda: answers(url, host), READY_SECONDS, "the deployed service")
        described = daemon.cli("services", "describe", app.service, "--format", "summary-json")
        service = json.loads(described.stdout)
        revision = next(
            r for r in service["revisions"] if r["name"] == service["latest_ready_revision"]
        )
        yield Deployed(url, host, daemon.pid, list(revision["entrypoint"] or []))
    finally:
        daemon.stop()


NGINX_CONF = """\
worker_processes 1;
daemon off;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log {access_log};
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    upstream app {{ server 127.0.0.1:{upstream}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://app;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_buffering off;
        }}
    }}
}}
"""


def find_nginx(install: bool) -> str | None:
    def installed() -> str | None:
        # Debian puts it in /usr/sbin, which is not on every user's PATH.
        return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")

    if installed() or not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        return installed()
    print("# nginx not found: apt-get install -y nginx-light", flush=True)
    quiet: dict[str, Any] = {
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
        "timeout": 300,
    }
    for package in ("nginx-light", "nginx"):
        if subprocess.run(["apt-get", "install", "-y", package], **quiet).returncode == 0:
            break
        subprocess.run(["apt-get", "update"], **quiet)
    return installed()


@contextlib.contextmanager
def nginx_proxy(
    nginx: str, upstream: int, path: str, scratch: Path, log: Path, access_log: bool = False
) -> Iterator[tuple[str, int]]:
    """nginx as the reference reverse proxy: one worker (as homerun has one router process),
    keep-alive to the app, no buffering, an access log or none; yields (URL of `path`, master
    pid)."""
    port = free_port()
    prefix = Path(tempfile.mkdtemp(prefix="nginx-", dir=scratch))
    conf = prefix / "nginx.conf"
    logging = f"{prefix}/access.log combined" if access_log else "off"
    conf.write_text(
        NGINX_CONF.format(work=prefix, upstream=upstream, port=port, access_log=logging)
    )
    url = f"http://127.0.0.1:{port}{path}"
    command = [nginx, "-c", str(conf), "-p", str(prefix)]
    with serving(command, url, "nginx", log, grace=5) as process:
        yield url, process.pid


# The router in a process of its own: one route, to one endpoint; serves until killed.
_ROUTER = r"""
import asyncio, gc, sys, time
import uvloop
from homerun.routing.proxy import Router
from homerun.routing.throttler import Endpoint, Throttler
from homerun.routing.types import Route

async def main(port, upstream):
    throttler = Throttler("svc-1", lambda: None, time.monotonic)
    throttler.add(Endpoint("e", "127.0.0.1", upstream, 1000))
    route = Route("svc", "svc-1", throttler, 30.0)
    records = []
    router = Router(lambda host: route, on_request=records.append)
    await router.start("127.0.0.1", port)
    gc.freeze()  # as the daemon does once started
    while True:
        await asyncio.sleep(1)
        records.clear()  # the daemon's telemetry takes them once a second

uvloop.run(main(int(sys.argv[1]), int(sys.argv[2])))
"""


@contextlib.contextmanager
def router_alone(upstream: int, path: str, log: Path) -> Iterator[tuple[str, int]]:
    """homerun's router in a process of its own in front of `upstream`; yields (URL, pid)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}{path}"
    command = [sys.executable, "-c", _ROUTER, str(port), str(upstream)]
    with serving(command, url, "the router", log, grace=5) as process:
        yield url, process.pid


def cpu_seconds(pid: int, children: bool) -> tuple[float, float]:
    """User and system CPU time of a process (all its threads), plus that of its children
    that are alive when `children` (nginx's worker). Not for homerun's daemon: its children
    are the instances (or their zygote), the app and not the router."""
    user = system = 0.0
    pids = [pid]
    if children:
        with contextlib.suppress(OSError):
            listed = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            pids += [int(child) for child in listed]
    ticks = os.sysconf("SC_CLK_TCK")
    for member in pids:
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            user += int(fields[11]) / ticks
            system += int(fields[12]) / ticks
    return user, system


def version_of(command: list[str]) -> str:
    """The first line a program prints about its version (wrk and nginx print it on stderr)."""
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0] if lines else ""


# Load -----------------------------------------------------------------------------------------


def find_wrk(install: bool) -> str | None:
    found = shutil.which("wrk")
    if found or not install or os.geteuid() != 0 or not shutil.which("apt-get"):
        return found
    print("# wrk not found: apt-get install -y wrk", flush=True)
    quiet: dict[str, Any] = {
        "stdout": subprocess.DEVNULL,
        "stderr": subprocess.DEVNULL,
        "timeout": 300,
    }
    if subprocess.run(["apt-get", "install", "-y", "wrk"], **quiet).returncode != 0:
        subprocess.run(["apt-get", "update"], **quiet)
        subprocess.run(["apt-get", "install", "-y", "wrk"], **quiet)
    return shutil.which("wrk")


_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0}


def run_wrk(
    wrk: str,
    target: str,
    url: str,
    host: str | None,
    duration: float,
    connections: int,
    threads: int,
) -> LoadResult:
    # wrk takes whole seconds only.
    seconds = max(1, math.ceil(duration))
    command = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency"]
    if host:
        command += ["-H", f"Host: {host}"]
    output = subprocess.run(
        [*command, url], capture_output=True, text=True, timeout=duration + 60, check=True
    ).stdout
    latency = {
        f"p{percent}": float(value) * _UNITS_MS[unit]
        for percent, value, unit in re.findall(
            r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s|m)\b", output, re.M
        )
    }
    total = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)\b", output)
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    if not (total and rate and "p50" in latency and "p99" in latency):
        raise RuntimeError(f"could not read wrk's output:\n{output}")
    errors = sum(int(n) for n in re.findall(r"(?:connect|read|write|timeout) (\d+)", output))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return LoadResult(
        target=target,
        url=url,
        tool="wrk",
        duration_seconds=float(total.group(2)) * _UNITS_MS[total.group(3)] / 1000,
        connections=connections,
        requests=int(total.group(1)),
        errors=errors,
        requests_per_second=float(rate.group(1)),
        latency_ms=latency,
    )


def run_python_load(
    target: str, url: str, host: str | None, duration: float, connections: int
) -> LoadResult:
    """A bounded closed-loop load: `connections` threads, each one keep-alive connection."""
    headers = {"Host": host} if host else {}
    deadline = time.monotonic() + duration
    budget = threading.Semaphore(int(duration * PYTHON_MAX_REQUESTS_PER_SECOND))
    latencies: list[list[float]] = [[] for _ in range(connections)]
    errors = [0] * connections

    def worker(index: int) -> None:
        with httpx.Client(headers=headers, timeout=30, trust_env=False) as client:
            while time.monotonic() < deadline and budget.acquire(blocking=False):
                started = time.perf_counter()
                try:
                    ok = client.get(url).status_code == 200
                except httpx.HTTPError:
                    ok = False
                if ok:
                    latencies[index].append((time.perf_counter() - started) * 1000)
                else:
                    errors[index] += 1

    started = time.monotonic()
    workers = [threading.Thread(target=worker, args=(i,)) for i in range(connections)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(timeout=duration + 60)
    elapsed = time.monotonic() - started
    samples = sorted(value for per_worker in latencies for value in per_worker)
    if len(samples) < 2:
        raise RuntimeError(f"{target}: no successful requests ({sum(errors)} errors)")
    cuts = statistics.quantiles(samples, n=100, method="inclusive")
    return LoadResult(
        target=target,
        url=url,
        tool="python-httpx",
        duration_seconds=elapsed,
        connections=connections,
        requests=len(samples) + sum(errors),
        errors=sum(errors),
        requests_per_second=len(samples) / elapsed,
        latency_ms={"p50": cuts[49], "p75": cuts[74], "p90": cuts[89], "p99": cuts[98]},
    )


def measure(
    args: argparse.Namespace,
    wrk: str | None,
    target: str,
    url: str,
    host: str | None,
    connections: int,
    cpu: Callable[[], tuple[float, float]] | None = None,
) -> LoadResult:
    """One round: a warm-up that is not measured (none with --warmup 0), then the measured
    load; `cpu()` is the proxy's user and system CPU seconds so far, read before and after."""
    print(
        f"# {target}, {connections} connections: warm-up {args.warmup:g}s, then {args.duration:g}s",
        flush=True,
    )
    threads = min(args.threads, connections)

    def load(seconds: float) -> LoadResult:
        if wrk:
            return run_wrk(wrk, target, url, host, seconds, connections, threads)
        return run_python_load(target, url, host, seconds, connections)

    if args.warmup > 0:
        load(args.warmup)
    user_before, system_before = cpu() if cpu else (0.0, 0.0)
    result = load(args.duration)
    if cpu and result.requests:
        user, system = cpu()
        result.proxy_user_ms_per_request = 1000 * (user - user_before) / result.requests
        result.proxy_system_ms_per_request = 1000 * (system - system_before) / result.requests
        result.proxy_cpu_ms_per_request = (
            result.proxy_user_ms_per_request + result.proxy_system_ms_per_request
        )
    return result


# Report ---------------------------------------------------------------------------------------


def summarize(rounds: list[LoadResult]) -> dict[str, float]:
    """The median of each figure over the rounds of one target (errors are summed)."""
    return {
        "requests_per_second": statistics.median(r.requests_per_second for r in rounds),
        "p50_ms": statistics.median(r.latency_ms["p50"] for r in rounds),
        "p99_ms": statistics.median(r.latency_ms["p99"] for r in rounds),
        "errors": sum(r.errors for r in rounds),
        "cpu_ms": statistics.median(r.proxy_cpu_ms_per_request or 0.0 for r in rounds),
        # The kernel's share apart (reads, writes, waits): medians of their own.
        "user_ms": statistics.median(r.proxy_user_ms_per_request or 0.0 for r in rounds),
        "system_ms": statistics.median(r.proxy_system_ms_per_request or 0.0 for r in rounds),
    }


def table(
    app: App,
    summaries: dict[int, dict[str, dict[str, float]]],
    args: argparse.Namespace,
    tool: str,
    cores: int,
) -> str:
    rows = [
        f"{app.label}: {args.rounds} x {args.duration:g} s per target and load (medians), "
        f"{tool}, {cores} cores shared by client, router and app.",
        "",
        "| connections | target | requests/s | p50 ms | p99 ms | errors "
        "| proxy CPU ms/request | of which user / system |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for connections, summary in summaries.items():
        for target, figures in summary.items():
            cpu = split = ""
            if figures["cpu_ms"]:
                cpu = f"{figures['cpu_ms']:.3f}"
                split = f"{figures['user_ms']:.3f} / {figures['system_ms']:.3f}"
            rows.append(
                f"| {connections} | {target} | {figures['requests_per_second']:,.0f} | "
                f"{figures['p50_ms']:.2f} | {figures['p99_ms']:.2f} | {figures['errors']:.0f} | "
                f"{cpu} | {split} |"
            )
        ratios = ratio(summary)
        rows.append(
            f"| {connections} | **homerun / direct** | {ratios['requests_per_second']:.2f} "
            f"| {ratios['p50']:.2f} | {ratios['p99']:.2f} | | | |"
        )
        if NGINX in summary:
            versus = ratio(summary, NGINX, "homerun")
            rows.append(
                f"| {connections} | **homerun / nginx** | {versus['requests_per_second']:.2f} "
                f"| {versus['p50']:.2f} | {versus['p99']:.2f} | "
                f"{cpu_ratios(summary, 'homerun', NGINX)}"
            )
        # Router CPU like for like: both writing a line per request, or neither.
        for homerun, reference in (("homerun", NGINX_LOGGING), (QUIET, NGINX)):
            if homerun in summary and reference in summary and summary[reference]["cpu_ms"]:
                rows.append(
                    f"| {connections} | **{homerun} / {reference}** | | | | "
                    f"{cpu_ratios(summary, homerun, reference)}"
                )
        if QUIET in summary:
            cost = ratio(summary, QUIET, "homerun")
            rows.append(
                f"| {connections} | **telemetry on / off** | {cost['requests_per_second']:.2f} "
                f"| {cost['p50']:.2f} | {cost['p99']:.2f} | {cpu_ratios(summary, 'homerun', QUIET)}"
            )
        if ALONE in summary and summary[ALONE]["cpu_ms"]:
            # The daemon against its router alone, and the router alone against nginx.
            for target, reference in (("homerun", ALONE), (ALONE, NGINX)):
                if reference in summary and summary[reference]["cpu_ms"]:
                    rows.append(
                        f"| {connections} | **{target} / {reference}** | | | | "
                        f"{cpu_ratios(summary, target, reference)}"
                    )
        if UNSANDBOXED in summary and summary[UNSANDBOXED]["cpu_ms"]:
            cost = ratio(summary, UNSANDBOXED, "homerun")
            rows.append(
                f"| {connections} | **sandbox on / off** | {cost['requests_per_second']:.2f} "
                f"| {cost['p50']:.2f} | {cost['p99']:.2f} | "
                f"{cpu_ratios(summary, 'homerun', UNSANDBOXED)}"
            )
    return "\n".join(rows)


def cpu_ratios(summary: dict[str, dict[str, float]], target: str, reference: str) -> str:
    """The last three cells of a ratio row: errors (none), CPU per request target/reference,
    and the same for user and system time apart (blank where a side has none: an older
    result, or a proxy's CPU that was too small to read)."""

    def of(field: str) -> str:
        base = summary[reference].get(field, 0.0)
        return f"{summary[target].get(field, 0.0) / base:.2f}" if base else ""

    user, system = of("user_ms"), of("system_ms")
    split = f"{user} / {system}" if user and system else ""
    return f" | {of('cpu_ms')} | {split} |"


def ratio(
    summary: dict[str, dict[str, float]], base: str = "direct", target: str = "homerun"
) -> dict[str, float]:
    direct, homerun = summary[base], summary[target]
    return {
        "requests_per_second": homerun["requests_per_second"] / direct["requests_per_second"],
        "p50": homerun["p50_ms"] / direct["p50_ms"],
        "p99": homerun["p99_ms"] / direct["p99_ms"],
    }


def measure_app(
    app: App,
    args: argparse.Namespace,
    wrk: str | None,
    nginx: str | None,
    loads: list[int],
    scratch: Path,
) -> tuple[dict[str, Any], dict[int, dict[str, list[LoadResult]]]]:
    """Start the app's targets, load them in alternating rounds, stop them; returns what
    describes the targets and every round."""
    deploy_flags = shlex.split(args.deploy_flags)
    # name -> (URL, Host header, the proxy's user and system CPU seconds so far when there
    # is a proxy)
    targets: dict[str, tuple[str, str | None, Callable[[], tuple[float, float]] | None]] = {}
    described = app.describe()
    with contextlib.ExitStack() as servers:
        port = servers.enter_context(direct_server(app, scratch, WORK / f"{app.name}-direct.log"))
        targets["direct"] = (f"http://127.0.0.1:{port}{app.path}", None, None)
        if nginx is not None:
            for name, access_log in ((NGINX, False), (NGINX_LOGGING, True)):
                log = WORK / f"{app.name}-{'nginx-logging' if access_log else 'nginx'}.log"
                url, master = servers.enter_context(
                    nginx_proxy(nginx, port, app.path, scratch, log, access_log)
                )
                targets[name] = (url, None, functools.partial(cpu_seconds, master, True))
        kinds: list[tuple[str, Path, dict[str, object] | None]] = [
            ("homerun", WORK / f"{app.name}-homerun.log", None)
        ]
        if args.telemetry_off:
            # The same platform with request records off: no request logs, metrics, charts.
            log = WORK / f"{app.name}-homerun-quiet.log"
            kinds.append((QUIET, log, {"telemetry": False}))
        if args.sandbox_off:
            log = WORK / f"{app.name}-homerun-unsandboxed.log"
            kinds.append((UNSANDBOXED, log, {"sandbox": "off"}))
        if args.router_alone:
            url, pid = servers.enter_context(
                router_alone(port, app.path, WORK / f"{app.name}-router-alone.log")
            )
            targets[ALONE] = (url, None, functools.partial(cpu_seconds, pid, False))
        for name, log, config in kinds:
            deployed = servers.enter_context(
                homerun_service(app, scratch, log, deploy_flags, config)
            )
            # The daemon's own CPU time: its children are the app's instances.
            daemon_cpu = functools.partial(cpu_seconds, deployed.pid, False)
            targets[name] = (deployed.url, deployed.host, daemon_cpu)
            described["homerun_entrypoint"] = deployed.entrypoint
            if deployed.entrypoint[-1:] != [app.command]:
                print(
                    f"# note: homerun runs {deployed.entrypoint}, the direct target "
                    f"{app.command!r}",
                    flush=True,
                )
        described["urls"] = {name: url for name, (url, _, _) in targets.items()}
        rounds: dict[int, dict[str, list[LoadResult]]] = {
            connections: {target: [] for target in targets} for connections in loads
        }
        # All run the whole time, idle when not loaded; alternating rounds spread any drift of
        # the machine (another tenant, thermal limits) over every target alike.
        for _ in range(args.rounds):
            for connections, results in rounds.items():
                for name, (url, host, cpu) in targets.items():
                    results[name].append(measure(args, wrk, name, url, host, connections, cpu))
    return described, rounds


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of load per round")
    parser.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of load not measured (0: none)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="alternating rounds per target (the median is kept)"
    )
    parser.add_argument(
        "--apps",
        default=",".join(APPS),
        help=f"seed apps to serve, comma-separated, one after the other (default {','.join(APPS)})",
    )
    parser.add_argument(
        "--connections",
        default="1,32",
        help="keep-alive connections, one load per comma-separated value: 1 shows the latency "
        "one more hop adds, 32 the throughput when the app is saturated",
    )
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--tool", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument(
        "--no-install",
        action="store_true",
        help="don't apt-get install wrk or nginx when missing (the run falls back to the "
        "Python load generator and to no reference proxy)",
    )
    parser.add_argument(
        "--no-telemetry-off",
        dest="telemetry_off",
        action="store_false",
        help="skip the run of homerun with request logs and metrics off",
    )
    parser.add_argument(
        "--sandbox-off",
        action="store_true",
        help="also run homerun with `sandbox: off` (instances on the host's loopback), to tell "
        "the sandbox's and its network namespace's share of the router's cost",
    )
    parser.add_argument(
        "--router-alone",
        action="store_true",
        help="also run homerun's router in a process of its own (no daemon) in front of the "
        "direct target, to tell the router's share of the daemon's CPU",
    )
    parser.add_argument(
        "--deploy-flags", default="", help="extra `homerun deploy` flags, e.g. '--concurrency 80'"
    )
    parser.add_argument(
        "--output",
        type=Path,
        help="where to write the JSON (default bench/results/proxy-STAMP.json)",
    )
    args = parser.parse_args(argv)
    try:
        loads = [int(value) for value in args.connections.split(",")]
    except ValueError:
        parser.error(f"--connections: expected numbers like 1,32, got {args.connections!r}")
    if not 0 < args.duration <= 300 or not all(1 <= value <= 1000 for value in loads):
        parser.error("--duration must be in (0, 300] and each --connections in [1, 1000]")
    if not 0 <= args.warmup <= 60:
        parser.error("--warmup must be in [0, 60]")
    if not 1 <= args.rounds <= 10:
        parser.error("--rounds must be in [1, 10]")
    names = [name for name in args.apps.split(",") if name]
    if not names or any(name not in APPS for name in names):
        parser.error(f"--apps: expected some of {','.join(APPS)}, got {args.apps!r}")
    apps = [APPS[name]() for name in dict.fromkeys(names)]

    WORK.mkdir(parents=True, exist_ok=True)
    wrk = None if args.tool == "python" else find_wrk(install=not args.no_install)
    if args.tool == "wrk" and not wrk:
        parser.error("wrk not found (apt-get install wrk)")
    tool = "wrk" if wrk else "python-httpx"
    cores = core_count()
    # A signal ends the run through the `finally` blocks that stop every process started here.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    stamp = utc_stamp()
    nginx = find_nginx(install=not args.no_install)
    if nginx is None:
        print("# nginx not found and not installed: no reference proxy in this run", flush=True)
    measured = []
    scratch = Path(tempfile.mkdtemp(prefix="proxy-run-", dir=WORK))
    try:
        for app in apps:
            described, rounds = measure_app(app, args, wrk, nginx, loads, scratch)
            summaries = {
                connections: {target: summarize(runs) for target, runs in results.items()}
                for connections, results in rounds.items()
            }
            print()
            print(table(app, summaries, args, tool, cores))
            print()
            described["loads"] = [
                {
                    "connections": connections,
                    "summary": summaries[connections],
                    "ratio": ratio(summaries[connections]),
                    "rounds": {t: [asdict(r) for r in runs] for t, runs in results.items()},
                }
                for connections, results in rounds.items()
            ]
            measured.append(described)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    record = {
        "benchmark": "proxy",
        "when": stamp,
        "commit": git_commit(),
        "cores": cores,
        "cpu_count": os.cpu_count(),
        "machine": host_platform.machine(),
        "python": host_platform.python_version(),
        "tool": tool,
        "tool_version": version_of([wrk, "-v"]) if wrk else "",
        "nginx": version_of([nginx, "-v"]) if nginx else None,
        "settings": {
            "duration_seconds": args.duration,
            "warmup_seconds": args.warmup,
            "rounds": args.rounds,
            "connections": loads,
            "threads": args.threads,
            "deploy_flags": args.deploy_flags,
            "telemetry_off_run": args.telemetry_off,
        },
        "apps": measured,
    }
    path = args.output or RESULTS / f"proxy-{stamp}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
