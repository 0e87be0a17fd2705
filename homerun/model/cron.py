"""Schedules as unix-cron writes them (what Cloud Scheduler takes): five fields, minute hour
day-of-month month day-of-week, read in a time zone; and the next time one comes."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from homerun.errors import InvalidSpec

_MACROS = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
_DAYS = ("SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT")
# (name, lowest, highest, names for values from `lowest`)
_FIELDS = (
    ("minute", 0, 59, ()),
    ("hour", 0, 23, ()),
    ("day of month", 1, 31, ()),
    ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS),  # 0 and 7 are Sunday
)
_ITEM = re.compile(r"^(\*|[0-9A-Z]+(?:-[0-9A-Z]+)?)(?:/(\d+))?$")
# Looking this far ahead finds any time a valid schedule names (Feb 29 comes within 8 years).
_HORIZON_DAYS = 8 * 366


@dataclass(frozen=True)
class Cron:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is `*`
    any_weekday: bool  # day of week is `*`

    def day_matches(self, moment: datetime) -> bool:
        # Vixie cron: when both day fields are restricted, either one matching is enough.
        weekday = (moment.weekday() + 1) % 7
        by_day, by_weekday = moment.day in self.days, weekday in self.weekdays
        if self.any_day or self.any_weekday:
            return by_day and by_weekday
        return by_day or by_weekday


def parse_cron(text: str, where: str = "--schedule") -> Cron:
    """`*/5 * * * *`, `0 9 * * MON-FRI`, `30 2 1,15 * *`, `@daily`...; InvalidSpec says what
    is wrong in which field."""
    expanded = _MACROS.get(text.strip().lower(), text)
    fields = expanded.upper().split()
    if len(fields) != 5:
        raise InvalidSpec(
            f"{where}: {text!r} is not a cron schedule: give five fields, minute hour "
            "day-of-month month day-of-week (e.g. '*/5 * * * *' or '0 9 * * MON-FRI')"
        )
    values = [_field(field, spec, where) for field, spec in zip(fields, _FIELDS, strict=True)]
    weekdays = frozenset(day % 7 for day in values[4])
    return Cron(
        text=text,
        minutes=values[0],
        hours=values[1],
        days=values[2],
        months=values[3],
        weekdays=weekdays,
        any_day=fields[2] == "*",
        any_weekday=fields[4] == "*",
    )


def _field(text: str, spec: tuple[str, int, int, tuple[str, ...]], where: str) -> frozenset[int]:
    name, low, high, names = spec
    chosen: set[int] = set()
    for item in text.split(","):
        match = _ITEM.match(item)
        if match is None:
            raise InvalidSpec(f"{where}: {item!r} is not a valid {name} (e.g. *, 5, 1-5, */15)")
        span, step = match.group(1), int(match.group(2) or 1)
        if span == "*":
            first, last = low, high
        elif "-" in span:
            start, _, stop = span.partition("-")
            first = _value(start, name, low, high, names, where)
            last = _value(stop, name, low, high, names, where)
        else:  # `5` alone; `5/15` is from 5 to the highest, every 15
            first = _value(span, name, low, high, names, where)
            last = high if match.group(2) else first
        if first > last or step < 1:
            raise InvalidSpec(f"{where}: {item!r} is not a valid {name} range")
        chosen.update(range(first, last + 1, step))
    return frozenset(chosen)


def _value(text: str, name: str, low: int, high: int, names: tuple[str, ...], where: str) -> int:
    if text in names:
        return names.index(text) + (1 if name == "month" else 0)
    if not text.isdigit() or not low <= int(text) <= high:
        raise InvalidSpec(f"{where}: {name} {text!r} is not between {low} and {high}")
    return int(text)


def time_zone(name: str, where: str = "--time-zone") -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidSpec(
            f"{where}: {name!r} is not a time zone; give an IANA name such as UTC, "
            "Europe/Paris or America/New_York"
        ) from None


def next_time(cron: Cron, after: float, zone: ZoneInfo) -> float:
    """The first time (epoch seconds) strictly after `after` that the schedule names, read on
    the wall clock of `zone`. A local time that a DST change skips is not run that day; one it
    repeats runs once (its first occurrence)."""
    local = datetime.fromtimestamp(after, zone).replace(tzinfo=None, second=0, microsecond=0)
    moment = local + timedelta(minutes=1)
    end = local + timedelta(days=_HORIZON_DAYS)
    while moment < end:
        if moment.month not in cron.months:
            moment = (moment.replace(day=1) + timedelta(days=32)).replace(day=1, hour=0, minute=0)
        elif not cron.day_matches(moment):
            moment = (moment + timedelta(days=1)).replace(hour=0, minute=0)
        elif moment.hour not in cron.hours:
            moment = (moment + timedelta(hours=1)).replace(minute=0)
        elif moment.minute not in cron.minutes:
            moment += timedelta(minutes=1)
        else:
            aware = moment.replace(tzinfo=zone)
            exists = aware.astimezone(UTC).astimezone(zone).replace(tzinfo=None) == moment
            if exists and aware.timestamp() > after:
                return aware.timestamp()
            moment += timedelta(minutes=1)
    raise InvalidSpec(f"the schedule {cron.text!r} names no time in the next 8 years")
