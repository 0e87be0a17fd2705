"""The build sandbox's view: what it hides, what it shows, how its command drops privileges."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from homerun.build import sandbox
from homerun.build.sandbox import FIRST_UID, UID_RANGE, BuildSandbox, Mount, build_uid


def _pairs(args: list[str]) -> list[tuple[str, ...]]:
    """bwrap's mount arguments as (option, operands...) tuples, in order."""
    arity = {"--tmpfs": 1, "--dir": 1, "--perms": 1, "--ro-bind": 2, "--bind": 2}
    found = []
    index = 0
    while index < len(args) and args[index] != "--chdir":
        option = args[index]
        count = arity.get(option, 0)
        found.append((option, *args[index + 1 : index + 1 + count]))
        index += 1 + count
    return found


def test_the_command_hides_homerun_and_shows_what_the_build_needs(tmp_path: Path) -> None:
    root_home = tmp_path / "root"
    homerun_home = root_home / ".homerun"
    venv = homerun_home / "venvs" / "abc"
    venv.mkdir(parents=True)
    python = root_home / ".pyenv" / "versions" / "3.11.7"
    python.mkdir(parents=True)
    box = BuildSandbox(bwrap="bwrap", setpriv="setpriv", hidden=(root_home, Path("/run")))
    args = box.command(
        ["python", "-m", "pip"],
        uid=FIRST_UID + 7,
        cwd=Path("/src"),
        tmp=tmp_path / "scratch",
        mounts=[Mount(venv, writable=True), Mount(python)],
        hide=[homerun_home],
    )
    pairs = _pairs(args)
    assert pairs[:4] == [
        ("bwrap",),
        ("--die-with-parent",),
        ("--new-session",),
        ("--unshare-pid",),
    ]
    assert ("--ro-bind", "/", "/") in pairs
    order = [pair for pair in pairs if pair[0] in ("--tmpfs", "--bind", "--ro-bind", "--dir")]
    hide_root = order.index(("--tmpfs", str(root_home)))
    hide_home = order.index(("--tmpfs", str(homerun_home)))
    show_venv = order.index(("--bind", str(venv), str(venv)))
    show_python = order.index(("--ro-bind", str(python), str(python)))
    assert hide_root < hide_home < show_venv and hide_root < show_python
    assert ("--tmpfs", "/run") in order
    assert ("--bind", str(tmp_path / "scratch"), "/tmp") in order
    # The folders on the way to a bind in a tmpfs are made for others to enter.
    at = args.index(str(homerun_home / "venvs"))
    assert args[at - 3 : at] == ["--perms", "0755", "--dir"]
    tail = args[args.index("--chdir") :]
    assert tail == [
        "--chdir",
        "/src",
        "--",
        "setpriv",
        "--reuid",
        str(FIRST_UID + 7),
        "--regid",
        str(FIRST_UID + 7),
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--no-new-privs",
        "--",
        "python",
        "-m",
        "pip",
    ]


def test_a_copy_is_shown_at_the_path_of_what_it_copies(tmp_path: Path) -> None:
    box = BuildSandbox(bwrap="bwrap", setpriv="setpriv")
    args = box.command(
        ["true"],
        uid=FIRST_UID,
        cwd=Path("/"),
        tmp=tmp_path / "tmp",
        mounts=[Mount(Path("/srv/app"), tmp_path / "copy", writable=True)],
    )
    assert ("--bind", str(tmp_path / "copy"), "/srv/app") in _pairs(args)


def test_each_build_gets_a_user_of_the_builds_range() -> None:
    uids = {build_uid() for _ in range(20)}
    assert all(FIRST_UID <= uid < FIRST_UID + UID_RANGE for uid in uids)
    assert len(uids) > 1
    # Not a revision's (runtime/sandbox.py): those start at 1_800_000_000.
    assert FIRST_UID + UID_RANGE <= 1_800_000_000


def test_as_a_normal_user_builds_run_as_that_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    found, why = sandbox.find()
    assert found is None
    assert why.startswith("builds run as homerun's own user")


def test_without_bwrap_root_builds_run_unsandboxed_saying_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    found, why = sandbox.find()
    assert found is None
    assert why.startswith("builds run as root, unsandboxed: bwrap, setpriv not found")
    assert "apt-get install bubblewrap util-linux" in why


@pytest.mark.skipif(os.geteuid() != 0, reason="the build sandbox needs root")
def test_the_probe_runs_a_sandbox_here() -> None:
    found, why = sandbox.find()
    if found is None:
        pytest.skip(why)
    assert why.startswith("builds are sandboxed (bubblewrap)")
