"""Scaling settings: the platform's `autoscaler:` config and a revision's Knative annotations."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from homerun.errors import InvalidSpec
from homerun.model.annotations import ANNOTATION_PREFIX, MAX_WINDOW, MIN_WINDOW, check_annotations
from homerun.model.durations import parse_seconds
from homerun.scaling.autoscaler import ScalingPolicy


@dataclass(frozen=True)
class AutoscalerConfig:
    """HOMERUN_HOME/config.yaml `autoscaler:`, keyed as Knative's config-autoscaler."""

    stable_window: float = 60.0
    panic_window_percentage: float = 10.0
    panic_threshold_percentage: float = 200.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    scale_to_zero_grace_period: float = 30.0
    container_concurrency_target_percentage: float = 60.0  # Cloud Run's; Knative says 70
    max_scale: int = 100  # Cloud Run's default --max-instances
    tick_interval: float = 2.0  # Knative decides every 2 s


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool):
        raise InvalidSpec(f"{where}: expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidSpec(f"{where}: expected a number, got {value!r}") from None


def _integer(value: Any, where: str) -> int:
    number = _number(value, where)
    if number != int(number):
        raise InvalidSpec(f"{where}: expected a whole number, got {value!r}")
    return int(number)


def _check(where: str, value: float, low: float, high: float, unit: str = "") -> None:
    if not low <= value <= high:
        raise InvalidSpec(
            f"{where}: must be between {low:g}{unit} and {high:g}{unit}, got {value:g}{unit}"
        )


# key -> (field, parser, low, high, unit)
_CONFIG_KEYS: dict[str, tuple[str, Callable[[Any, str], float], float, float, str]] = {
    "stable-window": ("stable_window", parse_seconds, MIN_WINDOW, MAX_WINDOW, "s"),
    "panic-window-percentage": ("panic_window_percentage", _number, 1, 100, ""),
    "panic-threshold-percentage": ("panic_threshold_percentage", _number, 110, 1000, ""),
    "max-scale-up-rate": ("max_scale_up_rate", _number, 1.000001, 1e9, ""),
    "max-scale-down-rate": ("max_scale_down_rate", _number, 1.000001, 1e9, ""),
    "scale-to-zero-grace-period": ("scale_to_zero_grace_period", parse_seconds, 0, 3600, "s"),
    "container-concurrency-target-percentage": (
        "container_concurrency_target_percentage",
        _number,
        1,
        100,
        "",
    ),
    "max-scale": ("max_scale", _integer, 1, 1000, ""),
    "tick-interval": ("tick_interval", parse_seconds, 0.05, 60, "s"),
}


def load_autoscaler_config(raw: Any, where: str = "autoscaler") -> AutoscalerConfig:
    if raw is None:
        return AutoscalerConfig()
    if not isinstance(raw, Mapping):
        raise InvalidSpec(f"{where}: expected a mapping of Knative config-autoscaler keys")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        known = _CONFIG_KEYS.get(str(key))
        if known is None:
            raise InvalidSpec(
                f"{where}.{key}: unknown setting; known: {', '.join(sorted(_CONFIG_KEYS))}"
            )
        name, parse, low, high, unit = known
        number = parse(value, f"{where}.{key}")
        _check(f"{where}.{key}", number, low, high, unit)
        values[name] = number
    return replace(AutoscalerConfig(), **values)


def policy_for(
    config: AutoscalerConfig, container_concurrency: int, annotations: Mapping[str, str]
) -> ScalingPolicy:
    values = check_annotations(annotations)
    utilization = values.get(
        "target-utilization-percentage", config.container_concurrency_target_percentage
    )
    policy = ScalingPolicy(
        container_concurrency=container_concurrency,
        target_utilization=utilization / 100,
        target=values.get("target"),
        min_scale=int(values.get("min-scale", 0)),
        max_scale=int(values.get("max-scale", config.max_scale)),
        stable_window=values.get("window", config.stable_window),
        panic_window_percentage=values.get(
            "panic-window-percentage", config.panic_window_percentage
        ),
        panic_threshold_percentage=values.get(
            "panic-threshold-percentage", config.panic_threshold_percentage
        ),
        max_scale_up_rate=config.max_scale_up_rate,
        max_scale_down_rate=config.max_scale_down_rate,
        scale_to_zero_grace=config.scale_to_zero_grace_period,
    )
    if policy.min_scale > policy.max_scale:
        raise InvalidSpec(f"min-scale ({policy.min_scale}) is above max-scale ({policy.max_scale})")
    return policy


__all__ = [
    "ANNOTATION_PREFIX",
    "AutoscalerConfig",
    "check_annotations",
    "load_autoscaler_config",
    "parse_seconds",
    "policy_for",
]
