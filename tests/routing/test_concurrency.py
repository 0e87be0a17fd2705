import pytest

from homerun.routing.concurrency import ConcurrencyMeter


def test_constant_concurrency_averages_to_itself() -> None:
    meter = ConcurrencyMeter(now=0)
    meter.change(+3, now=0)
    for second in range(1, 11):
        meter.close_bucket(now=second)
    assert meter.average(6, now=10) == pytest.approx(3)
    assert meter.average(60, now=10) == pytest.approx(3)


def test_step_is_time_weighted_and_windows_differ() -> None:
    meter = ConcurrencyMeter(now=0)
    for second in range(1, 55):
        meter.close_bucket(now=second)
    meter.change(+10, now=54)
    for second in range(55, 61):
        meter.close_bucket(now=second)
    assert meter.average(6, now=60) == pytest.approx(10)
    assert meter.average(60, now=60) == pytest.approx(1)


def test_partial_buckets_and_running_bucket_count_in_proportion() -> None:
    meter = ConcurrencyMeter(now=0)
    meter.change(+4, now=0)
    meter.close_bucket(now=2)
    meter.change(-4, now=3)
    # The running bucket 2..4 holds 4 for 1 s and 0 for 1 s; within a bucket the meter knows
    # only the total, so part of a bucket counts as that part of its area.
    assert meter.average(1, now=4) == pytest.approx(2)
    assert meter.average(2, now=4) == pytest.approx(2)
    assert meter.average(3, now=4) == pytest.approx(8 / 3)
    assert meter.last_active == 3


def test_no_history_reports_the_current_concurrency() -> None:
    meter = ConcurrencyMeter(now=5)
    meter.change(+2, now=5)
    assert meter.average(60, now=5) == 2
