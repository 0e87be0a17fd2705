"""Run every benchmark in bench/, one after the other, then write the table of the goals.

    .venv/bin/python bench/run_all.py [--duration S] [--connections 1,32] [--tool auto|wrk|python]
        [--apps flask,fastapi] [--no-install]
    .venv/bin/python bench/run_all.py --summarize bench/results/proxy-STAMP.json ...

Each benchmark prints its own markdown tables and writes its JSON to bench/results/NAME-STAMP.json
(all with the same STAMP); the summary, one row per goal with homerun's figure, the reference
figure, their ratio, the target and whether it is met, goes to bench/results/summary-STAMP.md.
`--summarize` writes the summary of JSON files already there, without running anything.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform as host_platform
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _processes import BENCH, REPO_ROOT, RESULTS, core_count, git_commit, utc_stamp

# Scripts run in this order.
BENCHMARKS = ["proxy", "autoscale", "coldstart"]

# The goals (issue text): through homerun, each seed app reaches 95 % of the direct
# throughput and of nginx's, with p50 within 1 ms of nginx's and the router's CPU per request
# at most 2 x nginx's; a forked cold start is at most 50 ms and a fifth of a spawned one; under
# the step load at concurrency 80 the instances are ready within 3 s and serve 90 % of the
# ideal requests/s without errors.
THROUGHPUT_RATIO = 0.95
P50_OVER_NGINX_MS = 1.0
CPU_RATIO = 2.0
COLDSTART_MS = 50.0
COLDSTART_RATIO = 0.2
AUTOSCALE_CONCURRENCY = 80
READY_SECONDS = 3.0
STEADY_RATIO = 0.9

Row = tuple[str, str, str, str, str, str]  # goal, homerun, reference, ratio, target, met


def flags_for(script: str, args: argparse.Namespace) -> list[str]:
    """The proxy benchmark takes the shared load flags; the autoscaling one drives its own step
    load (200 clients, one asyncio+httpx generator) and takes only --duration, when given."""
    if script == "autoscale":
        return ["--duration", args.duration] if args.duration else []
    if script == "coldstart":
        return []  # no load to shape: timed starts, 20 per app and kind
    flags = ["--duration", args.duration or "10", "--connections", args.connections]
    flags += ["--tool", args.tool, "--apps", args.apps]
    return flags + (["--no-install"] if args.no_install else [])


def run_benchmarks(args: argparse.Namespace, stamp: str) -> dict[str, dict[str, Any] | str]:
    """Each benchmark's record, or why there is none."""
    records: dict[str, dict[str, Any] | str] = {}
    for script in BENCHMARKS:
        print(f"## {script}", flush=True)
        output = RESULTS / f"{script}-{stamp}.json"
        command = [sys.executable, str(BENCH / f"{script}.py"), *flags_for(script, args)]
        status = subprocess.run([*command, "--output", str(output)]).returncode
        records[script] = read(output) if status == 0 else f"failed (exit status {status})"
    return records


def read(path: Path) -> dict[str, Any] | str:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        return f"no results: {error}"
    resolved = path.resolve()
    shown = resolved.relative_to(REPO_ROOT) if resolved.is_relative_to(REPO_ROOT) else resolved
    record["file"] = str(shown)
    return record


# Rows -----------------------------------------------------------------------------------------


def met(ok: bool) -> str:
    return "yes" if ok else "**no**"


def number(value: float, unit: str) -> str:
    """Thousands whole, tens to one decimal, small figures (ms of CPU) to three."""
    digits = 0 if abs(value) >= 1000 else 1 if abs(value) >= 10 else 3
    return f"{value:,.{digits}f}{unit}"


def ratio_row(
    goal: str,
    figure: float,
    reference: float,
    unit: str,
    target: float,
    at_least: bool,
    judged: bool = True,
) -> Row:
    """A goal on homerun's figure divided by the reference's, at least or at most `target`;
    `judged=False` shows the ratio for information (target and met say so)."""
    sign = "≥" if at_least else "≤"
    wanted = f"{sign} {target:g}" if judged else f"({sign} {target:g} at saturation)"
    if not reference:
        return (goal, number(figure, unit), "none measured", "", wanted, "n/a")
    value = figure / reference
    ok = value >= target if at_least else value <= target
    return (
        goal,
        number(figure, unit),
        number(reference, unit),
        f"{value:.2f}",
        wanted,
        met(ok) if judged else "info",
    )


def proxy_rows(record: dict[str, Any]) -> list[Row]:
    # Results from before the FastAPI app was added hold one app's loads at the top level.
    apps = record.get("apps") or [{"app": "flask", "loads": record["loads"]}]
    rows: list[Row] = []
    for app in apps:
        # Throughput is the goal's where the app is saturated (the most connections of the
        # run): one request at a time, any proxy's extra hop lowers requests/s (nginx's
        # too, to 75-80 % of direct here), and the goal for that load is the p50 row.
        saturated = max(load["connections"] for load in app["loads"])
        for load in app["loads"]:
            where = f"proxy, {app['app']}, {load['connections']} conn."
            judged = load["connections"] == saturated
            summary = load["summary"]
            homerun, direct = summary["homerun"], summary["direct"]
            rps = "requests_per_second"
            rows.append(
                ratio_row(
                    f"{where}: requests/s vs direct",
                    homerun[rps],
                    direct[rps],
                    "/s",
                    THROUGHPUT_RATIO,
                    at_least=True,
                    judged=judged,
                )
            )
            nginx = summary.get("nginx")
            if nginx is None:
                rows.append((f"{where}: vs nginx", "no nginx in this run", "", "", "", "n/a"))
                continue
            rows.append(
                ratio_row(
                    f"{where}: requests/s vs nginx",
                    homerun[rps],
                    nginx[rps],
                    "/s",
                    THROUGHPUT_RATIO,
                    at_least=True,
                    judged=judged,
                )
            )
            gap = homerun["p50_ms"] - nginx["p50_ms"]
            rows.append(
                (
                    f"{where}: p50 latency, homerun − nginx",
                    f"{homerun['p50_ms']:.2f} ms",
                    f"{nginx['p50_ms']:.2f} ms",
                    f"{gap:+.2f} ms",
                    f"≤ {P50_OVER_NGINX_MS:g} ms",
                    met(gap <= P50_OVER_NGINX_MS),
                )
            )
            # Router CPU like for like: homerun writes a request log entry per request, so
            # against nginx writing its access log; with telemetry off, against nginx without.
            # Older results have only nginx without a log: then homerun is judged against it.
            logging_nginx = summary.get("nginx, access log")
            quiet = summary.get("homerun, telemetry off")
            pairs = [("homerun", homerun, "nginx, access log", logging_nginx)]
            if logging_nginx is None:
                pairs = [("homerun", homerun, "nginx", nginx)]
            if quiet is not None:
                pairs.append(("homerun, telemetry off", quiet, "nginx", nginx))
            for name, figures, reference_name, reference in pairs:
                if reference is None:
                    continue
                rows.append(
                    ratio_row(
                        f"{where}: router CPU per request, {name} vs {reference_name}",
                        figures["cpu_ms"],
                        reference["cpu_ms"],
                        " ms",
                        CPU_RATIO,
                        at_least=False,
                    )
                )
    return rows


def coldstart_rows(record: dict[str, Any]) -> list[Row]:
    goal = record.get("goal", {})
    most_ms, most_ratio = goal.get("median_ms", COLDSTART_MS), goal.get("ratio", COLDSTART_RATIO)
    rows: list[Row] = []
    for app in record["apps"]:
        fork = app["summary"]["zygote"]["median_ms"]
        spawn = app["summary"]["spawn"]["median_ms"]
        value = fork / spawn
        rows.append(
            (
                f"coldstart, {app['app']}: zygote median vs spawn median",
                f"{fork:.1f} ms",
                f"{spawn:.1f} ms",
                f"{value:.2f}",
                f"≤ {most_ms:g} ms and ≤ {most_ratio:g}",
                met(fork <= most_ms and value <= most_ratio),
            )
        )
    return rows


def autoscale_rows(record: dict[str, Any]) -> list[Row]:
    ideal = float(record.get("clients", 200))  # each client's request takes 1 s
    rows: list[Row] = []
    for zygote in (True, False):
        kind = "zygote" if zygote else "spawn"
        where = f"autoscale, cc {AUTOSCALE_CONCURRENCY}, {kind}"
        found = [
            r
            for r in record["results"]
            if r["concurrency"] == AUTOSCALE_CONCURRENCY
            # Results from before the field: the spawned target's name ends in ", spawn".
            and r.get("zygote", not r["target"].endswith(", spawn")) == zygote
        ]
        if not found:
            rows.append((where, "not measured in this run", "", "", "", "n/a"))
            continue
        result = found[0]
        ready = result["ready_after_seconds"]
        rows.append(
            (
                f"{where}: {result['needed_instances']} instances ready after",
                "never" if ready is None else f"{ready:.2f} s",
                "",
                "",
                f"≤ {READY_SECONDS:g} s",
                met(ready is not None and ready <= READY_SECONDS),
            )
        )
        rows.append(
            ratio_row(
                f"{where}: 2nd half requests/s vs ideal",
                result["steady_requests_per_second"],
                ideal,
                "/s",
                STEADY_RATIO,
                at_least=True,
            )
        )
        errors = result["errors"]
        rows.append((f"{where}: errors", str(errors), "", "", "0", met(errors == 0)))
    return rows


ROWS: dict[str, Callable[[dict[str, Any]], list[Row]]] = {
    "proxy": proxy_rows,
    "coldstart": coldstart_rows,
    "autoscale": autoscale_rows,
}


def source_line(name: str, record: dict[str, Any] | str) -> str:
    if isinstance(record, str):
        return f"- {name}: {record}"
    settings = record.get("settings", {})
    line = f"- {name}: `{record.get('file', '?')}` (commit {record.get('commit')}"
    line += f", {record.get('when')}, {record.get('cores')} cores"
    if name == "proxy":
        line += f", {record.get('tool')}, {settings.get('rounds')} x "
        line += f"{settings.get('duration_seconds')} s, connections {settings.get('connections')}"
        if not record.get("nginx", True):
            line += ", no nginx"
    elif name == "autoscale":
        line += f", {settings.get('duration_seconds')} s per target"
    elif name == "coldstart":
        line += f", {settings.get('runs')} runs"
    return line + ")"


def summary(records: dict[str, dict[str, Any] | str]) -> str:
    now = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    dirty = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "status", "--porcelain", "--untracked-files=no"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    commit = git_commit() + (" with uncommitted changes" if dirty else "")
    lines = [
        "# homerun benchmarks: the goals",
        "",
        f"{now}, commit {commit}, {core_count()} cores ({host_platform.machine()}).",
        "",
        "| goal | homerun | reference | ratio | target | met |",
        "| --- | ---: | ---: | ---: | --- | --- |",
    ]
    for name in BENCHMARKS:
        record = records.get(name, "not run")
        if isinstance(record, str):
            rows: list[Row] = [(f"{name}: every goal", record, "", "", "", "no result")]
        else:
            try:
                rows = ROWS[name](record)
            except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as error:
                reason = f"could not read its JSON ({type(error).__name__}: {error})"
                rows = [(f"{name}: every goal", reason, "", "", "", "no result")]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    lines += ["", "Results:", ""]
    lines += [source_line(name, records.get(name, "not run")) for name in BENCHMARKS]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run all homerun benchmarks.")
    parser.add_argument(
        "--duration",
        default=None,
        help="seconds of load per target (default: 10 for proxy.py, 20 for autoscale.py)",
    )
    parser.add_argument("--connections", default="1,32", help="keep-alive connections, e.g. 1,32")
    parser.add_argument("--tool", default="auto", choices=["auto", "wrk", "python"])
    parser.add_argument("--apps", default="flask,fastapi", help="the proxy benchmark's seed apps")
    parser.add_argument(
        "--no-install", action="store_true", help="don't apt-get install wrk or nginx"
    )
    parser.add_argument(
        "--summarize",
        nargs="+",
        type=Path,
        metavar="JSON",
        help="run nothing: summarize these results (a proxy, coldstart and autoscale JSON)",
    )
    parser.add_argument(
        "--output", type=Path, help="the summary's path (default bench/results/summary-STAMP.md)"
    )
    args = parser.parse_args(argv)
    stamp = utc_stamp()
    if args.summarize:
        records: dict[str, dict[str, Any] | str] = {}
        for path in args.summarize:
            record = read(path)
            name = record.get("benchmark") if isinstance(record, dict) else None
            if name not in ROWS:
                parser.error(f"{path}: not the JSON of a benchmark ({record!r:.80})")
            records[str(name)] = record
    else:
        records = run_benchmarks(args, stamp)
    text = summary(records)
    path = args.output or RESULTS / f"summary-{stamp}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print()
    print(text)
    print(f"summary: {path}")
    failed = [name for name, record in records.items() if isinstance(record, str)]
    if failed and not args.summarize:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
