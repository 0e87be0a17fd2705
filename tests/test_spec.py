import pytest

from homerun.errors import InvalidSpec
from homerun.spec import (
    expand_k8s_vars,
    parse_duration,
    parse_env_vars,
    parse_list,
    validate_service_name,
)


@pytest.mark.parametrize("name", ["helloworld", "a", "my-api-2", "a" * 63])
def test_valid_service_names(name: str) -> None:
    assert validate_service_name(name) == name


@pytest.mark.parametrize(
    "name", ["Bad_Name", "UPPER", "1abc", "-abc", "abc-", "a" * 64, "", "a.b", "x---y"]
)
def test_invalid_service_names_say_what_is_allowed(name: str) -> None:
    with pytest.raises(InvalidSpec, match="invalid service name"):
        validate_service_name(name)


def test_env_vars_parse_like_gcloud() -> None:
    assert parse_env_vars("A=1,B=two") == {"A": "1", "B": "two"}
    assert parse_env_vars("A=x=y") == {"A": "x=y"}
    assert parse_env_vars("EMPTY=") == {"EMPTY": ""}
    assert parse_env_vars("^;^A=1,2;B=3") == {"A": "1,2", "B": "3"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("NOEQUALS", "is not KEY=VALUE"),
        ("A=1,B", "is not KEY=VALUE"),
        ("PORT=1", "PORT is reserved"),
        ("K_SERVICE=x", "K_SERVICE is reserved"),
        ("1A=x", "invalid variable name"),
        ("=x", "invalid variable name"),
    ],
)
def test_malformed_env_vars_are_rejected(text: str, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        parse_env_vars(text)


@pytest.mark.parametrize(
    ("text", "seconds"), [("300", 300), ("300s", 300), ("5m", 300), ("1h", 3600), ("1h30m", 5400)]
)
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text, "--timeout") == seconds


@pytest.mark.parametrize("text", ["", "abc", "5x", "-1"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(InvalidSpec, match="--timeout"):
        parse_duration(text, "--timeout")


def test_lists_and_k8s_expansion() -> None:
    assert parse_list("--bind,:8080") == ["--bind", ":8080"]
    assert parse_list("^:^a,b:c") == ["a,b", "c"]
    env = {"PORT": "1234"}
    assert expand_k8s_vars("--bind=:$(PORT)", env) == "--bind=:1234"
    assert expand_k8s_vars("$$(PORT) $(MISSING)", env) == "$(PORT) $(MISSING)"
