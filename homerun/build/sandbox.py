"""A sandbox for what a build runs from a deploy: pip, and the build backends pip starts.

pip runs code at install time (a local package's setup.py, any sdist's build backend), so a
build runs code of whoever may deploy. When homerun runs as root and bubblewrap works (as for
instances: runtime/sandbox.py), each build runs in bwrap as a user of its own (`build_uid`, new
for every build), with no capability and no_new_privs (setpriv): the whole system read-only;
HOMERUN_HOME, the daemon user's home, /run and the virtualenv cache hidden under empty tmpfs;
shown again only what the build needs: the interpreter's installation and the source folder
read-only, the virtualenv being built writable, and a private /tmp on disk (the build's own
scratch folder, also HOME and pip's cache). Its own PID and IPC namespaces (what it leaves
running dies with it), a new session (no terminal to push input into). The network is the
host's: pip must reach the package index.

As a normal user, or without bwrap, builds run as homerun's own user, as before: that is the
user instances run as then, so the build gets nothing the app would not (docs/design.md,
"Source builds").
"""

from __future__ import annotations

import contextlib
import functools
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from homerun.readable import hidden_on_the_way

# Each build's own user and group: FIRST_UID + a random number, new for every build. Below the
# revisions' range (runtime/sandbox.py: 1_800_000_000 + a million), far above the ids
# distributions give (users, and podman's subordinate ranges from 100000).
FIRST_UID = 1_790_000_000
UID_RANGE = 1_000_000
_PROBE_SECONDS = 10.0


def build_uid() -> int:
    """A user (and group) id for one build: no file or process of another build has it."""
    return FIRST_UID + secrets.randbelow(UID_RANGE)


def homerun_home(environ: Mapping[str, str] = os.environ) -> Path:
    """HOMERUN_HOME as config.py reads it (this layer may not import config): hidden from builds
    even when the daemon does not say which it is."""
    return Path(environ.get("HOMERUN_HOME") or Path.home() / ".homerun").expanduser().resolve()


@dataclass(frozen=True)
class Mount:
    """One folder (or file) the build sees: `source` on the host shown at `path`."""

    path: Path
    source: Path | None = None  # None: the same path on the host
    writable: bool = False

    @property
    def host(self) -> Path:
        return self.source or self.path


@dataclass(frozen=True)
class BuildSandbox:
    """How to run a build's commands in a sandbox of their own."""

    bwrap: str
    setpriv: str
    # Always hidden: HOMERUN_HOME, the daemon user's home folder, /run.
    hidden: tuple[Path, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        return (
            "builds are sandboxed (bubblewrap): a user of their own for each build (uid "
            f"{FIRST_UID} and up), no capabilities, no_new_privs, a read-only system, "
            "HOMERUN_HOME and other virtualenvs hidden, private /tmp and PID namespace"
        )

    def command(
        self,
        argv: Sequence[str],
        *,
        uid: int,
        cwd: Path,
        tmp: Path,
        mounts: Iterable[Mount] = (),
        hide: Iterable[Path] = (),
    ) -> list[str]:
        """`argv` run in `cwd` as `uid` (and its group), seeing `mounts` over the read-only
        system, `tmp` (a folder on the host) as its /tmp, and none of the hidden folders (these
        and `hide`) but what `mounts` shows of them."""
        mounts = [*mounts]
        # --die-with-parent: a daemon that dies takes its builds along. The sandbox's PID 1
        # (bwrap's) ends when the command does, and the kernel then kills whatever the command
        # left in the namespace: nothing of the build's user runs on once the build is over.
        args = [self.bwrap, "--die-with-parent", "--new-session", "--unshare-pid", "--unshare-ipc"]
        args += ["--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev"]
        args += ["--perms", "1777", "--tmpfs", "/dev/shm"]
        shown = [mount.path for mount in mounts]
        hidden = hidden_on_the_way([*self.hidden, *hide], shown, open_at=(Path("/tmp"),))
        args += _mounts(hidden, [Mount(Path("/tmp"), tmp, writable=True), *mounts])
        args += ["--chdir", str(cwd), "--", self.setpriv]
        args += ["--reuid", str(uid), "--regid", str(uid), "--clear-groups"]
        args += ["--inh-caps=-all", "--bounding-set=-all", "--no-new-privs", "--", *argv]
        return args


def _mounts(hidden: list[Path], mounts: list[Mount]) -> list[str]:
    """bwrap's arguments for the tmpfs that hide and the binds that show, outermost first. The
    folders on the way from a tmpfs (or /tmp) to a bind are made 0755 (bwrap would make them
    0700, which the build's user could not enter)."""
    covering = [*hidden, *(mount.path for mount in mounts if mount.path == Path("/tmp"))]
    steps: dict[Path, list[str]] = {}
    for folder in hidden:
        steps[folder] = ["--tmpfs", str(folder)]
    for mount in mounts:
        how = "--bind" if mount.writable else "--ro-bind"
        steps[mount.path] = [how, str(mount.host), str(mount.path)]
    for path in [*hidden, *(mount.path for mount in mounts)]:
        for ancestor in path.parents:
            inside = any(ancestor != root and ancestor.is_relative_to(root) for root in covering)
            if inside and ancestor not in steps:
                steps[ancestor] = ["--perms", "0755", "--dir", str(ancestor)]
    args: list[str] = []
    for path in sorted(steps, key=lambda path: len(path.parts)):
        args += steps[path]
    return args


def find(home: Path | None = None) -> tuple[BuildSandbox | None, str]:
    """The sandbox builds get on this machine, or None and why not (one sentence)."""
    if os.geteuid() != 0:
        return None, (
            "builds run as homerun's own user (homerun does not run as root), the user "
            "instances run as"
        )
    programs = {name: shutil.which(name) for name in ("bwrap", "setpriv")}
    absent = [name for name, path in programs.items() if path is None]
    if absent:
        needed = " ".join(
            dict.fromkeys({"bwrap": "bubblewrap", "setpriv": "util-linux"}[name] for name in absent)
        )
        return None, (
            f"builds run as root, unsandboxed: {', '.join(absent)} not found (install "
            f"{needed}: `apt-get install {needed}`)"
        )
    user_home = Path(os.path.expanduser("~"))
    # HOMERUN_HOME is hidden by each build (build/venv.py), as it is when the build starts.
    hidden = [*([home] if home is not None else []), user_home, Path("/run")]
    sandbox = BuildSandbox(
        bwrap=str(programs["bwrap"]),
        setpriv=str(programs["setpriv"]),
        hidden=tuple(dict.fromkeys(path for path in hidden if path != Path("/"))),
    )
    with tempfile.TemporaryDirectory(prefix="homerun-build-probe-") as tmp:
        argv = sandbox.command(["true"], uid=build_uid(), cwd=Path("/"), tmp=Path(tmp))
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=_PROBE_SECONDS, check=False
            )
        except (OSError, subprocess.TimeoutExpired) as error:
            return None, f"builds run as root, unsandboxed: bwrap could not be run ({error})"
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        return None, f"builds run as root, unsandboxed: bwrap cannot make a sandbox here: {said[0]}"
    return sandbox, sandbox.describe()


@functools.cache
def detect() -> tuple[BuildSandbox | None, str]:
    """`find()` once per process: what builds get does not change while homerun runs."""
    return find()


def remove_tree(path: Path) -> None:
    """Remove what a build's user left (any modes it chose): root may enter every folder."""
    with contextlib.suppress(FileNotFoundError):
        if path.is_symlink() or not path.is_dir():
            path.unlink()
        else:
            shutil.rmtree(path)
