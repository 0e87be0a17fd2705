"""Validation problems as users read them: each one at its field path (`spec.env[2].name`),
said in homerun's words rather than pydantic's."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

Location = tuple[int | str, ...]

# Pydantic's error types for a value of the wrong type, and what the value must be instead.
_WRONG_TYPE = {
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
    "dict_type": "a mapping",
    "list_type": "a list",
    "int_type": "a whole number",
    "int_parsing": "a whole number",
    "int_from_float": "a whole number",
    "float_type": "a number",
    "float_parsing": "a number",
    "bool_type": "true or false",
    "bool_parsing": "true or false",
    "string_type": "a string",
}
_BOUNDS = {
    "greater_than_equal": ("ge", "at least"),
    "greater_than": ("gt", "more than"),
    "less_than_equal": ("le", "at most"),
    "less_than": ("lt", "less than"),
}


@dataclass(frozen=True)
class Problem:
    location: Location
    message: str
    kind: str = ""  # pydantic's error type ("missing", "extra_forbidden"...), "" for our own

    @property
    def path(self) -> str:
        return field_path(self.location)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.location else self.message


def field_path(location: Sequence[int | str]) -> str:
    """("spec", "containers", 0, "env") -> "spec.containers[0].env"."""
    path = ""
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path


def problems(error: ValidationError) -> list[Problem]:
    return [Problem(tuple(item["loc"]), describe(item), item["type"]) for item in error.errors()]


def validation_message(error: ValidationError) -> str:
    """Every problem of `error`, `path: message; path: message`."""
    return "; ".join(str(problem) for problem in problems(error))


def describe(item: ErrorDetails) -> str:
    """One pydantic error in homerun's words; a validator's own ValueError text as it is."""
    kind, value, context = item["type"], item.get("input"), item.get("ctx") or {}
    if kind == "value_error" and "error" in context:
        return str(context["error"])
    if kind == "missing":
        return "required"
    if kind in ("extra_forbidden", "invalid_key"):
        return "unknown field"
    if kind in _WRONG_TYPE:
        if value is None:
            return "required"
        if kind == "string_type" and isinstance(value, bool | int | float):
            return f"must be a string (quote it), got {value!r}"
        return f"must be {_WRONG_TYPE[kind]}, got {_shown(value)}"
    if kind in _BOUNDS:
        key, relation = _BOUNDS[kind]
        bound = context.get(key)
        shown = f"{bound:g}" if isinstance(bound, int | float) else str(bound)
        return f"must be {relation} {shown}, got {_shown(value)}"
    if kind == "literal_error":
        return f"must be {context.get('expected')}, got {_shown(value)}"
    return item["msg"]


def errors_at(items: Iterable[tuple[Location, str]], value: Any = None) -> ValidationError:
    """Problems found by a validator, each at its location under the field (or model) being
    validated: raise this from the validator and pydantic puts the field's path in front."""
    return ValidationError.from_exception_data(
        "problems",
        [
            InitErrorDetails(
                type=PydanticCustomError("invalid", message), loc=location, input=value
            )
            for location, message in items
        ],
    )


def _shown(value: Any) -> str:
    # A mapping or list would be quoted whole; its kind says enough.
    if isinstance(value, dict | list | tuple | set):
        return type(value).__name__
    return repr(value)
