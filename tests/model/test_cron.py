"""unix-cron schedules: parsing (with the field named in errors) and the next time one comes,
in a time zone and across DST changes."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from homerun.errors import InvalidSpec
from homerun.model.cron import next_time, parse_cron, time_zone

PARIS = time_zone("Europe/Paris")
FRIDAY_10H = datetime(2026, 12, 4, 10, 0, 30, tzinfo=UTC).timestamp()  # 11:00:30 in Paris


def following(expression: str, after: float = FRIDAY_10H, zone: str = "Europe/Paris") -> str:
    moment = next_time(parse_cron(expression), after, time_zone(zone))
    return datetime.fromtimestamp(moment, time_zone(zone)).isoformat()


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("*/5 * * * *", "2026-12-04T11:05:00+01:00"),
        ("0 9 * * MON-FRI", "2026-12-07T09:00:00+01:00"),  # Monday
        ("30 2 1,15 * *", "2026-12-15T02:30:00+01:00"),
        ("@daily", "2026-12-05T00:00:00+01:00"),
        ("0 0 29 2 *", "2028-02-29T00:00:00+01:00"),
        # Both day fields restricted: either matches (Vixie cron), so Friday the 4th counts.
        ("0 12 13 * FRI", "2026-12-04T12:00:00+01:00"),
        ("0 0 * JAN sun", "2027-01-03T00:00:00+01:00"),
        ("5/20 11 * * *", "2026-12-04T11:05:00+01:00"),
        ("0 0 * * 7", "2026-12-06T00:00:00+01:00"),  # 7 is Sunday too
    ],
)
def test_the_next_time_a_schedule_names(expression: str, expected: str) -> None:
    assert following(expression) == expected


def test_a_time_zone_moves_the_wall_clock_the_schedule_reads() -> None:
    assert following("0 12 * * *", zone="UTC") == "2026-12-04T12:00:00+00:00"
    assert following("0 12 * * *", zone="America/New_York") == "2026-12-04T12:00:00-05:00"


def test_a_time_that_dst_skips_is_not_run_that_day_and_a_repeated_one_runs_once() -> None:
    spring = datetime(2027, 3, 27, 12, tzinfo=UTC).timestamp()
    assert following("30 2 * * *", spring) == "2027-03-29T02:30:00+02:00"
    autumn = datetime(2027, 10, 30, 12, tzinfo=UTC).timestamp()
    first = next_time(parse_cron("30 2 * * *"), autumn, PARIS)
    assert datetime.fromtimestamp(first, PARIS).isoformat() == "2027-10-31T02:30:00+02:00"
    assert following("30 2 * * *", first) == "2027-11-01T02:30:00+01:00"


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("* * * *", "give five fields"),
        ("60 * * * *", "minute '60' is not between 0 and 59"),
        ("* * * FOO *", "month 'FOO' is not between 1 and 12"),
        ("5-1 * * * *", "'5-1' is not a valid minute range"),
        ("*/x * * * *", "'*/X' is not a valid minute"),
    ],
)
def test_a_bad_schedule_says_which_field(expression: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match="^--schedule: ") as raised:
        parse_cron(expression)
    assert message in str(raised.value)


def test_a_bad_time_zone_says_what_to_give() -> None:
    with pytest.raises(InvalidSpec, match="--time-zone: 'Mars/Olympus' is not a time zone"):
        time_zone("Mars/Olympus")
