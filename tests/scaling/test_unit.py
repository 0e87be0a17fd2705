"""A unit's plan is immutable, its phase moves one way, and its counts read the supervisor's
state."""

from __future__ import annotations

import asyncio
from dataclasses import FrozenInstanceError
from pathlib import Path

import pytest
from fakes import Clock, FakeSupervisor

from homerun.model.states import InstanceState
from homerun.routing.throttler import Throttler
from homerun.scaling.unit import RevisionPlan, RevisionUnit, UnitPhase


def plan(tmp_path: Path, argv: list[str], env: dict[str, str]) -> RevisionPlan:
    return RevisionPlan(
        service="svc",
        name="svc-00001-abc",
        argv=argv,
        env=env,
        cwd=tmp_path,
        concurrency=80,
        startup_timeout=240,
        request_timeout=300,
    )


def unit_of(revision_plan: RevisionPlan, *, deploying: bool) -> RevisionUnit:
    throttler = Throttler(revision_plan.name, lambda: None, Clock())
    return RevisionUnit(revision_plan, throttler, deploying=deploying)


def test_the_plan_keeps_copies_that_nobody_edits(tmp_path: Path) -> None:
    argv, env = ["gunicorn", "app:app"], {"A": "1"}
    revision_plan = plan(tmp_path, argv, env)
    argv.append("--reload")
    env["A"] = "2"
    assert revision_plan.argv == ("gunicorn", "app:app") and revision_plan.env == {"A": "1"}
    with pytest.raises(TypeError):
        revision_plan.env["A"] = "3"  # type: ignore[index]  # a Mapping: the test writes anyway
    with pytest.raises(FrozenInstanceError):
        revision_plan.concurrency = 1  # type: ignore[misc]  # frozen: the test assigns anyway


def test_a_changed_secret_makes_a_new_plan(tmp_path: Path) -> None:
    revision_plan = plan(tmp_path, ["app"], {"A": "1", "TOKEN": "old"})
    changed = revision_plan.with_env({"TOKEN": "new"})
    assert changed.env == {"A": "1", "TOKEN": "new"} and revision_plan.env["TOKEN"] == "old"
    assert changed.name == revision_plan.name and changed.policy == revision_plan.policy


def test_a_deploying_unit_serves_once_confirmed_and_retires_for_good(tmp_path: Path) -> None:
    unit = unit_of(plan(tmp_path, ["app"], {}), deploying=True)
    assert unit.phase is UnitPhase.DEPLOYING
    unit.supervised.confirm(120.0)
    assert unit.phase is UnitPhase.SERVING and unit.supervised.confirmed_at == 120.0
    unit.supervised.confirm(130.0)  # confirmed once: the first confirmation's time stays
    assert unit.supervised.confirmed_at == 120.0
    unit.supervised.retire()
    unit.supervised.confirm(140.0)
    assert unit.phase is UnitPhase.RETIRED


def test_a_unit_made_for_a_ready_revision_serves_at_once(tmp_path: Path) -> None:
    # The daemon restarting, or a tag routed to an older revision: no deploy to wait for.
    unit = unit_of(plan(tmp_path, ["app"], {}), deploying=False)
    assert unit.phase is UnitPhase.SERVING and unit.supervised.confirmed_at is None


def test_active_counts_pending_starting_and_ready_not_draining(tmp_path: Path) -> None:
    async def main() -> None:
        unit = unit_of(plan(tmp_path, ["app"], {}), deploying=False)
        supervisor = FakeSupervisor(Clock())
        supervisor.start(unit)
        supervisor.start(unit, ready=True)
        supervisor.start(unit, ready=True).state = InstanceState.DRAINING
        unit.supervised.pending_starts = 2
        assert unit.count(InstanceState.STARTING) == 1
        assert unit.count(InstanceState.READY) == 1
        assert unit.count(InstanceState.DRAINING) == 1
        assert unit.active == 4 and len(unit.instances) == 3

    asyncio.run(main())
