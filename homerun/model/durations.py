"""Durations as users write them: `300` (seconds), `300s`, `5m`, `1h30m`, `500ms`, as gcloud's
flags, Knative's annotations and its config-autoscaler keys take them."""

from __future__ import annotations

import math
import re

from homerun.errors import InvalidSpec

_NUMBER = r"\d+(?:\.\d+)?"
# "ms" before "m", or 500ms would read as 500 minutes and a stray "s".
_PART = re.compile(rf"({_NUMBER})(ms|h|m|s)")
_DURATION = re.compile(rf"(?:{_NUMBER}(?:ms|h|m|s))+|{_NUMBER}")
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def seconds(value: object) -> float:
    """The seconds in a duration: a number (of seconds), or text of NUMBER UNIT parts (h, m,
    s, ms) or one bare number. ValueError says what to write; it names no field."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    text = value.strip().lower() if isinstance(value, str) else ""
    if not _DURATION.fullmatch(text):
        raise ValueError(f"expected a duration such as 300, 300s, 5m or 1h30m, got {value!r}")
    if not text[-1].isalpha():
        return float(text)
    return sum(float(number) * _UNIT_SECONDS[unit] for number, unit in _PART.findall(text))


def parse_seconds(value: object, where: str) -> float:
    """`60`, `60s`, `1m`, `500ms` -> seconds; InvalidSpec names `where`."""
    try:
        return seconds(value)
    except ValueError as error:
        raise InvalidSpec(f"{where}: {error}") from None


def parse_duration(text: str, flag: str) -> int:
    """Whole seconds from `300`, `300s`, `5m`, `1h30m` (gcloud's duration flags)."""
    number = parse_seconds(text, flag)
    if not math.isfinite(number) or number != int(number):
        raise InvalidSpec(f"{flag}: {text!r} is not a whole number of seconds")
    return int(number)
