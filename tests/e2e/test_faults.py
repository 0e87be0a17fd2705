"""Faults, each against a real daemon: an instance killed mid-request and under load, an
instance that ignores SIGTERM, the daemon killed during a deploy and under load, a second daemon
on the same HOMERUN_HOME. (Disk and store faults: test_storage_faults.py.)"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx
import pytest

from .harness import (
    APPS,
    HOMERUN,
    Platform,
    describe,
    free_port,
    host_pid,
    json_lines_whole,
    process_alive,
    wait_until_dead,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WHOAMI = APPS / "whoami"


def until(condition: Callable[[], object], what: str, within: float = 30.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def serving(results: list[tuple[float, int, str]], service: str) -> set[tuple[int, str, int]]:
    """(pid as the app sees it, service, port) of each instance that answered 200 in `results`:
    for host_pid (spawned instances in sandboxes are each pid 2 of their own)."""
    return {
        (answer["pid"], service, answer["port"])
        for answer in (json.loads(body) for _, status, body in results if status == 200)
    }


def revisions(platform: Platform, service: str) -> dict[str, str]:
    """Revision name -> status."""
    return {r["name"]: r["status"] for r in platform.describe_service(service)["revisions"]}


def test_an_instance_killed_mid_request(platform: Platform) -> None:
    """In-flight requests get 502 (or 503), the next ones a new instance."""
    platform.deploy_ok("victim", WHOAMI, "--concurrency", "10")
    victim = host_pid(platform.request("victim", "GET", "/").json()["pid"], "victim")

    def slow() -> int:
        return platform.request("victim", "GET", "/slow", params={"seconds": 20}).status_code

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        in_flight = [pool.submit(slow) for _ in range(3)]

        def all_in_flight() -> bool:
            revision = platform.describe_service("victim")["revisions"][0]
            return bool(revision["in_flight"] == 3)

        until(all_in_flight, "three requests in flight")
        os.killpg(os.getpgid(victim), signal.SIGKILL)
        statuses = [future.result(timeout=30) for future in in_flight]
    assert set(statuses) <= {502, 503} and statuses, statuses

    after = platform.request("victim", "GET", "/")
    assert after.status_code == 200
    assert host_pid(after.json()["pid"], "victim") != victim
    logged = platform.run("logs", "read", "victim", "--limit", "100", check=True).stdout
    assert "killed by SIGKILL" in logged


def test_an_instance_that_ignores_sigterm_is_killed_after_the_grace(platform: Platform) -> None:
    """The shared daemon's stop-grace-seconds is 3: TERM is ignored, KILL comes 3 s later."""
    platform.deploy_ok("stubborn", WHOAMI, "--set-env-vars", "IGNORE_SIGTERM=1")
    pid = host_pid(platform.request("stubborn", "GET", "/").json()["pid"], "stubborn")
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


@dataclass
class Load:
    """`threads` clients sending GET `path` in a loop until stopped (bounded in time and
    count); what each got, with when."""

    platform: Platform
    service: str
    path: str
    threads: int
    results: list[tuple[float, int, str]] = field(default_factory=list)  # (time, status, body)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> list[threading.Thread]:
        workers = [threading.Thread(target=self._client) for _ in range(self.threads)]
        for worker in workers:
            worker.start()
        return workers

    def _client(self) -> None:
        deadline = time.monotonic() + 120
        with self.platform.client(self.service, timeout=30) as client:
            for _ in range(2000):
                if self.stop.is_set() or time.monotonic() > deadline:
                    return
                try:
                    response = client.get(self.path)
                    outcome = (time.monotonic(), response.status_code, response.text)
                except httpx.TransportError as error:
                    outcome = (time.monotonic(), 0, repr(error))
                    time.sleep(0.05)
                self.results.append(outcome)


def test_an_instance_killed_under_load_fails_only_its_own_requests(platform: Platform) -> None:
    """Three instances of two slots each, six clients keeping them full: the killed one's two
    requests get a 502 that says the instance exited; every other request is answered."""
    platform.deploy_ok(
        "loaded", WHOAMI, "--concurrency", "2", "--min-instances", "3", "--max-instances", "6"
    )
    until(lambda: len(platform.describe_service("loaded")["revisions"][0]["instances"]) == 3, "3")
    load = Load(platform, "loaded", "/slow?seconds=0.5", threads=6)
    workers = load.run()
    try:
        time.sleep(3)
        victim = host_pid(*sorted(serving(load.results, "loaded"))[0])
        killed_at = time.monotonic()
        os.killpg(os.getpgid(victim), signal.SIGKILL)
        time.sleep(4)
    finally:
        load.stop.set()
        for worker in workers:
            worker.join(timeout=60)
    failed = [(status, body) for _, status, body in load.results if status != 200]
    late = [result for result in load.results if result[0] > killed_at + 1]
    after = [host_pid(*instance) for instance in serving(late, "loaded")]
    assert len(load.results) > 40, load.results
    assert 1 <= len(failed) <= 2, failed  # the requests it held, and no other
    for status, body in failed:
        assert status == 502 and "the instance exited while handling the request" in body, body
    assert victim not in after and len([at for at, _, _ in late]) > 10


def test_the_daemon_killed_under_load_recovers_at_restart(own_platform: Platform) -> None:
    """SIGKILL while requests run and logs are written: the restart kills what the old daemon
    left, the store and logs are whole, and the service answers again."""
    platform = own_platform
    platform.deploy_ok("survivor", WHOAMI, "--concurrency", "4")
    load = Load(platform, "survivor", "/slow?seconds=0.05", threads=4)
    workers = load.run()
    try:
        time.sleep(2)
        served = {host_pid(*instance) for instance in serving(load.results, "survivor")}
        assert served, load.results
        killed_at = time.monotonic()
        platform.kill()
        time.sleep(1)
        assert all(wait_until_dead(pid, timeout=10) for pid in served)  # they die with it
        database = f"file:{platform.home}/homerun.db?mode=ro"
        with contextlib.closing(sqlite3.connect(database, uri=True)) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert json_lines_whole(platform.home / "logs") == []
        platform.start()
        restarted_at = time.monotonic()
        time.sleep(3)
    finally:
        load.stop.set()
        for worker in workers:
            worker.join(timeout=60)
    before = [status for at, status, _ in load.results if at < killed_at]
    after = [status for at, status, _ in load.results if at > restarted_at + 1]
    assert before and set(before) == {200}, set(before)
    assert len(after) > 10 and set(after) == {200}, after
    logged = platform.run("logs", "read", "survivor", "--limit", "50", check=True).stdout
    assert "GET" in logged  # request entries are written again
