"""Deploys that must fail: with the cause on stderr, a non-zero exit, and nothing else changed."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from .harness import APPS, REVISION_NAME, Platform, describe, instance_processes, process_environ

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _deploy_healthy(platform: Platform, service: str) -> str:
    """A healthy first revision, which must keep serving whatever the next deploy does."""
    platform.deploy_ok(service, APPS / "streaming")
    return platform.env_of(service)["K_REVISION"]


def _still_served_by(platform: Platform, service: str, revision: str) -> None:
    assert platform.env_of(service)["K_REVISION"] == revision
    # A failed revision leaves no instance behind (stop grace is 3 s on this platform).
    deadline = time.monotonic() + 15
    while True:
        stray = [
            pid
            for pid in instance_processes(service=service)
            if process_environ(pid).get("K_REVISION") != revision
        ]
        if not stray:
            return
        assert time.monotonic() < deadline, f"instances of a failed revision still run: {stray}"
        time.sleep(0.2)


@pytest.mark.parametrize(
    ("app", "flags", "expected"),
    [
        # The app's own last log lines explain the crash.
        ("crash_on_boot", (), [r"DATABASE_URL is not set"]),
        # Never binds $PORT: the startup timeout fires, and the app's output is shown.
        ("never_listens", ("--startup-timeout", "3"), [r"never_listens: started"]),
        # Listens, but not on $PORT: said within seconds (not at the 240 s timeout), with the
        # port it took and how servers read PORT.
        (
            "hardcoded_port",
            (),
            [r"listens on port \d+, not on \$PORT=\d+", r"uvicorn main:app --port \$PORT"],
        ),
        # Exits 0 without listening: a job, and the message says how to run one.
        ("exits_at_once", (), [r"exit code 0", r"homerun jobs deploy NAME --source DIR"]),
        # pip's own error, naming the package.
        ("bad_requirements", (), [r"homerun-e2e-no-such-package", r"(?i)no matching distribution"]),
        # The instruction outside the subset, by file and line.
        ("bad_dockerfile", (), [r"apt-get", r"Dockerfile\D{0,12}\b4\b|line 4"]),
    ],
)
def test_failing_deploy_reports_the_cause_and_keeps_traffic(
    platform: Platform, app: str, flags: tuple[str, ...], expected: list[str]
) -> None:
    # One service per case, so that one case's failure cannot break the next one's baseline.
    service = "fails-" + app.replace("_", "-")
    healthy = _deploy_healthy(platform, service)
    started = time.monotonic()
    result = platform.deploy(service, APPS / app, *flags, timeout=240)
    elapsed = time.monotonic() - started
    assert result.returncode != 0, describe(result)
    assert result.stderr.strip(), "the failure is explained on stderr"
    output = result.stdout + result.stderr
    for pattern in expected:
        assert re.search(pattern, output), f"{pattern!r} not found in:\n{describe(result)}"
    assert "Service URL:" not in result.stdout
    # A crash is seen when the process exits, not when the 240 s startup timeout runs out.
    assert elapsed < 120, f"the failure took {elapsed:.0f}s to report"
    _still_served_by(platform, service, healthy)


def _state(platform: Platform) -> tuple[set[str], set[str]]:
    """Service and revision names: what a failed command must not change. (Not the whole
    listing: instance counts and readiness of other services move on their own.)"""
    services = platform.run("services", "list", check=True).stdout
    revisions = platform.run("revisions", "list", check=True).stdout
    service_names = {line.split()[0] for line in services.splitlines()[1:] if line.strip()}
    return service_names, set(REVISION_NAME.findall(revisions))


def _folder(tmp_path: Path, kind: str) -> str:
    if kind == "missing":
        return str(tmp_path / "does-not-exist")
    folder = tmp_path / kind
    folder.mkdir()
    if kind == "no-app":
        (folder / "README.md").write_text("Just notes, no code.\n")
        (folder / "data.csv").write_text("a,b\n1,2\n")
    return str(folder)


SEED = str(APPS / "flask_seed")


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        pytest.param(["deploy", "Bad_Name", "--source", SEED], ["Bad_Name"], id="uppercase-name"),
        pytest.param(["deploy", "a" * 64, "--source", SEED], ["a" * 64], id="long-name"),
        pytest.param(["deploy", "9lives", "--source", SEED], ["9lives"], id="digit-first-name"),
        pytest.param(
            ["deploy", "okname", "--source", "{missing}"], ["{missing}"], id="missing-source"
        ),
        pytest.param(["deploy", "okname", "--source", "{empty}"], ["{empty}"], id="empty-source"),
        # Say what was looked for.
        pytest.param(
            ["deploy", "okname", "--source", "{no-app}"], ["{no-app}", "main.py"], id="no-app"
        ),
        pytest.param(
            ["deploy", "okname", "--source", SEED, "--set-env-vars", "NOEQUALS"],
            ["NOEQUALS"],
            id="env-without-equals",
        ),
        pytest.param(
            ["deploy", "okname", "--source", SEED, "--set-env-vars", "PORT=1"],
            ["PORT", "reserved"],
            id="env-port-reserved",
        ),
        pytest.param(
            ["deploy", "okname", "--source", SEED, "--set-env-vars", "A=1,K_SERVICE=x"],
            ["K_SERVICE"],
            id="env-k-service-reserved",
        ),
        pytest.param(
            ["deploy", "okname", "--source", SEED, "--frobnicate"],
            ["--frobnicate"],
            id="unknown-flag",
        ),
        pytest.param(
            ["deploy", "okname", "--source", SEED, "--concurrency", "0"],
            ["concurrency"],
            id="concurrency-zero",
        ),
        pytest.param(
            ["deploy", "okname", "--source", SEED, "--timeout", "3601"],
            ["timeout"],
            id="timeout-too-long",
        ),
    ],
)
def test_bad_input_fails_clearly_and_changes_nothing(
    platform: Platform, tmp_path: Path, args: list[str], expected: list[str]
) -> None:
    folders = {f"{{{kind}}}": _folder(tmp_path, kind) for kind in ("missing", "empty", "no-app")}

    def fill(text: str) -> str:
        for placeholder, folder in folders.items():
            text = text.replace(placeholder, folder)
        return text

    before = _state(platform)
    result = platform.run(*[fill(arg) for arg in args], timeout=120)
    assert result.returncode != 0, describe(result)
    assert _state(platform) == before, f"the failed command changed state:\n{describe(result)}"
    assert platform.request("okname", "GET", "/").status_code == 404
    assert "Traceback" not in result.stderr, describe(result)
    for text in expected:
        assert fill(text) in result.stderr, describe(result)
