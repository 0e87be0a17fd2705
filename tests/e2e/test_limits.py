"""Instances stay inside what they were given, tried as a hostile app would: a detached child
does not outlive `services delete`, `homerun down` or a SIGKILLed daemon; an app past
`--memory` is ended with Cloud Run's line and replaced while the service keeps answering; a
CPU burner at `--cpu 0.5` gets half a core. (That a revision scaled out on a busy loop leaves
its neighbour its share is measured in tests/runtime/test_limited.py, as CPU time: a
neighbour's request rate on this shared 2-core machine says more about its other load.)

These need root and cgroup v1 memory and cpu hierarchies (this machine's); elsewhere the
daemon says what it could not set up and they are skipped."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from homerun.runtime.cgroups import available

from .harness import APPS, Platform, describe, process_alive, wait_until_dead

pytestmark = pytest.mark.e2e

HOSTILE = APPS / "hostile"


@pytest.fixture(autouse=True)
def _cgroups() -> None:
    probe = available("e2e-probe-" + hashlib.sha256(os.urandom(8)).hexdigest()[:8])
    for folder in probe.folders.values():
        folder.rmdir()
    if os.geteuid() != 0 or not {"memory", "cpu"} <= set(probe.folders):
        pytest.skip(f"needs root and cgroup v1 memory and cpu: {probe.warning()}")


def detach(platform: Platform, service: str) -> int:
    response = platform.request(service, "GET", "/detach")
    assert response.status_code == 200, response.text
    # Found by its marker: in a sandbox the app's pid is its PID namespace's, not ours.
    marker = response.json()["marker"].encode()
    found = [
        int(entry.name)
        for entry in Path("/proc").iterdir()
        if entry.name.isdigit() and marker in _cmdline(entry)
    ]
    assert len(found) == 1, found
    pid = found[0]
    assert process_alive(pid)
    return pid


def _cmdline(entry: Path) -> bytes:
    try:
        return (entry / "cmdline").read_bytes()
    except OSError:
        return b""


def test_a_detached_child_is_gone_after_services_delete(platform: Platform) -> None:
    platform.deploy_ok("detacher", HOSTILE)
    pid = detach(platform, "detacher")
    platform.run("services", "delete", "detacher", check=True, timeout=60)
    assert wait_until_dead(pid, timeout=10), f"pid {pid} outlived `services delete`"


def test_a_detached_child_is_gone_after_a_daemon_kill_and_after_down(
    own_platform: Platform,
) -> None:
    platform = own_platform
    platform.deploy_ok("detacher", HOSTILE)
    pid = detach(platform, "detacher")
    platform.kill()  # SIGKILL: the daemon cleans nothing up itself
    assert wait_until_dead(pid, timeout=15), f"pid {pid} outlived its SIGKILLed daemon"

    platform.start()
    pid = detach(platform, "detacher")
    result = platform.down()
    assert result.returncode == 0, describe(result)
    assert wait_until_dead(pid, timeout=10), f"pid {pid} outlived `homerun down`"


def test_an_app_past_its_memory_limit_is_ended_logged_and_replaced(platform: Platform) -> None:
    platform.deploy_ok("memhog", HOSTILE, "--memory", "128Mi")
    assert platform.request("memhog", "GET", "/").status_code == 200
    hog = platform.request("memhog", "GET", "/hog?mib=400")
    assert hog.status_code == 502, hog.text
    # The service keeps answering: the next request gets a new instance.
    assert platform.request("memhog", "GET", "/").text == "hello"
    logs = platform.run("logs", "read", "memhog", "--limit", "50", timeout=30)
    assert "Memory limit of 128 MiB exceeded with " in logs.stdout, describe(logs)
    described = platform.run("services", "describe", "memhog", "--format", "yaml").stdout
    assert "memory: 128Mi" in described
    assert "past its memory limit of 128 MiB" in logs.stdout, describe(logs)
    revision = platform.describe_service("memhog")["revisions"][0]
    assert "control groups of its own (memory, cpu" in revision["start_mode"]["reason"]
    assert revision["memory_limit_exceeded"] == 1


def test_a_cpu_burner_at_half_a_core_uses_half_a_core(platform: Platform) -> None:
    platform.deploy_ok("halfcore", HOSTILE, "--cpu", "0.5")
    used = platform.request("halfcore", "GET", "/burn?seconds=2").json()
    # The CFS quota: 50 ms in every 100 ms period.
    assert 0.05 < used["cpu"] / used["wall"] <= 0.56, used


def test_homerun_home_is_the_daemons_users_alone(platform: Platform) -> None:
    # The harness made it with the default mode (0755 under umask 022).
    assert stat.S_IMODE(platform.home.stat().st_mode) == 0o700


def test_a_job_task_past_its_memory_limit_fails_saying_so(
    platform: Platform, tmp_path: Path
) -> None:
    source = tmp_path / "hog"
    source.mkdir()
    # Written, so every page is really used (a zero-filled allocation would not be).
    (source / "main.py").write_text("hoard = b'x' * (400 << 20)\nprint('survived')\n")
    (source / "Procfile").write_text("web: python main.py\n")
    created = platform.run(
        "jobs", "create", "hogjob", "--source", str(source), "--memory", "128Mi",
        "--max-retries", "0", timeout=270,
    )  # fmt: skip
    assert created.returncode == 0, describe(created)
    result = platform.run("jobs", "execute", "hogjob", "--wait", timeout=120)
    assert result.returncode == 1, describe(result)
    assert "Memory limit of 128 MiB exceeded with " in result.stderr, describe(result)
