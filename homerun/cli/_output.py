"""How commands print what is not a table: documents as YAML or JSON, views as JSON, times."""

from __future__ import annotations

import contextlib
import json
import sys
from collections.abc import Sequence
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from typing import Any

import yaml
from pydantic import BaseModel


def print_document(document: dict[str, Any], format: str) -> None:
    if format == "json":
        print(json.dumps(document, indent=2))
    else:
        print(yaml.safe_dump(document, sort_keys=False, default_flow_style=False), end="")


def print_json(views: BaseModel | Sequence[BaseModel]) -> None:
    """A view (or a list of them) as the daemon sent it: `--format json` for scripts."""
    if isinstance(views, BaseModel):
        print(json.dumps(views.model_dump(mode="json"), indent=2))
    else:
        print(json.dumps([view.model_dump(mode="json") for view in views], indent=2))


def said_on_stderr(structured: bool) -> AbstractContextManager[Any]:
    """With --format, what a command says for people (progress, results, questions) goes to
    stderr, as gcloud's does, so that stdout holds the document alone for a script to parse."""
    return contextlib.redirect_stdout(sys.stderr) if structured else contextlib.nullcontext()


def when(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")
