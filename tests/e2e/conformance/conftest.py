"""The Knative runtime contract suite: the contract's deployed app, and a summary of what held
at each level (MUST, SHOULD), printed at the end of the run."""

from __future__ import annotations

import shutil
from collections import Counter

import pytest

from ..harness import APPS, Platform

CONTRACT_APP = APPS / "runtime_contract"


@pytest.fixture(scope="session")
def contract(platform: Platform) -> str:
    """tests/apps/runtime_contract deployed once, as `contract`: its Procfile's custom command,
    so every instance is spawned."""
    platform.ensure_deployed("contract", CONTRACT_APP)
    return "contract"


@pytest.fixture(scope="session")
def forked_contract(platform: Platform, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The same app without its Procfile, as `contract-forked`: its WSGI `app` under gunicorn,
    instances forked from the revision's zygote."""
    source = tmp_path_factory.mktemp("forked") / "runtime_contract"
    shutil.copytree(CONTRACT_APP, source)
    (source / "Procfile").unlink()
    platform.ensure_deployed("contract-forked", source)
    platform.request("contract-forked", "GET", "/")
    (revision,) = platform.describe_service("contract-forked")["revisions"]
    assert revision["start_mode"]["mode"] == "zygote", revision["start_mode"]
    return "contract-forked"


@pytest.fixture(scope="session", params=["spawned", "forked"])
def instance_of(request: pytest.FixtureRequest) -> str:
    """Each way an instance starts on the process runtime: the service to ask."""
    fixture = "contract" if request.param == "spawned" else "forked_contract"
    return str(request.getfixturevalue(fixture))


def _level(name: str) -> str | None:
    for level in ("must", "should"):
        if name.startswith(f"test_{level}_"):
            return level.upper()
    return None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """One verdict per statement (a test run for each way an instance starts holds when every
    run held): held, failed, n.a. (skipped), or deliberately not held (an expected failure)."""
    outcomes: dict[tuple[str, str], set[str]] = {}
    for outcome in ("passed", "failed", "skipped", "xfailed"):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if "conformance/" not in nodeid or getattr(report, "when", "call") == "teardown":
                continue
            name = nodeid.rpartition("::")[2].partition("[")[0]
            level = _level(name)
            if level is not None:
                outcomes.setdefault((level, name), set()).add(outcome)
    if not outcomes:
        return
    tally: Counter[tuple[str, str]] = Counter()
    for (level, _), seen in outcomes.items():
        if "failed" in seen:
            verdict = "failed"
        elif "xfailed" in seen:
            verdict = "deliberately not held"
        elif seen == {"skipped"}:
            verdict = "n.a."
        else:
            verdict = "held"
        tally[(level, verdict)] += 1
    terminalreporter.section("Knative runtime contract (process runtime: spawned and forked)")
    for level in ("MUST", "SHOULD"):
        deliberate = tally[(level, "deliberately not held")]
        terminalreporter.write_line(
            f"{level}: {tally[(level, 'held')]} held, {tally[(level, 'failed')]} failed, "
            f"{tally[(level, 'n.a.')]} n.a."
            + (f", {deliberate} deliberately not held" if deliberate else "")
        )
