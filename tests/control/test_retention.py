"""Which revisions and virtualenvs retention deletes."""

from __future__ import annotations

from pathlib import Path

from homerun.control.retention import doomed_revisions, unused_venvs


def test_only_idle_revisions_past_the_count_go() -> None:
    revisions = [(f"a-0000{n}", "ready") for n in range(5, 0, -1)]  # newest first
    assert doomed_revisions(revisions, {"a-00005"}, keep=2) == ["a-00002", "a-00001"]
    # A tagged or split old revision is protected wherever it is in the list.
    assert doomed_revisions(revisions, {"a-00005", "a-00001"}, keep=2) == ["a-00002"]
    assert doomed_revisions(revisions, {"a-00005"}, keep=20) == []
    assert doomed_revisions(revisions, {"a-00005"}, keep=0) == [
        "a-00004",
        "a-00003",
        "a-00002",
        "a-00001",
    ]


def test_revisions_being_deployed_are_never_collected() -> None:
    revisions = [("a-00003", "starting"), ("a-00002", "failed"), ("a-00001", "building")]
    assert doomed_revisions(revisions, set(), keep=0) == ["a-00002"]


def test_unused_venvs_are_the_cache_folders_nobody_references(tmp_path: Path) -> None:
    used, unused = tmp_path / ("a" * 24), tmp_path / ("b" * 24)
    for folder in (used, unused, tmp_path / "not-a-venv"):
        folder.mkdir()
    (tmp_path / ("c" * 24 + ".lock")).write_text("")
    assert unused_venvs(tmp_path.iterdir(), [used]) == [unused]
