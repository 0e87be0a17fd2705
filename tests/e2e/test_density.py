"""What services cost at zero instances: a retired or deleted revision leaves no zygote behind,
and idle zygotes are stopped to keep within `zygote-memory-budget-bytes`, the first request
after that still answered. Processes are found by name (`homerun-zygote`, `homerun-base`)
among the daemon's descendants, and a revision's zygote by K_REVISION in /proc/PID/environ."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import APPS, Platform, process_alive, process_environ, process_name, running_platform

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FLASK_SEED = APPS / "flask_seed"
STABLE_WINDOW = 6.0
GRACE = 1.0
SHORT_WINDOWS = {
    # Bases shared by revisions' zygotes are the unsandboxed zygote's: a sandboxed revision's
    # zygote starts inside its own sandbox, from no base (tests/e2e/test_sandbox.py).
    "sandbox": "off",
    "stop-grace-seconds": 3,
    "deploy-settle-seconds": 0.2,
    "autoscaler": {
        "stable-window": f"{STABLE_WINDOW:g}s",
        "scale-to-zero-grace-period": f"{GRACE:g}s",
        "tick-interval": "0.5s",
    },
}
# Idle for the stable window and the grace, a few ticks, the instance's SIGTERM.
AT_ZERO_SECONDS = STABLE_WINDOW + GRACE + 20.0


def descendants(root: int) -> list[int]:
    """Live processes below `root` (read from each process's parent in /proc/PID/stat)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = [], [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, its_parent in parents.items() if its_parent == parent]
        found += [pid for pid in children if process_alive(pid)]
        frontier += children
    return found


def zygotes(platform: Platform) -> dict[str, list[int]]:
    """The daemon's zygotes by revision (K_REVISION), and its bases under "base"."""
    found: dict[str, list[int]] = {}
    for pid in descendants(platform.pid):
        name = process_name(pid)
        if name == "homerun-base":
            found.setdefault("base", []).append(pid)
        elif name == "homerun-zygote":
            revision = process_environ(pid).get("K_REVISION", "?")
            found.setdefault(revision, []).append(pid)
    return found


def eventually(condition: object, timeout: float, what: str) -> None:
    assert callable(condition)
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} within {timeout:g} s")
        time.sleep(0.2)


def revision_of(platform: Platform, service: str) -> str:
    return str(platform.describe_service(service)["latest_ready_revision"])


def instances(platform: Platform, service: str) -> int:
    described = platform.describe_service(service)
    return sum(len(revision["instances"]) for revision in described["revisions"])


@pytest.fixture
def short_windows(tmp_path: Path, venv_cache: Path) -> Iterator[Platform]:
    with running_platform(tmp_path / "home", venv_cache, SHORT_WINDOWS) as platform:
        yield platform


@pytest.fixture
def no_budget(tmp_path: Path, venv_cache: Path) -> Iterator[Platform]:
    config = {**SHORT_WINDOWS, "zygote-memory-budget-bytes": 0}
    with running_platform(tmp_path / "home", venv_cache, config) as platform:
        yield platform


def test_a_retired_revision_and_a_deleted_service_leave_no_zygote(
    short_windows: Platform,
) -> None:
    platform = short_windows
    platform.deploy_ok("lifecycle", FLASK_SEED, "--set-env-vars", "ROUND=1")
    first = revision_of(platform, "lifecycle")
    assert first in zygotes(platform), zygotes(platform)
    assert "base" in zygotes(platform)

    # An update retires the first revision: once its instance has drained, its zygote goes.
    platform.deploy_ok("lifecycle", FLASK_SEED, "--set-env-vars", "ROUND=2")
    second = revision_of(platform, "lifecycle")
    eventually(lambda: first not in zygotes(platform), 20, f"{first}'s zygote still runs")
    assert second in zygotes(platform)

    # The second revision at zero keeps its zygote (and the first request is still fast).
    eventually(lambda: instances(platform, "lifecycle") == 0, AT_ZERO_SECONDS, "not at zero")
    assert second in zygotes(platform)
    assert platform.request("lifecycle", "GET", "/").status_code == 200

    # Deleting the service stops its zygote, and the base no revision uses any more.
    platform.run("services", "delete", "lifecycle", check=True)
    eventually(lambda: not zygotes(platform), 20, f"zygotes left: {zygotes(platform)}")


def test_with_a_budget_of_nothing_services_at_zero_keep_no_zygote_and_still_answer(
    no_budget: Platform,
) -> None:
    platform = no_budget
    for service in ("dense-a", "dense-b"):
        platform.deploy_ok(service, FLASK_SEED)
    eventually(
        lambda: instances(platform, "dense-a") == instances(platform, "dense-b") == 0,
        AT_ZERO_SECONDS,
        "the services are not at zero",
    )
    eventually(lambda: not zygotes(platform), 20, f"zygotes left: {zygotes(platform)}")
    mode = start_mode(platform, "dense-a")
    assert mode["mode"] == "zygote" and "stopped while the revision was idle" in mode["reason"]
    for service in ("dense-a", "dense-b"):
        response = platform.request(service, "GET", "/")
        assert response.status_code == 200, response.text
        assert response.json() == {"hello": "world"}
    mode = start_mode(platform, "dense-b")
    assert mode["mode"] == "zygote" and "forked from the base" in mode["reason"], mode


def start_mode(platform: Platform, service: str) -> dict[str, str]:
    described = platform.describe_service(service)
    name = described["latest_ready_revision"]
    revision = next(r for r in described["revisions"] if r["name"] == name)
    return dict(revision["start_mode"])
