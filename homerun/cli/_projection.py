"""gcloud's `--format` for describe and list: json, yaml, value(...), table(...), csv(...) and
none, with its projection of keys (`value(status.url)`, `table(metadata.name:label=NAME,
status.traffic[0].percent)`), over the Knative resources gcloud prints."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import yaml

from homerun.errors import HomerunError

# What gcloud does that homerun's --format does not: named in the error.
_SUPPORTED = "json, yaml, value(KEY,...), table(KEY,...), csv(KEY,...), none"
_FORMAT = re.compile(r"\s*([a-z-]+)\s*(?:\[([^\]]*)\])?\s*(?:\((.*)\))?\s*", re.DOTALL)
_SEGMENT = re.compile(r"([A-Za-z_][\w-]*)((?:\[\d*\])*)")
_INDEX = re.compile(r"\[(\d*)\]")
_ALL = -1  # `[]`: every item of a list


@dataclass(frozen=True)
class Key:
    path: tuple[str | int, ...]  # names and list indexes; _ALL for `[]`
    label: str


@dataclass(frozen=True)
class Format:
    name: str  # json, yaml, value, table, csv, none; or a command's own (text...)
    keys: tuple[Key, ...] = ()
    no_heading: bool = False


def parse_format(text: str, own: Sequence[str] = ()) -> Format:
    """`text` as gcloud reads --format; `own` are the command's names of its own (text,
    summary-json), taken as they are. HomerunError says what is wrong and what works."""
    if text in own:
        return Format(text)
    match = _FORMAT.fullmatch(text)
    names = [*own, "json", "yaml", "value", "table", "csv", "none"]
    if match is None or match.group(1) not in names:
        raise HomerunError(
            f"--format: {text!r} is not a format homerun prints; use one of "
            f"{', '.join([*own, _SUPPORTED])}"
        )
    name, attributes, projection = match.groups()
    no_heading = False
    for attribute in _split(attributes or "", ","):
        if attribute in ("no-heading", "no-headings"):
            no_heading = True
        elif attribute:
            raise HomerunError(f"--format: the attribute [{attribute}] is not supported here")
    keys = tuple(_key(each) for each in _split(projection or "", ",") if each.strip())
    if name in ("value", "table", "csv") and not keys:
        raise HomerunError(f"--format: {name}() needs the keys to print, e.g. {name}(status.url)")
    return Format(name, keys, no_heading)


def render(resources: Sequence[dict[str, Any]], format: Format, *, listing: bool) -> str:
    """The resources as `format` prints them: a listing prints all of them, a describe one."""
    if format.name == "none":
        return ""
    if format.name in ("json", "yaml"):
        projected = [_project(resource, format.keys) for resource in resources]
        document: Any = projected if listing else projected[0]
        if format.name == "json":
            return json.dumps(document, indent=2) + "\n"
        if listing:
            return "".join("---\n" + yaml.safe_dump(each, sort_keys=False) for each in projected)
        return str(yaml.safe_dump(document, sort_keys=False))
    rows = [[_text(_lookup(resource, key.path)) for key in format.keys] for resource in resources]
    if format.name == "value":
        return "".join("\t".join(row) + "\n" for row in rows)
    headings = [key.label for key in format.keys]
    if format.name == "csv":
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        if not format.no_heading:
            writer.writerow(headings)
        writer.writerows(rows)
        return out.getvalue()
    table = rows if format.no_heading else [headings, *rows]
    if not table:
        return ""
    widths = [max(len(row[column]) for row in table) for column in range(len(headings))]
    lines = []
    for row in table:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines) + "\n"


def _split(text: str, separator: str) -> list[str]:
    """Split at `separator` outside quotes and brackets."""
    parts, current, quote, depth = [], "", "", 0
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == separator and depth == 0:
            parts.append(current.strip())
            current = ""
            continue
        current += char
    parts.append(current.strip())
    return parts


def _key(text: str) -> Key:
    """`status.traffic[0].percent:label=PERCENT`."""
    path_text, *attributes = _split(text, ":")
    path: list[str | int] = []
    for segment in path_text.split("."):
        match = _SEGMENT.fullmatch(segment.strip())
        if match is None:
            raise HomerunError(
                f"--format: {path_text!r} is not a key: use names joined by dots, with [N] for "
                "a list's item or [] for all of them (transforms like .join() are not supported)"
            )
        path.append(match.group(1))
        path += [int(index) if index else _ALL for index in _INDEX.findall(match.group(2))]
    label = _default_label(path)
    for attribute in attributes:
        name, _, value = attribute.partition("=")
        if name == "label":
            label = value.strip("'\"")
        elif name not in ("sort", "reverse", "align", "width", "wrap"):
            raise HomerunError(f"--format: the key attribute {name!r} is not supported here")
    return Key(tuple(path), label)


def _default_label(path: Sequence[str | int]) -> str:
    """gcloud's heading: the last name, its words in capitals joined by _ (latestCreated ->
    LATEST_CREATED)."""
    name = next((part for part in reversed(path) if isinstance(part, str)), "")
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).replace("-", "_").upper()


def _lookup(value: Any, path: Sequence[str | int]) -> Any:
    for position, part in enumerate(path):
        if part == _ALL:
            if not isinstance(value, list):
                return None
            return [_lookup(item, path[position + 1 :]) for item in value]
        if isinstance(part, int):
            fits = isinstance(value, list) and -len(value) <= part < len(value)
            value = value[part] if fits else None
        elif isinstance(value, dict):
            value = value.get(part)
        else:
            return None
        if value is None:
            return None
    return value


def _text(value: Any) -> str:
    """As gcloud's value() prints a value: lists joined by ';', mappings as k=v;k=v."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ";".join(_text(item) for item in value)
    if isinstance(value, dict):
        return ";".join(f"{name}={_text(item)}" for name, item in value.items())
    return str(value)


def _project(resource: dict[str, Any], keys: Sequence[Key]) -> dict[str, Any]:
    """json(a.b,c) and yaml(...): the resource with only those keys, nested as they were."""
    if not keys:
        return resource
    projected: dict[str, Any] = {}
    for key in keys:
        names = [part for part in key.path if isinstance(part, str)]
        if len(names) != len(key.path):
            raise HomerunError("--format: json() and yaml() take keys without [N] here")
        value = _lookup(resource, key.path)
        if value is None:
            continue
        target = projected
        for name in names[:-1]:
            target = target.setdefault(name, {})
        target[names[-1]] = value
    return projected
