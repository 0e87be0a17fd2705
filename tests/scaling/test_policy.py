import pytest

from homerun.errors import InvalidSpec
from homerun.scaling.policy import (
    AutoscalerConfig,
    check_annotations,
    load_autoscaler_config,
    parse_seconds,
    policy_for,
)

PREFIX = "autoscaling.knative.dev/"


def test_defaults_are_cloud_runs() -> None:
    policy = policy_for(AutoscalerConfig(), 80, {})
    assert policy.target_per_instance == 48  # 80 x 60 %
    assert (policy.min_scale, policy.max_scale) == (0, 100)
    assert (policy.stable_window, policy.panic_window) == (60, 6)
    assert policy.scale_to_zero_grace == 30


def test_config_keys_are_knatives() -> None:
    config = load_autoscaler_config(
        {
            "stable-window": "6s",
            "panic-window-percentage": 20,
            "panic-threshold-percentage": 300,
            "max-scale-up-rate": 10,
            "max-scale-down-rate": 4,
            "scale-to-zero-grace-period": "2s",
            "container-concurrency-target-percentage": 70,
            "max-scale": 5,
            "tick-interval": "500ms",
        }
    )
    policy = policy_for(config, 10, {})
    assert policy.stable_window == 6 and policy.panic_window == pytest.approx(1.2)
    assert policy.target_per_instance == 7
    assert policy.max_scale == 5 and config.tick_interval == 0.5


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"stable-window": "5s"}, "between 6s and 3600s, got 5s"),
        ({"panic-threshold-percentage": 100}, "between 110 and 1000"),
        ({"container-concurrency-target-percentage": 0}, "between 1 and 100"),
        ({"max-scale-down-rate": 1}, "max-scale-down-rate"),
        ({"stable-window": "soon"}, "expected a duration"),
        ({"no-such-key": 1}, "unknown setting"),
        ([1, 2], "expected a mapping"),
    ],
)
def test_invalid_config_names_the_key_and_range(raw: object, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        load_autoscaler_config(raw)


def test_annotations_override_per_revision() -> None:
    policy = policy_for(
        AutoscalerConfig(),
        80,
        {
            PREFIX + "min-scale": "2",
            PREFIX + "max-scale": "7",
            PREFIX + "target": "20",
            PREFIX + "window": "30s",
            "example.com/other": "kept, not ours",
        },
    )
    assert (policy.min_scale, policy.max_scale, policy.target_per_instance) == (2, 7, 20)
    assert policy.stable_window == 30


@pytest.mark.parametrize(
    ("annotations", "message"),
    [
        ({PREFIX + "min-scale": "-1"}, "between 0 and 1000"),
        ({PREFIX + "max-scale": "0"}, "between 1 and 1000"),
        ({PREFIX + "min-scale": "5", PREFIX + "max-scale": "2"}, "above max-scale"),
        ({PREFIX + "window": "1s"}, "between 6s and 3600s"),
        ({PREFIX + "metric": "rps"}, "not supported"),
        ({PREFIX + "min-scale": "1.5"}, "whole number"),
    ],
)
def test_invalid_annotations_are_refused_with_the_range(
    annotations: dict[str, str], message: str
) -> None:
    with pytest.raises(InvalidSpec, match=message):
        check_annotations(annotations)


def test_durations() -> None:
    assert parse_seconds("500ms", "x") == 0.5
    assert parse_seconds("2m", "x") == 120
    assert parse_seconds(7, "x") == 7
