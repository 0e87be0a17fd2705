from typing import Annotated

import pytest
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, field_validator

from homerun.model.validation import errors_at, field_path, problems, validation_message


def _positive(number: int) -> int:
    if number < 1:
        raise ValueError(f"must be positive, got {number}")
    return number


class Item(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    name: str
    size: Annotated[int, AfterValidator(_positive)] = 1
    weight: float = Field(default=0, le=10)


class Order(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)

    items: list[Item]
    labels: dict[str, str] = {}

    @field_validator("items")
    @classmethod
    def _distinct(cls, items: list[Item]) -> list[Item]:
        names = [item.name for item in items]
        repeated = [(index, "name") for index, name in enumerate(names) if name in names[:index]]
        if repeated:
            raise errors_at((location, "given twice") for location in repeated)
        return items


def _messages(document: object) -> dict[str, str]:
    with pytest.raises(ValidationError) as error:
        Order.model_validate(document)
    return {problem.path: problem.message for problem in problems(error.value)}


def test_field_paths() -> None:
    assert field_path(()) == ""
    assert (
        field_path(("spec", "containers", 0, "env", 2, "name")) == "spec.containers[0].env[2].name"
    )
    assert field_path((0, "name")) == "[0].name"


def test_pydantic_errors_in_homeruns_words() -> None:
    assert _messages(
        {
            "items": [{"size": 0, "weight": 11, "colour": "red"}, {"name": 5, "size": "2"}],
            "labels": {"a": 1},
        }
    ) == {
        "items[0].name": "required",
        "items[0].size": "must be positive, got 0",
        "items[0].weight": "must be at most 10, got 11",
        "items[0].colour": "unknown field",
        "items[1].name": "must be a string (quote it), got 5",
        "items[1].size": "must be a whole number, got '2'",
        "labels.a": "must be a string (quote it), got 1",
    }
    assert _messages({"items": {}}) == {"items": "must be a list, got dict"}
    assert _messages(None) == {"": "required"}


def test_a_validator_reports_problems_under_its_field() -> None:
    assert _messages({"items": [{"name": "a"}, {"name": "b"}, {"name": "a"}]}) == {
        "items[2].name": "given twice"
    }


def test_one_line_for_flags_and_api_bodies() -> None:
    with pytest.raises(ValidationError) as error:
        Order.model_validate({"items": [{"name": "a", "size": 0}], "labels": []})
    assert validation_message(error.value) == (
        "items[0].size: must be positive, got 0; labels: must be a mapping, got list"
    )
