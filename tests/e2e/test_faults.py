"""Faults, each against a real daemon: an instance killed mid-request, an instance that ignores
SIGTERM, the daemon killed during a deploy, a second daemon on the same HOMERUN_HOME."""

from __future__ import annotations

import concurrent.futures
import os
import signal
import subprocess
import time
from collections.abc import Callable

import httpx
import pytest

from .harness import (
    APPS,
    HOMERUN,
    Platform,
    describe,
    free_port,
    process_alive,
    wait_until_dead,
)

pytestmark = pytest.mark.e2e

WHOAMI = APPS / "whoami"


def until(condition: Callable[[], object], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def revisions(platform: Platform, service: str) -> dict[str, str]:
    """Revision name -> status."""
    return {r["name"]: r["status"] for r in platform.describe_service(service)["revisions"]}


def test_an_instance_killed_mid_request(platform: Platform) -> None:
    """In-flight requests get 502 (or 503), the next ones a new instance."""
    platform.deploy_ok("victim", WHOAMI, "--concurrency", "10")
    first_pid = platform.request("victim", "GET", "/").json()["pid"]

    def slow() -> int:
        return platform.request("victim", "GET", "/slow", params={"seconds": 20}).status_code

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        in_flight = [pool.submit(slow) for _ in range(3)]

        def all_in_flight() -> bool:
            revision = platform.describe_service("victim")["revisions"][0]
            return bool(revision["in_flight"] == 3)

        until(all_in_flight, "three requests in flight")
        os.killpg(os.getpgid(first_pid), signal.SIGKILL)
        statuses = [future.result(timeout=30) for future in in_flight]
    assert set(statuses) <= {502, 503} and statuses, statuses

    after = platform.request("victim", "GET", "/")
    assert after.status_code == 200
    assert after.json()["pid"] != first_pid
    logged = platform.run("logs", "read", "victim", "--limit", "100", check=True).stdout
    assert "killed by SIGKILL" in logged


def test_an_instance_that_ignores_sigterm_is_killed_after_the_grace(platform: Platform) -> None:
    """The shared daemon's stop-grace-seconds is 3: TERM is ignored, KILL comes 3 s later."""
    platform.deploy_ok("stubborn", WHOAMI, "--set-env-vars", "IGNORE_SIGTERM=1")
    pid = platform.request("stubborn", "GET", "/").json()["pid"]
    # A new revision retires the old one: drained (nothing in flight), TERM, KILL.
    update = platform.run("services", "update", "stubborn", "--update-env-vars", "V=2")
    assert update.returncode == 0, describe(update)
    retired_at = time.monotonic()
    time.sleep(1.0)  # well inside the grace: TERM alone did not stop it
    assert process_alive(pid), "the instance died before its stop grace was over"
    assert wait_until_dead(pid, timeout=15), "the instance outlived its stop grace"
    assert time.monotonic() - retired_at >= 2.5
    logged = platform.run("logs", "read", "stubborn", "--limit", "100", check=True).stdout
    assert "ignoring SIGTERM" in logged and "killed by SIGKILL" in logged, logged


def test_the_daemon_killed_during_a_deploy(own_platform: Platform) -> None:
    """After a restart the service serves its last ready revision; the revision that was
    starting when the daemon died is marked failed."""
    own_platform.deploy_ok("sturdy", WHOAMI)
    ready = own_platform.request("sturdy", "GET", "/").json()["K_REVISION"]
    # The next revision sleeps before it listens: the deploy waits in its startup probe.
    deploying = subprocess.Popen(
        [
            *HOMERUN, "services", "update", "sturdy", "--update-env-vars",
            "SLEEP_BEFORE_LISTEN=120", "--startup-timeout", "300",
        ],
        env=own_platform.env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        until(lambda: "starting" in revisions(own_platform, "sturdy").values(), "the deploy")
        starting = next(n for n, s in revisions(own_platform, "sturdy").items() if s == "starting")
        own_platform.kill()
        _, stderr = deploying.communicate(timeout=30)
    finally:
        if deploying.poll() is None:
            deploying.kill()
    assert deploying.returncode != 0
    assert "daemon" in stderr.lower(), stderr
    # Killed during a build instead, a revision is never recorded (that happens once the build
    # is done), and its half-built artifact folder is removed at the next start.
    half_built = own_platform.home / "revisions" / "sturdy-00099-cut"
    (half_built / "rootfs").mkdir(parents=True)

    own_platform.start()
    until(lambda: not half_built.exists(), "the half-built artifact to go")
    statuses = revisions(own_platform, "sturdy")
    assert statuses[starting] == "failed" and statuses[ready] == "ready", statuses
    failed = own_platform.run("revisions", "describe", starting, check=True).stdout
    assert "the daemon stopped before this revision became ready" in failed
    assert own_platform.request("sturdy", "GET", "/").json()["K_REVISION"] == ready


def test_a_second_daemon_on_the_same_home_refuses(own_platform: Platform) -> None:
    port = free_port()
    second = subprocess.run(
        [*HOMERUN, "up", "--port", str(port)],
        env=own_platform.env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert second.returncode == 1
    assert "already runs" in second.stderr and str(own_platform.home) in second.stderr

    # A daemon that does not answer (stopped) still holds the home's lock: the store is never
    # opened twice.
    os.kill(own_platform.pid, signal.SIGSTOP)
    try:
        blocked = subprocess.run(
            [*HOMERUN, "up", "--port", str(port)],
            env=own_platform.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    finally:
        os.kill(own_platform.pid, signal.SIGCONT)
    assert blocked.returncode == 1, describe(blocked)
    assert "another homerun daemon already runs" in blocked.stderr, describe(blocked)
    assert f"(pid {own_platform.pid})" in blocked.stderr
    assert "homerun down" in blocked.stderr
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/", timeout=2, trust_env=False)
    assert own_platform.run("status").returncode == 0
