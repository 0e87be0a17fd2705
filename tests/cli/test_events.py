"""A deploy's events on screen: each thing said once."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from homerun.cli._events import _same_destination, _unseen, follow
from homerun.errors import HomerunError
from homerun.model.events import BuildLine, Phase, Starting

from .conftest import done

PIP_FAILED = (
    "pip install -r requirements.txt failed (exit 1); its last lines:\n"
    "  Collecting nope\n"
    "  ERROR: No matching distribution found for nope\n"
    "Fix the requirement and deploy again."
)


def test_the_error_does_not_repeat_output_shown_just_above(tmp_path: Path) -> None:
    with open(tmp_path / "log", "w") as screen:
        shown = {"Collecting nope", "ERROR: No matching distribution found for nope"}
        assert _unseen(PIP_FAILED, shown, screen, screen) == (
            "pip install -r requirements.txt failed (exit 1); its last lines:\n"
            "  (shown above)\n"
            "Fix the requirement and deploy again."
        )


def test_the_error_is_whole_where_stderr_is_read_alone(tmp_path: Path) -> None:
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        assert _unseen(PIP_FAILED, {"Collecting nope"}, out, err) == PIP_FAILED


def test_same_destination() -> None:
    assert not _same_destination(io.StringIO(), io.StringIO())


def test_follow_returns_the_outcome_and_whether_it_was_announced(
    capsys: pytest.CaptureFixture[str],
) -> None:
    outcome = follow(
        [
            Phase(message="No change: hello-00002-abc already runs this template"),
            done(unchanged=True),
        ]
    )
    assert outcome.announced and outcome.done.unchanged
    assert not follow([done()]).announced
    assert not follow([Phase(message="Building"), BuildLine(line="pip"), done()]).announced
    capsys.readouterr()


def test_a_stream_without_a_result_is_an_error() -> None:
    with pytest.raises(HomerunError, match="without a result"):
        follow([Phase(message="Starting revision hello-00003-xyz")])


def test_a_starting_app_s_last_line_is_shown_once(capsys: pytest.CaptureFixture[str]) -> None:
    started = [
        Starting(revision="hello-00003-xyz", elapsed_seconds=seconds, last_line=line)
        for seconds, line in ((1.0, None), (2.0, "loading model"), (3.0, "loading model"))
    ]
    follow([Phase(message="Starting revision hello-00003-xyz"), *started, done()])
    assert capsys.readouterr().out == "Starting revision hello-00003-xyz\n  loading model\n"
