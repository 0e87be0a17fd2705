"""Run every benchmark in bench/, one after the other, with the same load settings.

    .venv/bin/python bench/run_all.py [--duration S] [--connections 1,32] [--tool auto|wrk|python]

Each benchmark prints its own markdown table and writes its results under bench/results/.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# Scripts run in this order.
BENCHMARKS = ["proxy.py", "autoscale.py", "coldstart.py"]


def flags_for(script: str, args: argparse.Namespace) -> list[str]:
    """The proxy benchmark takes the shared load flags; the autoscaling one drives its own step
    load (200 clients, one asyncio+httpx generator) and takes only --duration, when given."""
    if script == "autoscale.py":
        return ["--duration", args.duration] if args.duration else []
    if script == "coldstart.py":
        return []  # no load to shape: timed starts, 20 per app and kind
    return [
        "--duration",
        args.duration or "10",
        "--connections",
        args.connections,
        "--tool",
        args.tool,
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run all homerun benchmarks.")
    parser.add_argument(
        "--duration",
        default=None,
        help="seconds of load per target (default: 10 for proxy.py, 20 for autoscale.py)",
    )
    parser.add_argument("--connections", default="1,32", help="keep-alive connections, e.g. 1,32")
    parser.add_argument("--tool", default="auto", choices=["auto", "wrk", "python"])
    args = parser.parse_args(argv)
    failed = []
    for script in BENCHMARKS:
        print(f"## {script}", flush=True)
        command = [sys.executable, str(BENCH / script), *flags_for(script, args)]
        if subprocess.run(command).returncode != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
