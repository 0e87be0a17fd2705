"""One virtualenv build run as a user of its own in the build sandbox: its folders made before,
the virtualenv handed over to root after.

Before: the virtualenv's folder (empty, 0700) and a scratch folder in the system's temporary
folder (its `tmp/`: the build's /tmp, HOME and pip cache) belong to the build's user; a
source folder whose files others may not read, or that holds a local project pip builds in
place (writing `build/` and `*.egg-info` into it), is copied into the scratch folder for the
build's user and shown at its own path, so the artifact's copy is never written.

After: whatever the build's user left running is ended, and the virtualenv is sealed: every
entry owned by root, folders 0755, files 0644 (0755 when executable), set-id bits and ACLs
gone, anything else than files, folders and links removed. Revisions that reuse it (and
instances, which run as other users) read and run it; no later build, being another user,
may change it. The scratch folder is removed: pip's cache is never shared between builds, as a
cache one build writes and another reads would let the first poison the second's packages.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import signal
import stat
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from homerun.build.pip_settings import read_settings
from homerun.build.sandbox import BuildSandbox, Mount, homerun_home, remove_tree
from homerun.errors import BuildError

_ACLS = ("system.posix_acl_access", "system.posix_acl_default")
_END_SECONDS = 5.0


@dataclass(frozen=True)
class Invocation:
    """A command as it is run: its words, its environment, its folder."""

    argv: list[str]
    env: dict[str, str]
    cwd: Path | None


@dataclass(frozen=True)
class ConfinedBuild:
    """How each command of one virtualenv build runs in the sandbox, as `uid`."""

    sandbox: BuildSandbox
    uid: int
    venv: Path
    scratch: Path
    mounts: tuple[Mount, ...]
    hide: tuple[Path, ...]
    env: Mapping[str, str]

    @property
    def tmp(self) -> Path:
        return self.scratch / "tmp"

    def invocation(self, argv: Sequence[str], cwd: Path | None) -> Invocation:
        command = self.sandbox.command(
            argv,
            uid=self.uid,
            cwd=cwd or Path("/tmp"),
            tmp=self.tmp,
            mounts=self.mounts,
            hide=self.hide,
        )
        return Invocation(command, dict(self.env), None)

    def finish(self) -> None:
        """End what the build's user left running, then seal the virtualenv."""
        end_processes(self.uid)
        seal(self.venv)

    def discard(self) -> None:
        end_processes(self.uid)
        remove_tree(self.scratch)


def prepare(
    sandbox: BuildSandbox,
    *,
    uid: int,
    venv: Path,
    scratch: Path,
    interpreter: str,
    contexts: Iterable[tuple[Path, bool]],
    cache: Path,
) -> ConfinedBuild:
    """Make the build's folders, owned by `uid`: `venv` (which must not exist) and `scratch`.
    `contexts` are the source folders pip reads, each with whether it builds a project there."""
    home = homerun_home()
    scratch.mkdir(mode=0o700, exist_ok=True)  # tempfile.mkdtemp's: 0700 and root's already
    tmp = scratch / "tmp"
    tmp.mkdir(mode=0o700)
    os.chown(tmp, uid, uid)
    venv.mkdir(mode=0o700)
    os.chown(venv, uid, uid)
    mounts = [Mount(venv, writable=True)]
    mounts += [Mount(path) for path in interpreter_folders(interpreter)]
    in_place: dict[Path, bool] = {}
    for context, builds in contexts:
        in_place[context] = in_place.get(context, False) or builds
    for number, (context, builds_in_place) in enumerate(in_place.items()):
        if builds_in_place or not readable_by_others(context):
            copy = scratch / f"source-{number}"
            shutil.copytree(context, copy, symlinks=True)
            _give(copy, uid)
            mounts.append(Mount(context, copy, writable=True))
        else:
            mounts.append(Mount(context))
    hide = (home, cache)
    settings = read_settings(os.environ, hidden=[*sandbox.hidden, *hide], never=hide)
    mounts += [Mount(path) for path in settings.shown]
    env = {
        **settings.environment,
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "XDG_CACHE_HOME": "/tmp/.cache",
        "PIP_CACHE_DIR": "/tmp/.cache/pip",  # this build's own (see the module's docstring)
        "PYTHONUNBUFFERED": "1",  # pip's stdout lines arrive as written, not in blocks
        "PIP_PROGRESS_BAR": "off",
    }
    if settings.config is not None:
        config = tmp / "pip.conf"
        config.write_text(settings.config)
        config.chmod(0o644)
        env["PIP_CONFIG_FILE"] = "/tmp/pip.conf"
    return ConfinedBuild(
        sandbox=sandbox,
        uid=uid,
        venv=venv,
        scratch=scratch,
        mounts=tuple(_outermost(mounts)),
        hide=hide,
        env=env,
    )


@functools.cache
def interpreter_folders(executable: str) -> tuple[Path, ...]:
    """What a build must see of an interpreter to run it: the folder of `executable`, and its
    installation (sys.prefix, sys.base_prefix: a pyenv Python under a hidden /root)."""
    try:
        done = subprocess.run(
            [executable, "-I", "-c", "import sys; print(sys.prefix); print(sys.base_prefix)"],
            capture_output=True,
            text=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
            check=True,
        )
    except (OSError, subprocess.SubprocessError) as error:
        raise BuildError(f"cannot run the Python interpreter {executable}: {error}") from error
    folders = [Path(os.path.abspath(executable)).parent, *map(Path, done.stdout.split())]
    folders += [Path(os.path.realpath(folder)) for folder in folders]
    return tuple(folder for folder in dict.fromkeys(folders) if folder != Path("/"))


def readable_by_others(folder: Path) -> bool:
    """Whether a user of no group of theirs may read every file and enter every folder."""
    for root, folders, files in os.walk(folder):
        for name in (*folders, *files):
            info = os.lstat(os.path.join(root, name))
            if stat.S_ISLNK(info.st_mode):
                continue
            needed = stat.S_IROTH | (stat.S_IXOTH if stat.S_ISDIR(info.st_mode) else 0)
            if info.st_mode & needed != needed:
                return False
    info = folder.stat()
    return info.st_mode & (stat.S_IROTH | stat.S_IXOTH) == stat.S_IROTH | stat.S_IXOTH


def _outermost(mounts: list[Mount]) -> list[Mount]:
    """The mounts without those inside another one shown the same way (/usr/bin inside /usr)."""
    kept: list[Mount] = []
    for mount in mounts:
        covered = any(
            mount.path.is_relative_to(other.path)
            and other.source is None
            and mount.source is None
            and other.writable == mount.writable
            for other in mounts
            if other is not mount and other.path != mount.path
        )
        if not covered and mount not in kept:
            kept.append(mount)
    return kept


def _give(folder: Path, uid: int) -> None:
    os.lchown(folder, uid, uid)
    for root, folders, files in os.walk(folder):
        for name in (*folders, *files):
            os.lchown(os.path.join(root, name), uid, uid)


def end_processes(uid: int) -> None:
    """SIGKILL every process of `uid` until none is left. The sandbox's PID namespace ends
    them as its first process exits, but bwrap may return before the kernel is done."""
    deadline = time.monotonic() + _END_SECONDS
    while True:
        found = processes_of(uid)
        if not found:
            return
        for pid in found:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if time.monotonic() > deadline:
            raise BuildError(
                f"processes of the build's user {uid} ({', '.join(map(str, found))}) did not "
                "end; the virtualenv is not used"
            )
        time.sleep(0.01)


def processes_of(uid: int) -> list[int]:
    """Pids whose real, effective, saved or filesystem uid is `uid` (/proc/PID/status: its
    owner would say root for a process that made itself undumpable)."""
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/status", encoding="ascii", errors="replace") as file:
                for line in file:
                    if line.startswith("Uid:"):
                        if str(uid) in line.split()[1:]:
                            found.append(int(entry.name))
                        break
        except OSError:
            continue  # gone meanwhile
    return found


def seal(venv: Path) -> None:
    """Give the virtualenv to root, readable and runnable by all, writable by root alone."""
    uid, gid = os.geteuid(), os.getegid()
    _seal_entry(venv, uid, gid)
    for root, folders, files in os.walk(venv):
        for name in (*folders, *files):
            _seal_entry(Path(root, name), uid, gid)


def _seal_entry(path: Path, uid: int, gid: int) -> None:
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode):
        os.lchown(path, uid, gid)
        return
    if not (stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode)):
        path.unlink()  # a pipe or a socket: no virtualenv holds one
        return
    # Not a link, and nothing of the build's user runs any more to make it one.
    os.chown(path, uid, gid)
    for name in _ACLS:
        with contextlib.suppress(OSError):
            os.removexattr(path, name)
    executable = stat.S_ISDIR(info.st_mode) or info.st_mode & 0o111
    os.chmod(path, 0o755 if executable else 0o644)
