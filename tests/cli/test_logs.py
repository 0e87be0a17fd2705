"""`homerun logs ...` over a fake client."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from homerun.cli import COMMANDS
from homerun.cli._commands import build_parser, parse
from homerun.cli._context import Context

from .conftest import FakeClient, Run


def test_read(run: Run, fake: FakeClient) -> None:
    result = run("logs", "read", "hello", "--severity", "warning", "--limit", "5")
    assert result.out == "2026-11-25T10:00:00.000000Z INFO     hello-00002-abc: GET / 200\n"
    ((service, limit, filters),) = fake.called("logs")
    assert (service, limit, filters["min_severity"]) == ("hello", 5, "WARNING")
    as_json = run("logs", "read", "hello", "--format", "json").out
    assert json.loads(as_json) == fake.log_entries[0]


def test_services_logs_read_is_logs_read(run: Run, fake: FakeClient) -> None:
    """gcloud's `gcloud beta run services logs read SERVICE`."""
    result = run("services", "logs", "read", "hello", "--limit", "5", "--region", "r")
    assert "GET / 200" in result.out
    assert fake.called("logs")[0][:2] == ("hello", 5)


def test_read_by_trace(run: Run, fake: FakeClient) -> None:
    trace_id = "4BF92F3577B34DA6A3CE929D0E0E4736"
    run("logs", "read", "hello", "--trace", trace_id)
    run("logs", "read", "hello", "--trace", f"projects/p/traces/{trace_id}")
    assert [call[2]["trace"] for call in fake.called("logs")] == [trace_id.lower()] * 2


def test_read_refuses_bad_filters(run: Run, fake: FakeClient) -> None:
    assert "--limit: must be at least 1" in run("logs", "read", "hello", "--limit", "0").err
    assert "--severity: use one of" in run("logs", "read", "hello", "--severity", "loud").err
    assert "is not a trace id" in run("logs", "read", "hello", "--trace", "abc/1;o=1").err
    assert fake.calls == []


def test_tail_polls_after_the_last_entry_until_interrupted(
    fake: FakeClient, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    polls: list[float] = []

    def sleep(seconds: float) -> None:  # simulated time: the third poll is a Ctrl-C
        polls.append(seconds)
        if len(polls) == 3:
            raise KeyboardInterrupt

    invocation = parse(build_parser(COMMANDS, "0"), ["logs", "tail", "hello"])
    assert invocation.command is not None
    with pytest.raises(KeyboardInterrupt):
        invocation.command.handler(invocation.arguments, Context(fake, sleep=sleep))  # type: ignore[arg-type]
    assert capsys.readouterr().out.count("GET / 200") == 1
    first, *rest = fake.called("logs")
    assert first[1] == 20 and len(rest) == 2
    assert all(call[2]["after"] == "2026-11-25T10:00:00.000000Z" for call in rest)
