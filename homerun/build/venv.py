"""Build virtualenvs once per (interpreter, what is installed) and share them between revisions.

A virtualenv is not relocatable (its scripts name its own path), so it is built in place at
`cache/<key>`; a marker file written last says it is complete. An exclusive fcntl lock on
`cache/<key>.lock` lets one build run while a second build of the same key waits and then
reuses it. A failed or interrupted build leaves no folder behind, and a folder without the
marker (left by a crash) is removed before building again.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

from homerun.build.dependencies import InstallPlan, fingerprint
from homerun.build.interpreter import Interpreter
from homerun.errors import BuildError
from homerun.readable import share_read

COMPLETE_MARKER = ".homerun-complete"
# Bump when the way virtualenvs are built changes, so old ones are not reused.
LAYOUT_VERSION = "1"
# pip's last lines say why it failed ("No matching distribution found for ..."); the rest
# was streamed to the build output already.
PIP_TAIL_LINES = 12
# Variables that would make pip or the interpreter look outside the virtualenv.
_SCRUBBED_ENV = (
    "PYTHONPATH",
    "PYTHONHOME",
    "PYTHONSTARTUP",
    "PIP_USER",
    "PIP_TARGET",
    "PIP_PREFIX",
    "PIP_ROOT",
    "VIRTUAL_ENV",
    "__PYVENV_LAUNCHER__",
)


def venv_key(plan: InstallPlan, interpreter: Interpreter) -> str:
    material = json.dumps([LAYOUT_VERSION, interpreter.identity, fingerprint(plan)])
    return hashlib.sha256(material.encode()).hexdigest()[:24]


def ensure_venv(
    *, plan: InstallPlan, interpreter: Interpreter, cache: Path, output: Callable[[str], None]
) -> Path:
    """The virtualenv for `plan` on `interpreter`: reused from the cache, or built there."""
    cache.mkdir(parents=True, exist_ok=True)
    key = venv_key(plan, interpreter)
    venv = cache / key
    if (venv / COMPLETE_MARKER).exists():
        output(f"using cached virtualenv {venv}")
        return venv
    with _exclusive(cache / f"{key}.lock", output, venv):
        if (venv / COMPLETE_MARKER).exists():  # built by the build we waited for
            output(f"using cached virtualenv {venv}")
            return venv
        if venv.exists():
            output(f"removing the incomplete virtualenv {venv} left by an interrupted build")
            shutil.rmtree(venv)
        try:
            _create(venv, plan, interpreter, output)
        except BaseException:
            shutil.rmtree(venv, ignore_errors=True)
            raise
    return venv


@contextlib.contextmanager
def _exclusive(lock_path: Path, output: Callable[[str], None], venv: Path) -> Iterator[None]:
    with open(lock_path, "a+b") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            output(f"waiting for another build of the same virtualenv {venv}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _create(
    venv: Path, plan: InstallPlan, interpreter: Interpreter, output: Callable[[str], None]
) -> None:
    # Nothing to install: no pip either (about 60 ms instead of 3 s).
    without_pip = ["--without-pip"] if plan.empty else []
    output(f"creating virtualenv {venv} (Python {interpreter.version})")
    _stream(
        [interpreter.executable, "-m", "venv", *without_pip, str(venv)],
        cwd=None,
        output=output,
        what=f"{interpreter.executable} -m venv",
        writes_to=venv,
        advice="Check that this Python has the venv module (Debian: apt-get install "
        f"python{interpreter.short_version}-venv), or pick another interpreter.",
    )
    python = venv / "bin" / "python"
    for step in plan.steps:
        command = [
            str(python),
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            *step.arguments,
        ]
        output(f"$ pip install {shlex.join(step.arguments)}")
        _stream(
            command,
            cwd=step.cwd,
            output=output,
            what=f"pip install {shlex.join(step.arguments)}",
            writes_to=venv,
            advice="Fix the requirement (its name, its version, or a system library it "
            "needs to build) and deploy again.",
        )
    share_read(venv)  # the revision's own user reads it (readable.py)
    marker = venv / COMPLETE_MARKER
    partial = marker.with_suffix(".partial")
    partial.write_text(
        json.dumps({"origin": plan.origin, "steps": [list(step.arguments) for step in plan.steps]})
        + "\n"
    )
    os.replace(partial, marker)


def _stream(
    command: Sequence[str],
    *,
    cwd: Path | None,
    output: Callable[[str], None],
    what: str,
    advice: str,
    writes_to: Path,
) -> None:
    """Run `command`, passing each line of its stdout and stderr to `output` as it comes."""
    env = {name: value for name, value in os.environ.items() if name not in _SCRUBBED_ENV}
    env["PYTHONUNBUFFERED"] = "1"  # pip's stdout lines arrive as written, not in blocks
    env["PIP_PROGRESS_BAR"] = "off"
    tail: collections.deque[str] = collections.deque(maxlen=PIP_TAIL_LINES)
    try:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
    except OSError as error:
        raise BuildError(f"{what}: cannot run {command[0]}: {error}") from error
    with process:
        for line in process.stdout or ():
            line = line.rstrip("\r\n")
            output(line)
            if line.strip():
                tail.append(line)
        returncode = process.wait()
    if returncode != 0:
        last_lines = "\n".join(f"  {line}" for line in tail)
        full = out_of_room(writes_to, tail)
        if full:
            advice = full  # the requirement or the interpreter are not to blame
        raise BuildError(
            f"{what} failed (exit {returncode}); its last lines:\n{last_lines}\n{advice}"
        )


_FULL_BYTES = 1024 * 1024  # less free than this where a build writes: its disk is full


def out_of_room(path: Path, lines: Iterable[str]) -> str | None:
    """What to say when a step failed for want of space where it writes (`path`): its output
    says so (pip's `[Errno 28]`), or the disk is full now (ensurepip says nothing of it)."""
    said = any("No space left on device" in line or "Disk quota exceeded" in line for line in lines)
    existing = next((folder for folder in (path, *path.parents) if folder.exists()), None)
    free = None
    if existing is not None:
        stat = os.statvfs(existing)
        free = stat.f_bavail * stat.f_frsize
    if not said and (free is None or free >= _FULL_BYTES):
        return None
    left = f" ({free // 1024} KiB free)" if free is not None else ""
    return (
        f"The disk that holds {path} is full{left}: free some space there (`df -h "
        f"{existing or path}`), or keep virtualenvs on another disk (`venv-cache` in "
        "config.yaml or HOMERUN_VENV_CACHE, read at `homerun up`), and deploy again."
    )
