"""The router's per-request Python path, without sockets or an app: this tree's against another
commit's, side by side, to see whether a change made it dearer.

A request is fed to a ClientConnection and its response to the pooled UpstreamConnection,
both over transports that drop what is written, on uvloop: parsing, checks, routing, the head
rewrite, the slot, the pool and the request record, which is what the router adds per request
besides the kernel's reads and writes. The two trees run one after the other, in alternating
rounds, each round the best of 7 runs of `--requests`; the best round of each is kept (on a
shared machine, other work only ever adds time).

    .venv/bin/python bench/router_path.py --compare 4316501 [--rounds 8] [--requests 10000]

With --mypyc instead of --compare, the other side is this tree with the router's modules
(ROUTER_MODULES) compiled to C by mypyc, as they are: how much of the path's cost compiling
the Python that is there would take away (bench/README.md, "Where the router's CPU goes").

    .venv/bin/python bench/router_path.py --mypyc [--rounds 8]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

from _processes import REPO_ROOT, RESULTS, git_commit, utc_stamp

# The modules a request passes through, compiled by --mypyc.
ROUTER_MODULES = (
    "client", "upstream", "exchange", "throttler", "forwarding", "trace", "_http", "_hosts",
    "proxy", "types",
)  # fmt: skip

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
    import homerun.routing.client as module
    print(1e6 * best / n, module.__file__)

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


def compile_router(destination: Path) -> None:
    """This tree's package copied to `destination`, its router modules compiled by mypyc
    there (the C extensions land beside the sources and are imported instead of them)."""
    shutil.copytree(
        REPO_ROOT / "homerun", destination / "homerun", ignore=shutil.ignore_patterns("*.so")
    )
    mypyc = Path(sys.executable).with_name("mypyc")  # mypy's, from the test extra
    sources = [f"homerun/routing/{name}.py" for name in ROUTER_MODULES]
    subprocess.run(
        [str(mypyc), *sources], cwd=destination, capture_output=True, check=True, timeout=600
    )
    built = {path.name.split(".")[0] for path in (destination / "homerun/routing").glob("*.so")}
    if missing := set(ROUTER_MODULES) - built:
        raise RuntimeError(f"mypyc built no extension for {sorted(missing)}")


def measure(tree: Path, requests: int) -> float:
    """The path's best time per request with `tree`'s homerun; run in `tree`, as `python -c`
    puts the working directory before PYTHONPATH (from the repository's root, every side
    would be this tree)."""
    result = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(requests)],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    figure, _, module = result.stdout.strip().partition(" ")
    if not Path(module).is_relative_to(tree):
        raise RuntimeError(f"measured {module}, not the router of {tree}")
    return float(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    other_side = parser.add_mutually_exclusive_group(required=True)
    other_side.add_argument("--compare", help="the commit to compare with")
    other_side.add_argument(
        "--mypyc", action="store_true", help="compare with this tree's router compiled by mypyc"
    )
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    if not 1 <= args.rounds <= 30 or not 100 <= args.requests <= 100_000:
        parser.error("--rounds must be in [1, 30] and --requests in [100, 100000]")
    with tempfile.TemporaryDirectory() as scratch:
        other = Path(scratch)
        if args.mypyc:
            compile_router(other)
            other_name = "mypyc"
        else:
            extract(args.compare, other)
            other_name = args.compare
        rounds: dict[str, list[float]] = {"this tree": [], other_name: []}
        for _ in range(args.rounds):
            rounds[other_name].append(measure(other, args.requests))
            rounds["this tree"].append(measure(REPO_ROOT, args.requests))
    best = {name: min(values) for name, values in rounds.items()}
    ratio = best["this tree"] / best[other_name]
    print(f"router path per request, best of {args.rounds} rounds:")
    for name, value in best.items():
        spread = f"{min(rounds[name]):.2f}-{max(rounds[name]):.2f}"
        print(f"  {name:>12}: {value:.2f} µs (rounds {spread})")
    print(f"  ratio this tree / {other_name}: {ratio:.3f}")
    output = args.output or RESULTS / f"router-path-{utc_stamp()}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    record = {
        "benchmark": "router_path",
        "commit": git_commit(),
        "compare": other_name,
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
