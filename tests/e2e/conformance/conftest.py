"""The Knative runtime contract suite: the contract's deployed app, and a summary of what held
at each level (MUST, SHOULD), printed at the end of the run."""

from __future__ import annotations

from collections import Counter

import pytest

from ..harness import APPS, Platform

CONTRACT_APP = APPS / "runtime_contract"


@pytest.fixture(scope="session")
def contract(platform: Platform) -> str:
    """tests/apps/runtime_contract deployed once, as `contract` (a custom command: its Procfile)."""
    platform.ensure_deployed("contract", CONTRACT_APP)
    return "contract"


def _level(name: str) -> str | None:
    for level in ("must", "should"):
        if name.startswith(f"test_{level}_"):
            return level.upper()
    return None


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    tally: Counter[tuple[str, str]] = Counter()
    for outcome, label in (
        ("passed", "held"),
        ("failed", "failed"),
        ("skipped", "n.a."),
        ("xfailed", "deliberately not held"),
    ):
        for report in terminalreporter.stats.get(outcome, []):
            nodeid = getattr(report, "nodeid", "")
            if "conformance/" not in nodeid or getattr(report, "when", "call") == "teardown":
                continue
            level = _level(nodeid.rpartition("::")[2].partition("[")[0])
            if level is not None:
                tally[(level, label)] += 1
    if not tally:
        return
    terminalreporter.section("Knative runtime contract (process runtime)")
    for level in ("MUST", "SHOULD"):
        deliberate = tally[(level, "deliberately not held")]
        terminalreporter.write_line(
            f"{level}: {tally[(level, 'held')]} held, {tally[(level, 'failed')]} failed, "
            f"{tally[(level, 'n.a.')]} n.a."
            + (f", {deliberate} deliberately not held" if deliberate else "")
        )
