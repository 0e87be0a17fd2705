"""Build virtualenvs once per (interpreter, what is installed) and share them between revisions.

A virtualenv is not relocatable (its scripts name its own path), so it is built in place at
`cache/<key>`; a marker file written last says it is complete. An exclusive fcntl lock on
`cache/<key>.lock` lets one build run while a second build of the same key waits and then
reuses it. A failed or interrupted build leaves no folder behind, and a folder without the
marker (left by a crash) is removed before building again.

pip runs the code of what it installs, so where homerun runs as root with bubblewrap, the
build runs in a sandbox as a user of its own, and the virtualenv is handed to root once built
(build/sandbox.py, build/confined.py); elsewhere it runs as homerun's own user, as instances do.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import hashlib
import json
import os
import shlex
import stat
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Literal, Protocol

from homerun.build import confined, sandbox
from homerun.build.confined import Invocation
from homerun.build.dependencies import InstallPlan, fingerprint
from homerun.build.interpreter import Interpreter
from homerun.build.sandbox import BuildSandbox
from homerun.errors import BuildError
from homerun.readable import share_read

COMPLETE_MARKER = ".homerun-complete"
# Bump when the way virtualenvs are built changes, so old ones are not reused. 2: builds are
# sandboxed; a virtualenv built before was written by root running the deploy's code, and
# its key did not cover --find-links folders.
LAYOUT_VERSION = "2"
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
    *,
    plan: InstallPlan,
    interpreter: Interpreter,
    cache: Path,
    output: Callable[[str], None],
    isolation: BuildSandbox | None | Literal["detect"] = "detect",
) -> Path:
    """The virtualenv for `plan` on `interpreter`: reused from the cache, or built there, in
    `isolation` (by default the sandbox this machine gives builds, if any)."""
    cache.mkdir(parents=True, exist_ok=True)
    key = venv_key(plan, interpreter)
    venv = cache / key
    if _complete(venv):
        output(f"using cached virtualenv {venv}")
        return venv
    with _exclusive(cache / f"{key}.lock", output, venv):
        if _complete(venv):  # built by the build we waited for
            output(f"using cached virtualenv {venv}")
            return venv
        if os.path.lexists(venv):
            output(f"removing the incomplete virtualenv {venv} left by an interrupted build")
            sandbox.remove_tree(venv)
        if isolation == "detect":
            isolation, said = sandbox.detect()
            if isolation is None and os.geteuid() == 0:
                output(f"warning: {said}")
        try:
            if isolation is None:
                _create(venv, plan, interpreter, output, _Unconfined())
                share_read(venv)  # the revision's own user reads it (readable.py)
            else:
                # Its scratch folder (pip's /tmp, HOME and cache, copies of sources) is in the
                # system's temporary folder, as pip's temporary files are unsandboxed: not on
                # the virtualenvs' disk, whose room what pip removes as it fails would give
                # back, hiding that it was full (out_of_room).
                scratch = Path(tempfile.mkdtemp(prefix=f"homerun-build-{key[:12]}-"))
                _create_confined(venv, scratch, plan, interpreter, cache, output, isolation)
            _mark_complete(venv, plan)
        except BaseException:
            sandbox.remove_tree(venv)
            raise
    return venv


def _complete(venv: Path) -> bool:
    """Whether `venv` was finished: its marker is a file that homerun wrote (a build's own
    user may leave a file of that name, but not one of homerun's user)."""
    try:
        info = (venv / COMPLETE_MARKER).lstat()
    except OSError:
        return False
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.geteuid()


def _create_confined(
    venv: Path,
    scratch: Path,
    plan: InstallPlan,
    interpreter: Interpreter,
    cache: Path,
    output: Callable[[str], None],
    isolation: BuildSandbox,
) -> None:
    uid = sandbox.build_uid()
    output(f"building in a sandbox as user {uid} (bubblewrap; no access to HOMERUN_HOME)")
    build: confined.ConfinedBuild | None = None
    try:
        build = confined.prepare(
            isolation,
            uid=uid,
            venv=venv,
            scratch=scratch,
            interpreter=interpreter.executable,
            contexts=[(step.reads, bool(step.projects)) for step in plan.steps],
            cache=cache,
        )
        _create(venv, plan, interpreter, output, build)
        # Whatever the build wrote under the marker's names is not a marker.
        for name in (COMPLETE_MARKER, f"{COMPLETE_MARKER}.partial"):
            sandbox.remove_tree(venv / name)
        build.finish()
    finally:
        if build is not None:
            build.discard()
        else:
            confined.end_processes(uid)
            sandbox.remove_tree(scratch)


def _mark_complete(venv: Path, plan: InstallPlan) -> None:
    marker = venv / COMPLETE_MARKER
    partial = marker.with_suffix(".partial")
    partial.write_text(
        json.dumps({"origin": plan.origin, "steps": [list(step.arguments) for step in plan.steps]})
        + "\n"
    )
    partial.chmod(0o644)
    os.replace(partial, marker)


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


class _Runner(Protocol):
    def invocation(self, argv: Sequence[str], cwd: Path | None) -> Invocation: ...


class _Unconfined:
    """Commands run as homerun's own user, with its environment but for what would make pip or
    the interpreter look outside the virtualenv."""

    def invocation(self, argv: Sequence[str], cwd: Path | None) -> Invocation:
        env = {name: value for name, value in os.environ.items() if name not in _SCRUBBED_ENV}
        env["PYTHONUNBUFFERED"] = "1"  # pip's stdout lines arrive as written, not in blocks
        env["PIP_PROGRESS_BAR"] = "off"
        return Invocation(list(argv), env, cwd)


def _create(
    venv: Path,
    plan: InstallPlan,
    interpreter: Interpreter,
    output: Callable[[str], None],
    runner: _Runner,
) -> None:
    # Nothing to install: no pip either (about 60 ms instead of 3 s).
    without_pip = ["--without-pip"] if plan.empty else []
    output(f"creating virtualenv {venv} (Python {interpreter.version})")
    _stream(
        runner.invocation([interpreter.executable, "-m", "venv", *without_pip, str(venv)], None),
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
            runner.invocation(command, step.cwd),
            output=output,
            what=f"pip install {shlex.join(step.arguments)}",
            writes_to=venv,
            advice="Fix the requirement (its name, its version, or a system library it "
            "needs to build) and deploy again.",
        )


def _stream(
    command: Invocation,
    *,
    output: Callable[[str], None],
    what: str,
    advice: str,
    writes_to: Path,
) -> None:
    """Run `command`, passing each line of its stdout and stderr to `output` as it comes."""
    tail: collections.deque[str] = collections.deque(maxlen=PIP_TAIL_LINES)
    try:
        process = subprocess.Popen(
            command.argv,
            cwd=command.cwd,
            env=command.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            encoding="utf-8",
            errors="replace",
            bufsize=1,
        )
    except OSError as error:
        raise BuildError(f"{what}: cannot run {command.argv[0]}: {error}") from error
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
