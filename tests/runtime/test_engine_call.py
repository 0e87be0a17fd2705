"""An engine command's output, its failure in its own last words, and a time limit."""

from __future__ import annotations

import asyncio

import pytest

from homerun.runtime import engine_call as module
from homerun.runtime.engine_call import engine_call


def test_its_output() -> None:
    assert asyncio.run(engine_call(["sh", "-c", "echo folder; echo noise >&2"])) == "folder\n"


def test_a_failure_says_its_last_line_unless_not_checked() -> None:
    failing = ["sh", "-c", "echo first >&2; echo 'Error: no such container' >&2; exit 125"]
    with pytest.raises(OSError, match="^Error: no such container$"):
        asyncio.run(engine_call(failing))
    with pytest.raises(OSError, match="^exit 3$"):
        asyncio.run(engine_call(["sh", "-c", "exit 3"]))
    assert asyncio.run(engine_call(failing, check=False)) == ""


def test_one_that_takes_too_long_is_killed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(module, "ENGINE_SECONDS", 0.2)
    with pytest.raises(OSError, match="took over 0.2 s"):
        asyncio.run(engine_call(["sleep", "30"]))
