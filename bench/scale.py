"""Scale: many client connections, many services, many instances, each on a fresh daemon.

- **connections**: N client connections (default 10,000) each make one keep-alive request
  through the router, then stay open and idle; the daemon's memory (PSS) and open descriptors
  before and after give the memory per idle connection; then every connection asks again,
  to show that all of them were held (not closed and reopened).
- **services**: the router's cost per request to one service with 1 service in the routing
  table, then with M (default 1,000), on the same daemon: requests/s and the daemon's CPU per
  request (its CPU while idle, measured just before, taken off).
- **instances**: one revision held at K instances (default 200: `--min-instances K`): the time
  until all are ready, their memory (PSS) each, and how many of them answer a load of K
  concurrent clients with `--concurrency 1`.

The app is bench/scale_app (the standard library's HTTP server: it answers with its pid).
Every part is bounded in time and requests. Usage and recorded figures: bench/README.md;
writes bench/results/scale-STAMP.json.

    .venv/bin/python bench/scale.py [--connections 10000] [--services 1000] [--instances 200] \
        [--parts connections,services,instances] [--output PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform as host_platform
import re
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from _processes import RESULTS, WORK, Daemon, core_count, git_commit, utc_stamp

from homerun.client import Client
from homerun.model.annotations import ANNOTATION_PREFIX
from homerun.model.events import Done, Failed
from homerun.procfs import process_tree
from homerun.spec import DeployRequest, RevisionChanges

APP = Path(__file__).resolve().parent / "scale_app"
MiB = 1024 * 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")
PART_SECONDS = 900.0  # each part gives up after this long
# Services deployed side by side through the admin API (deploys of different services run in
# parallel in the daemon; each starts an instance that goes back to zero soon after).
DEPLOYS_AT_ONCE = 4
# Requests in flight at once on the held connections: the connections are what is measured,
# not the app's queue (a whoami instance takes 80 at once; more would wait or scale out).
ASKING_AT_ONCE = 64
# Short windows, so that the services' first instances go back to zero soon after their deploy.
AUTOSCALER = {"stable-window": "6s", "scale-to-zero-grace-period": "2s", "tick-interval": "0.5s"}


# -- measuring a process ---------------------------------------------------------------------


def pss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no Pss in /proc/{pid}/smaps_rollup")


def cpu_seconds(pid: int) -> float:
    """The process's user + system time (its threads included, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


# -- a small HTTP/1.1 client on asyncio streams ------------------------------------------------


class Connection:
    """One keep-alive client connection to the router, asking for one host."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str):
        self.reader = reader
        self.writer = writer
        self.request = f"GET / HTTP/1.1\r\nHost: {host}\r\nUser-Agent: scale\r\n\r\n".encode()

    @classmethod
    async def open(cls, port: int, host: str) -> Connection:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, host)

    async def get(self) -> tuple[int, bytes]:
        self.writer.write(self.request)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head.split(None, 2)[1])
        length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
        body = await self.reader.readexactly(int(length.group(1))) if length else b""
        return status, body

    def close(self) -> None:
        self.writer.close()


async def load(
    port: int, host: str, clients: int, per_client: int
) -> tuple[int, float, list[bytes]]:
    """`clients` connections, each asking `per_client` times in a row: (200s, seconds, bodies)."""
    connections = [await Connection.open(port, host) for _ in range(clients)]
    bodies: list[bytes] = []

    async def ask(connection: Connection) -> int:
        ok = 0
        for _ in range(per_client):
            status, body = await connection.get()
            ok += status == 200
            bodies.append(body)
        return ok

    started = time.perf_counter()
    answered = await asyncio.wait_for(
        asyncio.gather(*(ask(each) for each in connections)), PART_SECONDS
    )
    seconds = time.perf_counter() - started
    for connection in connections:
        connection.close()
    return sum(answered), seconds, bodies


# -- the parts -------------------------------------------------------------------------------


def deploy(
    client: Client,
    service: str,
    *,
    min_scale: int | None = None,
    max_scale: int | None = None,
    concurrency: int | None = None,
) -> None:
    annotations: dict[str, str | None] = {}
    if min_scale is not None:
        annotations[ANNOTATION_PREFIX + "min-scale"] = str(min_scale)
    if max_scale is not None:
        annotations[ANNOTATION_PREFIX + "max-scale"] = str(max_scale)
    request = DeployRequest(
        service=service,
        changes=RevisionChanges(
            source=str(APP), annotations=annotations, container_concurrency=concurrency
        ),
        allow_unauthenticated=True,
    )
    for event in client.deploy(request):
        if isinstance(event, Failed):
            raise RuntimeError(f"deploy of {service} failed: {event.message}")
        if isinstance(event, Done):
            return
    raise RuntimeError(f"deploy of {service} ended without a result")


def part_connections(folder: Path, count: int) -> dict[str, Any]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    if hard < count + 100:
        raise RuntimeError(f"{count} connections need more descriptors than the limit {hard}")
    # Connections stay open while idle for the whole part, not keep-alive's 75 s.
    daemon = Daemon(folder, WORK / "scale-connections.log", {"keepalive-timeout-seconds": 900})
    try:
        daemon.start()
        client = Client(daemon.home / "admin.sock")
        deploy(client, "whoami")
        client.close()
        host = f"whoami.localhost:{daemon.port}"

        async def measure() -> dict[str, Any]:
            warm = await Connection.open(daemon.port, host)
            for _ in range(50):
                await warm.get()
            warm.close()
            await asyncio.sleep(1)
            pss_before, fds_before = pss_bytes(daemon.pid), open_descriptors(daemon.pid)
            opened: list[Connection] = []
            statuses: Counter[int] = Counter()
            asking_at_once = asyncio.Semaphore(ASKING_AT_ONCE)

            async def first(connection: Connection) -> None:
                async with asking_at_once:
                    status, _ = await connection.get()
                statuses[status] += 1

            started = time.perf_counter()
            for start in range(0, count, 500):
                batch = await asyncio.gather(
                    *(Connection.open(daemon.port, host) for _ in range(min(500, count - start)))
                )
                await asyncio.gather(*(first(each) for each in batch))
                opened += batch
            if set(statuses) != {200}:
                raise RuntimeError(f"first requests answered {dict(statuses)}")
            opening = time.perf_counter() - started
            await asyncio.sleep(2)  # idle: every connection waits for its next request
            pss_after, fds_after = pss_bytes(daemon.pid), open_descriptors(daemon.pid)
            started = time.perf_counter()

            async def again_on(connection: Connection) -> tuple[int, bytes]:
                async with asking_at_once:
                    return await connection.get()

            again = await asyncio.gather(*map(again_on, opened), return_exceptions=True)
            asking = time.perf_counter() - started
            held = sum(1 for answer in again if isinstance(answer, tuple) and answer[0] == 200)
            for each in opened:
                each.close()
            return {
                "connections": count,
                "open_and_first_request_seconds": round(opening, 2),
                "daemon_pss_before_mib": round(pss_before / MiB, 1),
                "daemon_pss_idle_mib": round(pss_after / MiB, 1),
                "kib_per_idle_connection": round((pss_after - pss_before) / count / 1024, 2),
                "daemon_descriptors_added": fds_after - fds_before,
                "held_and_answered_again": held,
                "second_request_seconds": round(asking, 2),
            }

        return asyncio.run(measure())
    finally:
        daemon.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def _router_cost(daemon: Daemon, host: str, requests: int) -> dict[str, float]:
    """Requests/s and the daemon's CPU ms per request over `requests` (16 clients), its CPU
    while idle (the 3 s just before) taken off."""
    idle_start = cpu_seconds(daemon.pid)
    time.sleep(3)
    idle_rate = (cpu_seconds(daemon.pid) - idle_start) / 3
    asyncio.run(load(daemon.port, host, 4, 25))  # warm: connections pooled, instance up
    cpu_start = cpu_seconds(daemon.pid)
    ok, seconds, _ = asyncio.run(load(daemon.port, host, 16, requests // 16))
    cpu = cpu_seconds(daemon.pid) - cpu_start - idle_rate * seconds
    return {
        "requests": ok,
        "requests_per_second": round(ok / seconds, 1),
        "daemon_cpu_ms_per_request": round(cpu * 1000 / ok, 4),
        "daemon_idle_cpu_percent": round(idle_rate * 100, 2),
    }


def part_services(folder: Path, count: int, requests: int) -> dict[str, Any]:
    daemon = Daemon(folder, WORK / "scale-services.log", {"autoscaler": AUTOSCALER})
    try:
        daemon.start()
        client = Client(daemon.home / "admin.sock")
        deploy(client, "s0000", min_scale=1)
        host = f"s0000.localhost:{daemon.port}"
        one = _router_cost(daemon, host, requests)
        print(f"# 1 service: {one}", flush=True)
        started = time.perf_counter()
        deadline = time.monotonic() + PART_SECONDS

        def deploy_one(index: int) -> None:
            if time.monotonic() > deadline:
                raise RuntimeError(f"deploying {count} services took over {PART_SECONDS:.0f}s")
            own = Client(daemon.home / "admin.sock")
            try:
                deploy(own, f"s{index:04d}")
            finally:
                own.close()
            if index % 100 == 0:
                print(f"# {index} services deployed", flush=True)

        with ThreadPoolExecutor(DEPLOYS_AT_ONCE) as pool:
            list(pool.map(deploy_one, range(1, count)))
        deploying = time.perf_counter() - started
        # Back to the one instance of s0000 (min-instances 1): the others went to zero.
        wait_until(lambda: client.status().instances <= 1, 300, "the services' instances to stop")
        many = _router_cost(daemon, host, requests)
        print(f"# {count} services: {many}", flush=True)
        client.close()
        return {
            "services": count,
            "deploy_seconds": round(deploying, 1),
            "one_service": one,
            "many_services": many,
            "cpu_ratio": round(
                many["daemon_cpu_ms_per_request"] / one["daemon_cpu_ms_per_request"], 3
            ),
            "requests_per_second_ratio": round(
                many["requests_per_second"] / one["requests_per_second"], 3
            ),
        }
    finally:
        daemon.stop()


def part_instances(folder: Path, count: int) -> dict[str, Any]:
    daemon = Daemon(folder, WORK / "scale-instances.log")
    try:
        daemon.start()
        client = Client(daemon.home / "admin.sock")
        started = time.perf_counter()
        deploy(client, "many", min_scale=count, max_scale=count, concurrency=1)

        def ready() -> int:
            revision = client.describe("many").revisions[0]
            return sum(1 for instance in revision.instances if instance.state == "ready")

        wait_until(lambda: ready() >= count, PART_SECONDS, f"{count} instances")
        all_ready = time.perf_counter() - started
        time.sleep(2)
        tree = [pid for pid in process_tree(daemon.pid) if pid != daemon.pid]
        pss = sum(_pss_or_zero(pid) for pid in tree)
        ok, seconds, bodies = asyncio.run(
            load(daemon.port, f"many.localhost:{daemon.port}", count, 10)
        )
        # An instance is its (pid, port): pids repeat across PID namespaces (the sandbox).
        answers = [json.loads(body) for body in bodies]
        answered = {(answer["pid"], answer["port"]) for answer in answers}
        client.close()
        return {
            "instances": count,
            "seconds_until_all_ready": round(all_ready, 1),
            "processes": len(tree),
            "pss_mib": round(pss / MiB, 1),
            "pss_mib_per_instance": round(pss / MiB / count, 2),
            "load_requests": ok,
            "load_requests_per_second": round(ok / seconds, 1),
            "instances_that_answered": len(answered),
        }
    finally:
        daemon.stop()


def _pss_or_zero(pid: int) -> int:
    try:
        return pss_bytes(pid)
    except (OSError, RuntimeError):
        return 0  # gone, or a kernel thread


def wait_until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"waited {timeout:.0f}s for {what}")
        time.sleep(0.5)


def table(results: dict[str, Any]) -> str:
    lines = ["| part | figure | value |", "| --- | --- | --- |"]
    for part, figures in results.items():
        if not isinstance(figures, dict):
            continue
        for name, value in figures.items():
            if isinstance(value, dict):
                value = ", ".join(f"{key} {each}" for key, each in value.items())
            lines.append(f"| {part} | {name.replace('_', ' ')} | {value} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=10_000)
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--requests", type=int, default=4000, help="per measure of services")
    parser.add_argument("--instances", type=int, default=200)
    parser.add_argument("--parts", default="connections,services,instances")
    parser.add_argument("--output", type=Path)
    arguments = parser.parse_args(argv)
    parts = arguments.parts.split(",")
    unknown = set(parts) - {"connections", "services", "instances"}
    if unknown:
        parser.error(f"--parts: unknown {', '.join(sorted(unknown))}")
    WORK.mkdir(parents=True, exist_ok=True)
    folder = WORK / f"scale-{utc_stamp()}"
    folder.mkdir()
    stamp = utc_stamp()
    results: dict[str, Any] = {
        "commit": git_commit(),
        "cores": core_count(),
        "python": host_platform.python_version(),
        "settings": vars(arguments) | {"output": str(arguments.output or "")},
    }
    failed = False
    runs = {
        "connections": lambda: part_connections(folder, arguments.connections),
        "services": lambda: part_services(folder, arguments.services, arguments.requests),
        "instances": lambda: part_instances(folder, arguments.instances),
    }
    for part in parts:
        print(f"# {part}", flush=True)
        try:
            results[part] = runs[part]()
        except Exception as error:  # a part that fails is reported; the others still run
            failed = True
            results[part] = {"error": f"{type(error).__name__}: {error}"}
        print(json.dumps(results[part], indent=2), flush=True)
    output = arguments.output or RESULTS / f"scale-{stamp}.json"
    output.write_text(json.dumps(results, indent=2) + "\n")
    print(table(results))
    print(f"# written to {output}")
    if not any(folder.iterdir()):
        folder.rmdir()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
