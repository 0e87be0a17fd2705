"""Run every benchmark in bench/, one after the other, with the same load settings.

    .venv/bin/python bench/run_all.py [--duration 10] [--connections 1,32] [--tool auto|wrk|python]

Each benchmark prints its own markdown table and writes its JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent
# Scripts run in this order; each accepts the shared flags below.
BENCHMARKS = ["proxy.py"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Run all homerun benchmarks.")
    parser.add_argument("--duration", default="10", help="seconds of load per target")
    parser.add_argument("--connections", default="1,32", help="keep-alive connections, e.g. 1,32")
    parser.add_argument("--tool", default="auto", choices=["auto", "wrk", "python"])
    args = parser.parse_args(argv)
    shared = ["--duration", args.duration, "--connections", args.connections, "--tool", args.tool]
    failed = []
    for script in BENCHMARKS:
        print(f"## {script}", flush=True)
        if subprocess.run([sys.executable, str(BENCH / script), *shared]).returncode != 0:
            failed.append(script)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
