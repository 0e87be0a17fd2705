"""A worker pool's restarts: start what is missing, stop what is past the count, and back off
from an instance that keeps crashing (10 s doubling to 5 min, reset after 10 min running)."""

from __future__ import annotations

from homerun.control.pool_decision import Slot, crashes_after_exit, decide, restart_delay


def test_a_new_pool_starts_every_instance() -> None:
    decision = decide(3, [], now=0.0)
    assert decision.start == (0, 1, 2) and decision.stop == () and decision.wake_at is None


def test_a_running_pool_is_left_alone_and_a_smaller_one_stops_the_rest() -> None:
    running = [Slot(running=True, started_at=0.0)] * 3
    assert decide(3, running, now=5.0).start == ()
    shrunk = decide(1, running, now=5.0)
    assert shrunk.start == () and shrunk.stop == (1, 2)
    grown = decide(4, running, now=5.0)
    assert grown.start == (3,)


def test_a_crashed_instance_waits_its_backoff() -> None:
    crashed = Slot(running=False, started_at=100.0, exited_at=101.0, crashes=1)
    waiting = decide(1, [crashed], now=105.0)
    assert waiting.start == () and waiting.wake_at == 111.0
    assert decide(1, [crashed], now=111.0).start == (0,)


def test_the_backoff_doubles_to_five_minutes_and_resets_after_a_stable_run() -> None:
    assert [restart_delay(n) for n in range(0, 8)] == [0, 10, 20, 40, 80, 160, 300, 300]
    assert restart_delay(2, backoff=0.5) == 1.0
    flapping = Slot(running=True, started_at=0.0, crashes=3)
    assert crashes_after_exit(flapping, now=5.0) == 4
    assert crashes_after_exit(flapping, now=600.0) == 0
