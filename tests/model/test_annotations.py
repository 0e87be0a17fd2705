import pytest

from homerun.errors import InvalidSpec
from homerun.model.annotations import ANNOTATION_PREFIX, annotation_problems, check_annotations

PREFIX = ANNOTATION_PREFIX


def test_values_by_name_and_other_prefixes_pass_through() -> None:
    values = check_annotations(
        {
            PREFIX + "min-scale": "1",
            PREFIX + "window": "1m",
            PREFIX + "class": "kpa.autoscaling.knative.dev",
            PREFIX + "metric": "concurrency",
            "run.googleapis.com/cpu-throttling": "false",
        }
    )
    assert values == {"min-scale": 1, "window": 60}


def test_every_problem_names_its_annotation() -> None:
    problems = annotation_problems(
        {
            PREFIX + "min-scale": "1.5",
            PREFIX + "max-scale": "0",
            PREFIX + "initial-scale": "2",
            PREFIX + "target": "inf",
        }
    )
    assert [key for key, _ in problems] == [
        PREFIX + "min-scale",
        PREFIX + "max-scale",
        PREFIX + "initial-scale",
        PREFIX + "target",
    ]
    assert problems[0][1] == "expected a whole number, got '1.5'"
    assert problems[1][1] == "must be between 1 and 1000, got 0"
    assert problems[2][1].startswith("not supported; homerun honours")


def test_min_above_max_is_reported_on_min_scale() -> None:
    annotations = {PREFIX + "min-scale": "5", PREFIX + "max-scale": "2"}
    assert annotation_problems(annotations) == [
        (
            PREFIX + "min-scale",
            "min-scale (5) is above max-scale (2): --min-instances must not exceed --max-instances",
        )
    ]
    with pytest.raises(InvalidSpec, match=r"^annotation autoscaling.knative.dev/min-scale: "):
        check_annotations(annotations)


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "-inf"])
def test_numbers_that_are_not_finite_are_refused(value: str) -> None:
    with pytest.raises(InvalidSpec):
        check_annotations({PREFIX + "max-scale": value})
