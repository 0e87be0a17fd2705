"""The count of consecutive probe results (Kubernetes' thresholds)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from homerun.model.probes import Probe, ProbeAction, ProbeRecord, observe


def verdicts(probe: Probe, results: str, passing: bool = True) -> str:
    record = ProbeRecord(passing=passing)
    out = ""
    for result in results:
        record = observe(record, result == "+", probe)
        out += "P" if record.passing else "F"
    return out


def test_failing_takes_failure_threshold_failures_in_a_row() -> None:
    probe = Probe(failure_threshold=3)
    assert verdicts(probe, "--+---") == "PPPPPF"


def test_passing_again_takes_success_threshold_successes_in_a_row() -> None:
    probe = Probe(failure_threshold=1, success_threshold=2)
    assert verdicts(probe, "-+-++") == "FFFFP"


def test_a_probe_that_never_passed_passes_after_success_threshold() -> None:
    probe = Probe(success_threshold=3)
    assert verdicts(probe, "++-+++", passing=False) == "FFFFFP"


def test_a_startup_budget_is_delay_plus_period_times_failures() -> None:
    assert Probe(initial_delay_seconds=5, period_seconds=2, failure_threshold=10).budget == 25
    assert Probe(period_seconds=0, failure_threshold=3).budget == 3


def test_an_exec_probe_needs_a_command_and_http_a_path() -> None:
    with pytest.raises(ValidationError, match="needs a command"):
        Probe(action=ProbeAction.EXEC)
    with pytest.raises(ValidationError, match="must start with '/'"):
        Probe(action=ProbeAction.HTTP, path="ready")
    assert Probe(action=ProbeAction.HTTP, path="/ready").describe() == "GET /ready"


def test_a_startup_budget_given_alone_reshapes_the_probe() -> None:
    probe = Probe(action=ProbeAction.HTTP, initial_delay_seconds=5, period_seconds=5)
    assert probe.with_budget(25).budget == 25
    assert probe.with_budget(25).period_seconds == 5
    assert probe.with_budget(23) == probe.model_copy(
        update={"failure_threshold": 18, "period_seconds": 1}
    )
    assert probe.with_budget(3).budget == 3
