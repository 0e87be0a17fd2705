import pytest
from hypothesis import given
from hypothesis import strategies as st

from homerun.errors import InvalidSpec
from homerun.model.durations import parse_duration, parse_seconds, seconds


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("300", 300),
        ("300s", 300),
        ("5m", 300),
        ("1h", 3600),
        ("1h30m", 5400),
        (" 2M ", 120),
        ("500ms", 0.5),
        ("1m30s", 90),
        ("1.5s", 1.5),
        (7, 7),
        (0.25, 0.25),
    ],
)
def test_gcloud_and_knative_forms(text: object, expected: float) -> None:
    assert seconds(text) == expected


@pytest.mark.parametrize("value", ["", "abc", "5x", "-1", "1h30", "m", "s5", True, None, [1]])
def test_what_is_no_duration(value: object) -> None:
    with pytest.raises(ValueError, match="expected a duration such as 300, 300s, 5m or 1h30m"):
        seconds(value)


def test_flags_take_whole_seconds_and_errors_name_the_flag() -> None:
    assert parse_duration("1h30m", "--timeout") == 5400
    with pytest.raises(InvalidSpec, match=r"^--timeout: '1.5s' is not a whole number of seconds"):
        parse_duration("1.5s", "--timeout")
    with pytest.raises(InvalidSpec, match=r"^--timeout: expected a duration"):
        parse_duration("5x", "--timeout")
    with pytest.raises(InvalidSpec, match=r"^autoscaler.stable-window: expected a duration"):
        parse_seconds("soon", "autoscaler.stable-window")


@given(st.text(alphabet=st.sampled_from("0123456789.hmsx -"), max_size=12) | st.text(max_size=12))
def test_any_text_is_a_duration_or_refused(text: str) -> None:
    try:
        assert parse_duration(text, "--timeout") >= 0
    except InvalidSpec:
        pass
