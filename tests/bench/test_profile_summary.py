"""bench/profile_router.py's summary of py-spy's collapsed stacks: only the event loop's thread
counts, and its waits in epoll are not work."""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_the_summary_counts_the_loops_working_samples() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("profile_router", BENCH / "profile_router.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH))
    loop = "Runner.run (asyncio/runners.py:118);run_forever (uvloop/__init__.py:80)"
    request = "ClientConnection.data_received (homerun/routing/client.py:190)"
    stacks = "\n".join(
        [
            f"{loop};{request};write (libc.so.6) 6",
            f"{loop};{request} 2",
            f"{loop};epoll_pwait (libc.so.6) 40",
            "Thread.run (threading.py:975);futex (libc.so.6) 99",  # another thread
        ]
    )
    arguments = argparse.Namespace(duration=10, connections=1, rate=250)
    report = module.summarize(stacks, "  2000 requests in 10.00s, 1 MB read\n", arguments)
    assert "2000 requests" in report and "working in 8 samples and waiting in 40" in report
    assert "75.0 %  write (libc.so.6)" in report
    assert "100.0 %  ClientConnection.data_received (client.py)" in report
