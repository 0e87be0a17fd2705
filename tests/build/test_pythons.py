"""Which Python stands in for `FROM python:X.Y`: the version asked for, and the interpreters
found on a machine (a pyenv tree and a PATH made here, with real executables)."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.specifiers import SpecifierSet

from homerun.build.pythons import (
    PythonOnMachine,
    matches,
    pick,
    pick_in_range,
    pythons_on_machine,
    range_is_older,
    releases_in_range,
    requested_version,
)


@pytest.mark.parametrize(
    ("image", "version"),
    [
        ("python:3.12-slim", "3.12"),
        ("python:3.8-slim", "3.8"),
        ("python:3.12.4-bookworm", "3.12.4"),
        ("python:3-alpine", "3"),
        ("python:3.11", "3.11"),
        ("docker.io/library/python:3.10-slim-bookworm", "3.10"),
        ("python", None),
        ("python:latest", None),
        ("python:slim", None),
        (f"python:3.12@sha256:{'0' * 64}", "3.12"),
    ],
)
def test_the_version_a_python_image_names(image: str, version: str | None) -> None:
    assert requested_version(image) == version


def test_versions_match_by_their_leading_parts() -> None:
    assert matches("3.12.1", "3.12") and matches("3.12.1", "3") and matches("3.12", "3.12")
    assert not matches("3.1.4", "3.12") and not matches("3.11.7", "3.12")
    assert matches("3.12.1", "3.12.1") and not matches("3.12.1", "3.12.4")


def _executable(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/sh\n")
    path.chmod(0o755)


def test_pyenv_versions_and_path_binaries_are_found(tmp_path: Path) -> None:
    pyenv = tmp_path / "pyenv"
    for version in ("3.8.18", "3.12.1", "3.10.13"):
        _executable(pyenv / "versions" / version / "bin" / f"python{version.rsplit('.', 1)[0]}")
    (pyenv / "versions" / "miniconda3-latest").mkdir()  # not a version: skipped
    bin_folder = tmp_path / "bin"
    _executable(bin_folder / "python3.9")
    _executable(bin_folder / "python3")  # no X.Y in its name: it is the default, if any
    found = pythons_on_machine(
        {"PYENV_ROOT": str(pyenv), "HOME": str(tmp_path / "nobody"), "PATH": str(bin_folder)}
    )
    assert [(python.version, python.where) for python in found] == [
        ("3.8.18", "pyenv"),
        ("3.10.13", "pyenv"),
        ("3.12.1", "pyenv"),
        ("3.9", "PATH"),
    ]
    assert found[0].executable == str(pyenv / "versions/3.8.18/bin/python3.8")


def test_the_default_python_is_kept_when_it_matches_else_the_newest_match() -> None:
    machine = [
        PythonOnMachine("/p/3.12.0/bin/python3.12", "3.12.0", "pyenv"),
        PythonOnMachine("/p/3.12.1/bin/python3.12", "3.12.1", "pyenv"),
        PythonOnMachine("/usr/bin/python3.8", "3.8", "PATH"),
    ]
    assert pick("3.11", "3.11.7", machine) is None  # the default one
    chosen = pick("3.12", "3.11.7", machine)
    assert chosen is not None and chosen.version == "3.12.1"
    chosen = pick("3.8", "3.11.7", machine)
    assert chosen is not None and chosen.executable == "/usr/bin/python3.8"
    with pytest.raises(LookupError):
        pick("3.14", "3.11.7", machine)


_MACHINE = [
    PythonOnMachine("/p/3.9.18/bin/python3.9", "3.9.18", "pyenv"),
    PythonOnMachine("/p/3.12.1/bin/python3.12", "3.12.1", "pyenv"),
    PythonOnMachine("/p/3.13.0/bin/python3.13", "3.13.0", "pyenv"),
    PythonOnMachine("/usr/bin/python3.10", "3.10", "PATH"),
]


@pytest.mark.parametrize(
    ("requires", "chosen"),
    [
        (">=3.10,<3.13", "3.12.1"),  # the newest inside, not the default 3.11
        (">=3.8", "3.13.0"),
        ("~=3.9.2", "3.9.18"),
        ("==3.10.*", "3.10"),  # python3.10 on the PATH: its X.Y stands for 3.10.z
        (">=3.10.2,<3.11", "3.10"),
        ("<3.12,!=3.9.*,!=3.10.*", None),  # the default 3.11.7 is the newest inside
    ],
)
def test_requires_python_picks_the_newest_python_inside(requires: str, chosen: str | None) -> None:
    found = pick_in_range(SpecifierSet(requires), "3.11.7", _MACHINE)
    assert (found.version if found else None) == chosen


def test_a_range_without_a_python_here() -> None:
    with pytest.raises(LookupError):
        pick_in_range(SpecifierSet(">=3.14"), "3.11.7", _MACHINE)
    assert not range_is_older(SpecifierSet(">=3.14"), "3.11.7")
    assert range_is_older(SpecifierSet("<3.8"), "3.11.7")
    assert range_is_older(SpecifierSet(">=3.6,<3.9"), "3.11.7")
    assert not range_is_older(SpecifierSet(">3.11,<3.5"), "3.11.7")  # nothing is inside
    assert releases_in_range(SpecifierSet(">=3.13,<3.16")) == ["3.13", "3.14", "3.15"]
