"""`homerun secrets ...` over a fake client."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from .conftest import FakeClient, Run


def test_create_from_a_file_and_from_stdin(
    run: Run, fake: FakeClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "value").write_text("s3cret\n")
    result = run("secrets", "create", "db-url", "--data-file", str(tmp_path / "value"))
    assert result.out == "Created secret [db-url] version [1].\n"
    assert fake.called("create_secret") == [("db-url", "s3cret\n")]
    added = run("secrets", "versions", "add", "db-url", "--data-file", str(tmp_path / "value"))
    assert added.out == "Created version [3] of the secret [db-url].\n"


def test_list_and_versions(run: Run) -> None:
    assert run("secrets", "list").out.splitlines()[1].split() == [
        "db-url",
        "2",
        "2023-11-14",
        "22:13:20Z",
        "hello-00002-abc",
    ]
    versions = run("secrets", "versions", "list", "db-url").out.splitlines()
    assert [line.split()[0] for line in versions] == ["VERSION", "2", "1"]


def test_delete_confirms_on_a_terminal(run: Run, fake: FakeClient) -> None:
    refused = run("secrets", "delete", "db-url", typed="n\n")
    assert refused.code == 1 and fake.called("delete_secret") == []
    assert "Secret [db-url] and all its versions will be deleted." in refused.out
    assert run("secrets", "delete", "db-url", "--quiet", typed="n\n").code == 0
    assert fake.called("delete_secret") == [("db-url",)]


def test_versions_alone_lists_its_commands(run: Run) -> None:
    result = run("secrets", "versions")
    assert result.code == 2 and "list" in result.out and "add" in result.out


def test_stdin_is_read_whole(run: Run, fake: FakeClient, monkeypatch: pytest.MonkeyPatch) -> None:
    class Piped(io.StringIO):
        buffer = io.BytesIO(b"from-stdin")

    monkeypatch.setattr("sys.stdin", Piped())
    from homerun.cli.secrets import _data_file

    assert _data_file("-") == "from-stdin"
