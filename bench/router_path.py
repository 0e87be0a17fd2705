"""The router's per-request Python path, without sockets or an app: this tree's against another
commit's, side by side, to see whether a change made it dearer.

A request is fed to a ClientConnection and its response to the pooled UpstreamConnection,
both over transports that drop what is written, on uvloop: parsing, checks, routing, the head
rewrite, the slot, the pool and the request record, which is what the router adds per request
besides the kernel's reads and writes. The two trees run one after the other, in alternating
rounds, each round the best of 7 runs of `--requests`; the best round of each is kept (on a
shared machine, other work only ever adds time).

    .venv/bin/python bench/router_path.py --compare 4316501 [--rounds 8] [--requests 10000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from _processes import REPO_ROOT, RESULTS, git_commit, utc_stamp

_MEASURE = r"""
import asyncio, gc, sys, time
import uvloop
from homerun.routing.client import ClientConnection
from homerun.routing.proxy import Router
from homerun.routing.throttler import Endpoint, Throttler
from homerun.routing.types import Route
from homerun.routing.upstream import UpstreamConnection

class Sink(asyncio.Transport):
    def write(self, data): pass
    def is_closing(self): return False
    def get_extra_info(self, name, default=None):
        return ("127.0.0.1", 5555) if name in ("peername", "sockname") else default
    def pause_reading(self): pass
    def resume_reading(self): pass
    def close(self): pass
    def abort(self): pass
    def can_write_eof(self): return False

REQUEST = b"GET /hello HTTP/1.1\r\nHost: svc.test:8080\r\nUser-Agent: wrk\r\nAccept: */*\r\n\r\n"
RESPONSE = (b"HTTP/1.1 200 OK\r\ndate: Sat, 05 Dec 2026 08:00:00 GMT\r\nserver: uvicorn\r\n"
            b"content-type: text/plain\r\ncontent-length: 5\r\n\r\nhello")

async def main(n):
    records = []
    throttler = Throttler("svc-1", lambda: None, time.monotonic)
    endpoint = Endpoint("e", "127.0.0.1", 1, 100)
    throttler.add(endpoint)
    route = Route("svc", "svc-1", throttler, 30.0)
    router = Router(lambda host: route, on_request=records.append)
    router.ports = frozenset((8080,))
    router.port_suffix = b":8080"
    client = ClientConnection(router)
    client.connection_made(Sink())
    upstream = UpstreamConnection(router, endpoint)
    upstream.connection_made(Sink())
    upstream.idle = True
    endpoint.idle_connections.append(upstream)
    gc.freeze()  # as the daemon does once started: what startup made is not walked again
    best = None
    for _ in range(7):
        records.clear()
        start = time.perf_counter()
        for _ in range(n):
            client.data_received(REQUEST)
            upstream.data_received(RESPONSE)
        elapsed = time.perf_counter() - start
        assert len(records) == n and records[-1][5] == 200
        best = elapsed if best is None else min(best, elapsed)
    router.deadlines.close()
    print(1e6 * best / n)

uvloop.run(main(int(sys.argv[1])))
"""


def extract(commit: str, destination: Path) -> None:
    archive = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "archive", commit, "homerun"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(archive)) as tar:
        tar.extractall(destination, filter="data")


def measure(tree: Path, requests: int) -> float:
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(requests)],
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return float(result.stdout.strip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--compare", required=True, help="the commit to compare with")
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 30 or not 100 <= args.requests <= 100_000:
        parser.error("--rounds must be in [1, 30] and --requests in [100, 100000]")
    with tempfile.TemporaryDirectory() as scratch:
        other = Path(scratch)
        extract(args.compare, other)
        rounds: dict[str, list[float]] = {"this tree": [], args.compare: []}
        for _ in range(args.rounds):
            rounds[args.compare].append(measure(other, args.requests))
            rounds["this tree"].append(measure(REPO_ROOT, args.requests))
    best = {name: min(values) for name, values in rounds.items()}
    ratio = best["this tree"] / best[args.compare]
    print(f"router path per request, best of {args.rounds} rounds:")
    for name, value in best.items():
        spread = f"{min(rounds[name]):.2f}-{max(rounds[name]):.2f}"
        print(f"  {name:>12}: {value:.2f} µs (rounds {spread})")
    print(f"  ratio this tree / {args.compare}: {ratio:.3f}")
    output = args.output or RESULTS / f"router-path-{utc_stamp()}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "router_path",
        "commit": git_commit(),
        "compare": args.compare,
        "requests": args.requests,
        "rounds": rounds,
        "best_us": best,
        "ratio": ratio,
    }
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"# written to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
