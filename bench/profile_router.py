"""Where the router's CPU goes per request: py-spy samples a real daemon while wrk loads one
deployed seed app through it, and the samples are summed by function (own time, and the time
of the router's steps with what they call).

    .venv/bin/python bench/profile_router.py [--duration 10] [--perf] [--py-spy PATH]

Bounded: one daemon, one deploy, `--duration` seconds of load (at most 60). The figures go to
bench/results/profile-STAMP.txt; bench/README.md shows a run.
"""

from __future__ import annotations

import argparse
import collections
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _processes import RESULTS, WORK, Daemon, answers, utc_stamp, wait_for

APP = Path(__file__).resolve().parent.parent / "tests" / "apps" / "fastapi_seed"
# The router's steps, by the function that starts each: inclusive time is shown for these.
STEPS = {
    "ClientConnection.data_received (client.py)": "a request read, parsed (httptools), routed, "
    "its head rewritten, and started",
    "Exchange.start (exchange.py)": "a slot and a pooled connection, the request written",
    "UpstreamConnection.data_received (upstream.py)": "a response read, parsed, written to the "
    "client, the exchange ended",
    "Exchange._end (exchange.py)": "slot released, request record",
    "Telemetry.tick (telemetry.py)": "request logs and metrics, once a second",
    "write (libc.so.6)": "send(2) of requests and responses",
    "read (libc.so.6)": "recv(2)",
    "llhttp__internal__run (llhttp.c)": "HTTP parsing in C",
}
# A sample whose innermost frame is one of these is a thread waiting, not working.
IDLE = ("epoll_pwait", "epoll_wait", "futex", "pthread_cond", "sem_", "select", "poll")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    beside = Path(sys.executable).with_name("py-spy")  # the bench extra installs it here
    parser.add_argument(
        "--py-spy",
        default=str(beside) if beside.exists() else shutil.which("py-spy"),
        help="the py-spy program",
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds of load (max 60)")
    parser.add_argument("--connections", type=int, default=1)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument(
        "--perf",
        action="store_true",
        help="also a second load under `perf record`: the daemon's CPU by library and kernel",
    )
    args = parser.parse_args(argv)
    if not args.py_spy:
        parser.error("py-spy not found: pip install py-spy (or give --py-spy PATH)")
    if not 1 <= args.duration <= 60:
        parser.error("--duration must be in [1, 60]")
    wrk = shutil.which("wrk")
    if not wrk:
        parser.error("wrk not found: apt-get install wrk")
    WORK.mkdir(parents=True, exist_ok=True)
    daemon = Daemon(WORK, WORK / "profile-daemon.log")
    try:
        daemon.start()
        daemon.deploy("api", APP, timeout=300)
        host = f"api.localhost:{daemon.port}"
        url = f"http://127.0.0.1:{daemon.port}/usuarios"  # the async endpoint (/produtos sleeps)
        wait_for(lambda: answers(url, host), 30, "the deployed app")
        with tempfile.TemporaryDirectory() as scratch:
            raw = Path(scratch) / "stacks.txt"
            spy = subprocess.Popen(
                [
                    args.py_spy, "record", "--pid", str(daemon.pid), "--rate", str(args.rate),
                    "--duration", str(args.duration), "--format", "raw", "--native", "--threads",
                    "--output", str(raw),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            load = subprocess.run(
                [
                    wrk, "-t1", f"-c{args.connections}", f"-d{args.duration}s",
                    "-H", f"Host: {host}", url,
                ],
                capture_output=True,
                text=True,
                timeout=args.duration + 30,
            )  # fmt: skip
            spy.wait(timeout=args.duration + 30)
            report = summarize(raw.read_text(), load.stdout, args)
            if args.perf:
                report += by_library(daemon.pid, wrk, host, url, args, Path(scratch))
    finally:
        daemon.stop()
    RESULTS.mkdir(parents=True, exist_ok=True)
    output = RESULTS / f"profile-{utc_stamp()}.txt"
    output.write_text(report)
    print(report)
    print(f"# written to {output}")
    return 0


def summarize(stacks: str, wrk_output: str, args: argparse.Namespace) -> str:
    """Own and inclusive time per function over the samples of the event loop's thread in
    which it was working (not waiting in epoll)."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    busy = idle = 0
    for line in stacks.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [_frame(frame) for frame in stack.split(";")]
        frames = [frame for frame in frames if frame]
        if not any(frame.startswith("Runner.run") for frame in frames):
            continue  # another thread (log flushing, the thread pool)
        leaf = frames[-1]
        if leaf.startswith(IDLE) or leaf.startswith("0x"):
            idle += count
            continue
        busy += count
        own[leaf] += count
        for frame in set(frames):
            inclusive[frame] += count
    requests = next(
        (line.split()[0] for line in wrk_output.splitlines() if "requests in" in line), "?"
    )
    total = busy or 1
    lines = [
        f"# py-spy --native of the daemon, {args.duration} s of wrk -c{args.connections} against "
        f"the FastAPI seed (GET /usuarios) through the router: {requests} requests; the event "
        f"loop's thread was working in {busy} samples and waiting in {idle} ({args.rate}/s)",
        "",
        "own time (the function itself), % of the loop's working samples:",
    ]
    lines += [f"  {100 * count / total:5.1f} %  {name}" for name, count in own.most_common(30)]
    lines += ["", "the router's steps with what they call, % of the working samples:"]
    for name, what in STEPS.items():
        lines.append(f"  {100 * inclusive.get(name, 0) / total:5.1f} %  {name}: {what}")
    return "\n".join(lines) + "\n"


def by_library(
    pid: int, wrk: str, host: str, url: str, args: argparse.Namespace, scratch: Path
) -> str:
    """perf's samples of the daemon (all threads) under the same load, by shared object: what
    the kernel, the interpreter, uvloop, httptools and libc each take. No sampling pause."""
    data = scratch / "perf.data"
    recorder = subprocess.Popen(
        ["perf", "record", "-F", "999", "-p", str(pid), "-o", str(data), "--", "sleep",
         str(args.duration)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    subprocess.run(
        [wrk, "-t1", f"-c{args.connections}", f"-d{args.duration}s", "-H", f"Host: {host}", url],
        capture_output=True,
        timeout=args.duration + 30,
    )
    recorder.wait(timeout=args.duration + 30)
    report = subprocess.run(
        ["perf", "report", "-i", str(data), "--stdio", "--sort", "dso", "--no-children"],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    rows = [line.strip() for line in report.splitlines() if line.strip() and line[:1] != "#"]
    return "\nperf record of the daemon under the same load, by shared object:\n" + "".join(
        f"  {row}\n" for row in rows[:12]
    )


def _frame(frame: str) -> str:
    """py-spy's `function (path/file.py:LINE)` as `function (file.py)`."""
    name, _, where = frame.partition(" (")
    if not where:
        return name.strip()
    path = where.rstrip(")").rsplit(":", 1)[0]
    return f"{name.strip()} ({Path(path).name})"


if __name__ == "__main__":
    raise SystemExit(main())
