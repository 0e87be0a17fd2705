"""A revision's `autoscaling.knative.dev/*` annotations: which ones homerun honours, their
bounds, and the numbers they set (the autoscaler's policy reads them from here)."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

from homerun.errors import InvalidSpec
from homerun.model.durations import seconds

ANNOTATION_PREFIX = "autoscaling.knative.dev/"
# `--concurrency auto` (beyond Cloud Run): containerConcurrency is then the most an instance
# is given, and the router adapts each instance's limit below it (routing/adaptive.py).
# Knative and Cloud Run ignore an annotation they do not know, so the YAML stays portable.
ADAPTIVE_CONCURRENCY = "run.homerun.dev/concurrency"
MIN_WINDOW, MAX_WINDOW = 6.0, 3600.0  # Knative's bounds for the stable window
# Knative still accepts the camelCase forms Cloud Run writes; homerun stores the kebab ones.
CAMEL_CASE_ALIASES = {
    ANNOTATION_PREFIX + "minScale": ANNOTATION_PREFIX + "min-scale",
    ANNOTATION_PREFIX + "maxScale": ANNOTATION_PREFIX + "max-scale",
}


def _number(value: str) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None


def _whole_number(value: str) -> float:
    number = _number(value)
    if not math.isfinite(number) or number != int(number):
        raise ValueError(f"expected a whole number, got {value!r}")
    return number


# name -> (parser, low, high, unit): the annotations homerun honours, with Knative's bounds.
_ANNOTATIONS: dict[str, tuple[Callable[[str], float], float, float, str]] = {
    "min-scale": (_whole_number, 0, 1000, ""),
    "max-scale": (_whole_number, 1, 1000, ""),
    "target": (_number, 0.01, 1000, ""),
    "target-utilization-percentage": (_number, 1, 100, ""),
    "window": (seconds, MIN_WINDOW, MAX_WINDOW, "s"),
    "panic-window-percentage": (_number, 1, 100, ""),
    "panic-threshold-percentage": (_number, 110, 1000, ""),
}


def annotation_problems(annotations: Mapping[str, str]) -> list[tuple[str, str]]:
    """(annotation key, what is wrong) for each bad autoscaling annotation; other prefixes
    pass through. min-scale above max-scale is reported on min-scale."""
    return _read(annotations)[1]


def check_annotations(annotations: Mapping[str, str]) -> dict[str, float]:
    """The numbers the autoscaling annotations set, by name ("min-scale": 2.0); InvalidSpec
    names the first bad annotation."""
    values, problems = _read(annotations)
    if problems:
        key, message = problems[0]
        raise InvalidSpec(f"annotation {key}: {message}")
    return values


def _read(annotations: Mapping[str, str]) -> tuple[dict[str, float], list[tuple[str, str]]]:
    values: dict[str, float] = {}
    problems: list[tuple[str, str]] = []
    for key, value in annotations.items():
        if key == ADAPTIVE_CONCURRENCY and value != "auto":
            problems.append((key, f'the only value is "auto" (--concurrency auto), got {value!r}'))
            continue
        if not key.startswith(ANNOTATION_PREFIX):
            continue
        name = key[len(ANNOTATION_PREFIX) :]
        if name == "class" and value.endswith("kpa.autoscaling.knative.dev"):
            continue
        if name == "metric" and value == "concurrency":
            continue
        known = _ANNOTATIONS.get(name)
        if known is None:
            problems.append(
                (
                    key,
                    "not supported; homerun honours "
                    + ", ".join(ANNOTATION_PREFIX + honoured for honoured in sorted(_ANNOTATIONS)),
                )
            )
            continue
        parse, low, high, unit = known
        try:
            number = parse(value)
        except ValueError as error:
            problems.append((key, str(error)))
            continue
        if not low <= number <= high:
            problems.append(
                (key, f"must be between {low:g}{unit} and {high:g}{unit}, got {number:g}{unit}")
            )
            continue
        values[name] = number
    low_scale, high_scale = values.get("min-scale"), values.get("max-scale")
    if low_scale is not None and high_scale is not None and low_scale > high_scale:
        problems.append(
            (
                ANNOTATION_PREFIX + "min-scale",
                f"min-scale ({low_scale:g}) is above max-scale ({high_scale:g}): "
                "--min-instances must not exceed --max-instances",
            )
        )
    return values, problems
