"""The router alone (no daemon: no control plane, telemetry, sandbox or instances of its own)
in front of two upstreams, with nginx in front of the same ones: how much of the daemon's CPU
per request is the router's, and how much a request's cost depends on what shares the cores.

    .venv/bin/python bench/router_alone.py [--app fastapi] [--duration 8] [--rounds 3]

Upstreams: the seed app run by hand (as bench/proxy.py's direct target), and nginx answering
a static 200 itself (no Python beside the router on the machine). Proxies: homerun's Router
in a process of its own on uvloop, routing every request to the upstream (a throttler with
one endpoint, as a revision with one instance), and nginx with one worker, no access log
(bench/proxy.py's reference). One connection (wrk -c1), alternating rounds, medians; the
proxy's user and system CPU per request from /proc. wrk and nginx are installed with apt-get
when missing (as root), unless --no-install: then the load is bench/proxy.py's Python
generator and, without nginx, the router in front of the app is all there is. Bounded: each
load runs `--duration` seconds; every process started here is stopped at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import statistics
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from _processes import RESULTS, WORK, free_port, git_commit, serving, utc_stamp
from proxy import (
    APPS,
    cpu_seconds,
    direct_server,
    find_nginx,
    find_wrk,
    nginx_proxy,
    router_alone,
    run_python_load,
    run_wrk,
)

_STATIC = """\
worker_processes 1;
daemon off;
pid {work}/static.pid;
error_log {work}/static-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/static-body;
    server {{ listen 127.0.0.1:{port}; location / {{ return 200 "hello world\\n"; }} }}
}}
"""


@contextlib.contextmanager
def static_upstream(nginx: str, scratch: Path) -> Iterator[int]:
    """nginx answering every request itself; yields its port."""
    port = free_port()
    work = Path(tempfile.mkdtemp(prefix="static-", dir=scratch))
    (work / "static.conf").write_text(_STATIC.format(work=work, port=port))
    command = [nginx, "-c", str(work / "static.conf"), "-p", str(work)]
    with serving(command, f"http://127.0.0.1:{port}/", "the static upstream", None, grace=5):
        yield port


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--app", choices=sorted(APPS), default="fastapi")
    parser.add_argument("--duration", type=int, default=8, help="seconds per load (max 60)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (max 10)")
    parser.add_argument("--no-install", action="store_true", help="no apt-get of wrk or nginx")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    if not 1 <= args.duration <= 60 or not 1 <= args.rounds <= 10:
        parser.error("--duration must be in [1, 60] and --rounds in [1, 10]")
    wrk, nginx = find_wrk(not args.no_install), find_nginx(not args.no_install)
    app = APPS[args.app]()
    WORK.mkdir(parents=True, exist_ok=True)
    # (upstream, proxy) -> rounds of (requests/s, user µs, system µs per request)
    rounds: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    with tempfile.TemporaryDirectory(dir=WORK) as scratch_name, contextlib.ExitStack() as stack:
        scratch = Path(scratch_name)
        direct = direct_server(app, scratch, WORK / f"alone-{app.name}.log")
        upstreams = {f"the {app.name} seed app": (stack.enter_context(direct), app.path)}
        if nginx:
            static = stack.enter_context(static_upstream(nginx, scratch))
            upstreams["nginx answering itself"] = (static, "/")
        # (upstream, proxy) -> (URL, the proxy's CPU so far)
        targets: dict[tuple[str, str], tuple[str, Callable[[], tuple[float, float]]]] = {}
        for name, (port, path) in upstreams.items():
            log = WORK / "alone-router.log"
            url, pid = stack.enter_context(router_alone(port, path, log))
            router_cpu = functools.partial(cpu_seconds, pid, False)
            targets[name, "homerun's router alone"] = (url, router_cpu)
            if nginx:
                url, master = stack.enter_context(
                    nginx_proxy(nginx, port, path, scratch, WORK / "alone-nginx.log")
                )
                targets[name, "nginx"] = (url, functools.partial(cpu_seconds, master, True))
        for _ in range(args.rounds):
            for key, (url, cpu) in targets.items():
                print(f"# {key[1]} in front of {key[0]}: {args.duration} s", flush=True)
                user_before, system_before = cpu()
                if wrk:
                    result = run_wrk(wrk, key[1], url, None, args.duration, 1, 1)
                else:
                    result = run_python_load(key[1], url, None, args.duration, 1)
                user, system = cpu()
                per = 1e6 / max(result.requests, 1)
                rounds.setdefault(key, []).append(
                    (result.requests_per_second, (user - user_before) * per,
                     (system - system_before) * per)
                )  # fmt: skip
    lines = [
        f"One connection, {args.rounds} x {args.duration} s per pair (medians), "
        f"{'wrk' if wrk else 'the Python load generator'}:",
        "",
        "| upstream | proxy | requests/s | user µs/request | system µs/request |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    medians = {
        key: [statistics.median(values) for values in zip(*measured, strict=True)]
        for key, measured in rounds.items()
    }
    for (upstream, proxy), (rate, user, system) in medians.items():
        lines.append(f"| {upstream} | {proxy} | {rate:,.0f} | {user:.1f} | {system:.1f} |")
    print("\n".join(lines))
    output = args.output or RESULTS / f"router-alone-{utc_stamp()}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    fields = ("requests_per_second", "user_us", "system_us")
    record = {
        "benchmark": "router_alone",
        "commit": git_commit(),
        "app": app.name,
        "tool": "wrk" if wrk else "python",
        "duration_seconds": args.duration,
        "rounds": {" / ".join(key): measured for key, measured in rounds.items()},
        "medians": {
            " / ".join(key): dict(zip(fields, values, strict=True))
            for key, values in medians.items()
        },
    }
    output.write_text(json.dumps(record, indent=2) + "\n")
    print(f"# written to {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
