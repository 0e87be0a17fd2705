"""Worker pools on a real daemon: instances with no port kept at their count, started again
when one dies, replaced by a deploy, stopped by a delete."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from .harness import (
    APPS,
    Platform,
    describe,
    namespace_pid,
    process_alive,
    process_environ,
    wait_until_dead,
)

# The dashboard's browser fixtures (a page on Chromium that records the console's errors).
from .test_dashboard import Watched, browser, dashboard_url, watched  # noqa: F401

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

APP = APPS / "pool_worker"


def workers(name: str) -> dict[int, dict[str, str]]:
    """Host pid -> environment of each live instance of the pool `name` (its `python main.py`,
    not the shell or sandbox around it), from /proc: an app in a sandbox sees its own PID
    namespace's pids and none of the test's folders."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        env = process_environ(pid)
        if env.get("CLOUD_RUN_WORKER_POOL") != name:
            continue
        try:
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv[-2:] == [b"main.py", b""] and process_alive(pid):
            found[pid] = env
    return found


def alive(name: str) -> set[int]:
    return set(workers(name))


def wait_for_alive(name: str, count: int, *, besides: set[int], timeout: float) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = alive(name) - besides
        if len(now) >= count:
            return now
        time.sleep(0.1)
    pytest.fail(f"not {count} new live worker(s) after {timeout}s: {workers(name)}")


def pool(platform: Platform, name: str) -> dict[str, Any]:
    result = platform.run("worker-pools", "describe", name, "--format", "json")
    assert result.returncode == 0, describe(result)
    answer: dict[str, Any] = json.loads(result.stdout)
    return answer


def test_a_worker_pool_keeps_its_instances_running(
    platform: Platform,
    tmp_path: Path,
    watched: Watched,  # noqa: F811 - test_dashboard's fixture, imported above
) -> None:
    result = platform.run(
        "worker-pools", "deploy", "consumer", "--source", str(APP), "--instances", "2",
        "--set-env-vars", "QUEUE=orders", timeout=270,
    )  # fmt: skip
    assert result.returncode == 0, describe(result)
    assert "Worker pool [consumer] has been created: revision [consumer-00001] runs 2" in (
        result.stdout
    )
    first = wait_for_alive("consumer", 2, besides=set(), timeout=30)
    env = workers("consumer")[min(first)]
    assert env["CLOUD_RUN_WORKER_POOL"] == "consumer"
    assert env["CLOUD_RUN_REVISION"] == "consumer-00001"
    assert "PORT" not in env and "K_SERVICE" not in env and env["QUEUE"] == "orders"
    assert pool(platform, "consumer")["running"] == 2

    # An instance that dies is started again (the first crash waits 10 s).
    victim = min(first)
    os.kill(victim, signal.SIGKILL)
    assert wait_until_dead(victim, timeout=10)
    replacement = wait_for_alive("consumer", 1, besides=first, timeout=30)
    assert len(replacement) == 1 and len(alive("consumer")) == 2
    slots = pool(platform, "consumer")["slots"]
    restarted = [slot for slot in slots if slot["restarts"] == 1]
    assert len(restarted) == 1 and restarted[0]["last_exit"] == "killed by SIGKILL"

    # The dashboard lists the pool with its instances and the restart.
    page = watched.page
    page.goto(dashboard_url(platform) + "/")
    row = page.get_by_test_id("pool-consumer")
    row.wait_for()
    text = row.inner_text()
    assert "consumer-00001" in text and "2/2 running" in text and "killed by SIGKILL" in text
    assert watched.errors == []

    # A deploy without --source keeps the code and replaces every instance.
    before = alive("consumer")
    result = platform.run("worker-pools", "deploy", "consumer", "--instances", "1", timeout=120)
    assert result.returncode == 0, describe(result)
    assert "revision [consumer-00002] runs 1 instance(s)" in result.stdout
    assert "Building" not in result.stdout + result.stderr
    for pid in before:
        assert wait_until_dead(pid, timeout=15), f"worker {pid} of the old revision still runs"
    (now,) = wait_for_alive("consumer", 1, besides=before, timeout=30)
    assert workers("consumer")[now]["CLOUD_RUN_REVISION"] == "consumer-00002"
    said = namespace_pid(now)  # the pid the app sees as its own
    time.sleep(1.5)  # no second instance comes
    assert alive("consumer") == {now}

    logs = platform.run("worker-pools", "logs", "read", "consumer", "--limit", "100")
    assert f"worker {said} pulling from orders" in logs.stdout, describe(logs)
    assert "ended (killed by SIGKILL); it starts again in 10s" in logs.stdout

    deleted = platform.run("worker-pools", "delete", "consumer", "-q")
    assert deleted.returncode == 0, describe(deleted)
    assert wait_until_dead(now, timeout=15)
    listed = platform.run("worker-pools", "list")
    assert "consumer" not in listed.stdout


@pytest.mark.parametrize("stop", ["down", "kill"])
def test_a_worker_pool_runs_again_after_the_daemon_restarts(
    own_platform: Platform, tmp_path: Path, stop: str
) -> None:
    result = own_platform.run("worker-pools", "deploy", "steady", "--source", str(APP), timeout=270)
    assert result.returncode == 0, describe(result)
    (first,) = wait_for_alive("steady", 1, besides=set(), timeout=30)
    if stop == "kill":
        own_platform.kill()
    else:
        assert own_platform.down().returncode == 0
    assert wait_until_dead(first, timeout=15), f"an instance outlived its daemon ({stop})"
    own_platform.start()
    (second,) = wait_for_alive("steady", 1, besides={first}, timeout=30)
    assert pool(own_platform, "steady")["running"] == 1
    assert workers("steady")[second]["CLOUD_RUN_REVISION"] == "steady-00001"
