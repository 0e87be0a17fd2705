"""The virtualenv cache: keys, reuse, the lock between concurrent builds, leftovers."""

from __future__ import annotations

import os
import stat
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from homerun.build.dependencies import InstallPlan, PipStep
from homerun.build.interpreter import probe_interpreter
from homerun.build.venv import COMPLETE_MARKER, ensure_venv, out_of_room, venv_key
from homerun.errors import BuildError

from .helpers import Output

NOTHING = InstallPlan(origin="nothing to install", steps=(), names=frozenset())


def test_an_empty_plan_builds_a_virtualenv_without_pip(tmp_path: Path) -> None:
    output = Output()
    venv = ensure_venv(plan=NOTHING, interpreter=probe_interpreter(), cache=tmp_path, output=output)
    assert venv.parent == tmp_path
    assert (venv / COMPLETE_MARKER).is_file()
    assert (venv / "bin" / "python").exists()
    assert not list(venv.glob("lib/python*/site-packages/pip"))
    assert f"creating virtualenv {venv}" in output.text


def test_a_completed_virtualenv_is_reused(tmp_path: Path) -> None:
    interpreter = probe_interpreter()
    first = ensure_venv(plan=NOTHING, interpreter=interpreter, cache=tmp_path, output=Output())
    output = Output()
    second = ensure_venv(plan=NOTHING, interpreter=interpreter, cache=tmp_path, output=output)
    assert first == second
    assert output.lines == [f"using cached virtualenv {first}"]


def test_concurrent_builds_of_one_key_build_it_once(tmp_path: Path) -> None:
    interpreter = probe_interpreter()
    outputs = [Output() for _ in range(4)]
    results: list[Path] = []
    start = threading.Barrier(len(outputs))

    def build(output: Output) -> None:
        start.wait()
        results.append(
            ensure_venv(plan=NOTHING, interpreter=interpreter, cache=tmp_path, output=output)
        )

    threads = [threading.Thread(target=build, args=(output,)) for output in outputs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 4 and len(set(results)) == 1
    created = [
        output
        for output in outputs
        if any(line.startswith("creating virtualenv") for line in output.lines)
    ]
    assert len(created) == 1
    reused = [output for output in outputs if output is not created[0]]
    assert all(output.lines[-1].startswith("using cached virtualenv") for output in reused)


def test_an_interrupted_build_is_cleaned_up_before_building_again(tmp_path: Path) -> None:
    interpreter = probe_interpreter()
    leftover = tmp_path / venv_key(NOTHING, interpreter)
    (leftover / "lib").mkdir(parents=True)
    (leftover / "lib" / "half-installed").write_text("")
    output = Output()
    venv = ensure_venv(plan=NOTHING, interpreter=interpreter, cache=tmp_path, output=output)
    assert venv == leftover
    assert "removing the incomplete virtualenv" in output.text
    assert not (venv / "lib" / "half-installed").exists()
    assert (venv / COMPLETE_MARKER).is_file()


def test_the_key_covers_the_interpreter_and_what_is_installed(tmp_path: Path) -> None:
    interpreter = probe_interpreter()
    flask = InstallPlan("x", (PipStep(("flask",), tmp_path),), frozenset({"flask"}))
    flask_elsewhere = InstallPlan(
        "y", (PipStep(("flask",), tmp_path / "other"),), frozenset({"flask"})
    )
    django = InstallPlan("x", (PipStep(("django",), tmp_path),), frozenset({"django"}))
    assert venv_key(flask, interpreter) == venv_key(flask_elsewhere, interpreter)
    assert venv_key(flask, interpreter) != venv_key(django, interpreter)
    other_python = replace(interpreter, identity=interpreter.identity + "-other")
    assert venv_key(flask, interpreter) != venv_key(flask, other_python)


def test_an_interpreter_that_does_not_exist(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match="cannot run the Python interpreter"):
        probe_interpreter(str(tmp_path / "python9"))


def test_a_step_that_ranout_of_room_is_told_apart_from_a_bad_requirement(tmp_path: Path) -> None:
    venv = tmp_path / "venvs" / "abc"  # not made yet: the nearest folder that exists is asked
    pip_said = [
        "ERROR: Could not install packages due to an OSError: [Errno 28] No space left on device"
    ]
    said = out_of_room(venv, pip_said)
    assert said is not None and said.startswith(f"The disk that holds {venv} is full (")
    assert f"`df -h {tmp_path}`" in said
    resolver = ["ERROR: No matching distribution found for flaskk"]
    assert out_of_room(venv, resolver) is None  # room left here: the requirement's fault


@pytest.mark.skipif(os.geteuid() != 0, reason="a marker of another user needs root to make")
def test_a_marker_another_user_wrote_does_not_complete_a_virtualenv(tmp_path: Path) -> None:
    """A sandboxed build's own user may leave a file named as the marker in its virtualenv (or
    one crashed before the seal): only one homerun's user wrote counts."""
    interpreter = probe_interpreter()
    leftover = tmp_path / venv_key(NOTHING, interpreter)
    leftover.mkdir()
    (leftover / COMPLETE_MARKER).write_text("{}\n")
    os.chown(leftover / COMPLETE_MARKER, 1_790_000_001, 1_790_000_001)
    output = Output()
    venv = ensure_venv(plan=NOTHING, interpreter=interpreter, cache=tmp_path, output=output)
    assert "removing the incomplete virtualenv" in output.text
    assert (venv / COMPLETE_MARKER).stat().st_uid == 0


def test_unsandboxed_the_virtualenv_is_homeruns_users(tmp_path: Path) -> None:
    """Not root, or no bwrap: the build runs as homerun's own user, as before."""
    output = Output()
    venv = ensure_venv(
        plan=NOTHING,
        interpreter=probe_interpreter(),
        cache=tmp_path,
        output=output,
        isolation=None,
    )
    assert (venv / COMPLETE_MARKER).stat().st_uid == os.geteuid()
    assert not any(line.startswith("building in a sandbox") for line in output.lines)
    assert stat.S_IMODE((venv / "bin").stat().st_mode) & 0o055 == 0o055  # others read it
