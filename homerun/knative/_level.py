"""The base of every level of a Knative document: camelCase fields, no coercion, the fields
homerun refuses (with the reason) and the output-only ones it ignores."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, model_validator
from pydantic.alias_generators import to_camel
from pydantic.fields import FieldInfo


class KnativeModel(BaseModel):
    """One level of the document."""

    model_config = ConfigDict(alias_generator=to_camel, extra="forbid", strict=True, frozen=True)

    # Fields Knative has that homerun does not run, with the reason given to the user.
    refused: ClassVar[Mapping[str, str]] = {}
    # Output-only fields, which a document read back from a cluster may carry.
    ignored: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _drop_ignored(cls, data: Any) -> Any:
        if cls.ignored and isinstance(data, dict):
            return {key: value for key, value in data.items() if key not in cls.ignored}
        return data

    @classmethod
    def unknown_field(cls, key: str) -> str:
        """What to tell a user who wrote `key` here: why homerun refuses that field, or the
        known field they probably meant."""
        if key in cls.refused:
            return cls.refused[key]
        known = sorted(field.alias or name for name, field in cls.model_fields.items())
        close = difflib.get_close_matches(key, known, n=1)
        if close:
            return f"unknown field; did you mean {close[0]!r}?"
        return f"unknown field; the fields here are {', '.join(known)}"

    @classmethod
    def field_named(cls, key: int | str) -> FieldInfo | None:
        """The field a document's `key` sets here (keys are the camelCase aliases)."""
        return next(
            (field for name, field in cls.model_fields.items() if (field.alias or name) == key),
            None,
        )


def within(low: int, high: int) -> AfterValidator:
    def check(number: int) -> int:
        if not low <= number <= high:
            raise ValueError(f"must be {low}..{high}, got {number}")
        return number

    return AfterValidator(check)
