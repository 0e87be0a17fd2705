"""A sandbox for process instances (bubblewrap): each revision sees only itself.

An instance (or a revision's zygote, and so the instances forked from it) runs inside `bwrap`
with a mount view of its own: the whole system read-only; HOMERUN_HOME, the daemon user's home
folder and /run hidden under empty tmpfs; of them only the revision's folder, its virtualenv,
the interpreter's installation, the service hosts file and homerun's `_site` folder shown
again, read-only, and the revision's inspector folder writable. /tmp and /dev/shm are private
tmpfs (their pages count against the memory of the instance that writes them, as Cloud Run's
in-memory filesystem does), /proc is the sandbox's own PID namespace's, /dev holds the usual
few devices, and System V IPC is its own. The command runs with no_new_privs and no capability.

When homerun runs as root, bwrap runs as root without a user namespace (it can bind folders
only root may traverse) and the command runs as an unprivileged user and group of the revision
(`revision_uid`): revisions cannot signal, trace or read each other's processes, and a file on
the host that only root may read stays unreadable. As a normal user, bwrap makes a user
namespace mapping that user to itself: the mount view and the PID namespace hold, but the app
runs as the user that runs homerun.

Not a VM: the kernel is the host's, the network namespace too, so an instance's port is
reachable from the host (docs/design.md, "Isolation: the sandbox", says what a revision gets
and what it does not).
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import os
import pwd
import re
import shutil
import stat
import struct
import subprocess
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from homerun.errors import HomerunError
from homerun.model.run_as import HostIds, RunAs
from homerun.model.volumes import NO_MOUNTS, Mounts
from homerun.readable import hidden_on_the_way, share_read
from homerun.runtime.base import ImageRoot
from homerun.runtime.names import host_split

AUTO, ON, OFF = "auto", "on", "off"
SETTINGS = (AUTO, ON, OFF)
# Each revision's own user and group: FIRST_UID + a hash of its name. Far above the ids
# distributions give (users, and podman's subordinate ranges from 100000).
FIRST_UID = 1_800_000_000
UID_RANGE = 1_000_000
# The outer bwrap (which waits for the sandbox) ignores these, so that a stop's SIGTERM to
# the instance's process group ends the app, not the process that reports its exit status;
# inside, `env --default-signal` gives the app the default handling back.
IGNORED_OUTSIDE = ("TERM", "INT", "HUP")
_PROBE_SECONDS = 10.0
# Run by an image's Python, as the revision's user, before the command (a sandbox rooted in
# an image).
_ENTER = Path(__file__).with_name("_zygote") / "_homerun_enter.py"
# Where a sandbox rooted in an image sees the host's static busybox (Sandbox.dropper): in the
# sandbox's own /dev, made afresh, so that no path of the image's leads there; a name starting
# with `busybox` runs busybox's applet given as the first word.
_DROPPER = Path("/dev/.homerun/busybox")


class SandboxUnavailable(HomerunError):
    """`sandbox: on` was asked for and this machine cannot give it."""


def revision_uid(revision: str) -> int:
    """The user (and group) id a revision's processes run as when homerun runs as root."""
    return FIRST_UID + zlib.crc32(revision.encode()) % UID_RANGE


def user_and_group(revision: str, user: RunAs | None) -> tuple[int, int]:
    """The ids the app runs as, homerun being root: securityContext's runAsUser and runAsGroup
    where given, else the revision's own (the group of a runAsUser alone: that id)."""
    uid = user.uid if user is not None and user.uid is not None else revision_uid(revision)
    gid = user.gid if user is not None and user.gid is not None else uid
    return uid, gid


@dataclass(frozen=True)
class Sandbox:
    """How to run a command in a revision's sandbox."""

    bwrap: str
    setpriv: str
    env_program: str
    home: Path  # HOMERUN_HOME: hidden
    privileged: bool  # homerun runs as root: the app as the revision's own user
    hidden: tuple[Path, ...] = ()  # more folders hidden (the daemon user's home)
    nsenter: str = "nsenter"
    # A statically linked busybox (Debian's busybox-static), or None: in a sandbox rooted in an
    # image, bwrap runs it as root and its `nsenter -S UID -G GID` makes the revision's user
    # before anything of the image runs (the image's own programs and libraries are the
    # image author's; the host's setpriv would load the image's libc).
    dropper: str | None = None

    def describe(self) -> str:
        if self.privileged:
            who = "as an unprivileged user of its own (uid 1800000000 and up)"
        else:
            who = (
                "as homerun's own user (homerun does not run as root: a user namespace, so "
                "a revision is not a user of its own)"
            )
        return (
            "sandboxed (bubblewrap): its own read-only view of the system, HOMERUN_HOME and "
            "other revisions hidden, private /tmp, its own PID namespace, "
            f"{who}, no_new_privs, no capabilities"
        )

    def inherited_env(self, env: Mapping[str, str]) -> dict[str, str]:
        """The daemon's environment `env` as its instances inherit it here: a HOME in a folder
        the sandbox hides (the daemon user's home, under an empty tmpfs no revision's user may
        write) becomes /tmp, which every instance may write, as a home is writable on Cloud
        Run (libraries keep caches and settings there; gunicorn its control socket)."""
        inherited = dict(env)
        home = inherited.get("HOME")
        if home and any(Path(home).is_relative_to(folder) for folder in self._hidden_always()):
            inherited["HOME"] = "/tmp"
        return inherited

    def _hidden_always(self) -> list[Path]:
        return [self.home, *self.hidden, Path("/run")]

    def prepare(self, revision: str, env: Mapping[str, str], user: RunAs | None = None) -> None:
        """Make what the revision's processes write to theirs (the inspector's folder). As
        root, that folder is a tmpfs of its own, INSPECT_SIZE at most, the revision's user's:
        what an app writes there counts against its memory, not the host's disk."""
        folder = env.get("HOMERUN_INSPECT")
        if not folder:
            return
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        if self.privileged:
            uid, gid = user_and_group(revision, user)
            if not os.path.ismount(path):
                _mount_tmpfs(path, f"size={INSPECT_SIZE},nr_inodes=16384,mode=0755")
            info = path.stat()
            if (info.st_uid, info.st_gid) != (uid, gid):
                os.chown(path, uid, gid)

    def command(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        revision: str,
        mounts: Mounts = NO_MOUNTS,
        secret_fds: Sequence[int] = (),
        user: RunAs | None = None,
        root: ImageRoot | None = None,
    ) -> list[str]:
        """`argv` run in the revision's sandbox, in `cwd` (as `user`, homerun being root); with
        `mounts`, its secret files (their contents read by bwrap from `secret_fds`, one per
        file, in order) and its in-memory volumes. With `root` (a container image's root
        folder, the revision's own copy), that folder is the sandbox's `/` instead of the
        system's, and of the host only homerun's programs (`_zygote/`, `_site/`), the service
        hosts file and name resolution are shown in it."""
        if root is not None:
            return self._rooted(argv, env, cwd, revision, root)
        shown = _shown(env, cwd, revision)
        writable = [Path(env["HOMERUN_INSPECT"])] if env.get("HOMERUN_INSPECT") else []
        hidden = hidden_on_the_way(self._hidden_always(), [*shown, *writable])
        # No --die-with-parent: the outer bwrap exits as soon as the command does, and with it
        # the sandbox's init would SIGKILL all that is left, so a stop's SIGTERM to a Procfile's
        # `/bin/sh -c "python main.py"` would cut the app's own SIGTERM handler short. What is
        # left is in the instance's process group (and control groups), which a stop and the
        # daemon's reaper end, as without a sandbox.
        # The outer bwrap ignores a stop's signals by `env --ignore-signal` rather than only by
        # the spawner's preexec_fn: uvloop's (libuv's) spawn resets every disposition after it.
        args = [self.env_program, f"--ignore-signal={','.join(IGNORED_OUTSIDE)}"]
        args += [self.bwrap, "--unshare-pid", "--unshare-ipc"]
        if not self.privileged:
            args += ["--unshare-user"]
        view = _root_view(mounts)
        args += view or ["--ro-bind", "/", "/"]
        args += ["--proc", "/proc", "--dev", "/dev"]
        args += ["--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/dev/shm"]
        args += _mounts(hidden, shown, writable)
        args += _volumes(mounts, secret_fds)
        if view:
            args += ["--remount-ro", "/"]  # the tmpfs root made for mount points the host lacks
        args += ["--chdir", str(cwd), "--", self.env_program]
        args += [f"--default-signal={','.join(IGNORED_OUTSIDE)}", self.setpriv]
        if self.privileged:
            uid, gid = user_and_group(revision, user)
            args += ["--reuid", str(uid), "--regid", str(gid), "--clear-groups"]
            args += ["--inh-caps=-all", "--bounding-set=-all"]
        args += ["--no-new-privs", "--"]
        # What the host's programs above (run as root) may not be given (names.host_split):
        # set by `env` once setpriv has made the revision's user.
        _, acted_on = host_split(env)
        if acted_on:
            args += [self.env_program, *(f"{name}={value}" for name, value in acted_on.items())]
        return [*args, *argv]

    @staticmethod
    def host_env(env: Mapping[str, str]) -> dict[str, str]:
        """The environment to start the sandbox's first host program with: `env` but what a
        program run as root acts on, which `command` gives the app on its command line."""
        kept, _ = host_split(env)
        return kept

    def enter(
        self,
        pid: int,
        revision: str,
        env: Mapping[str, str],
        cwd: Path,
        user: RunAs | None = None,
        root: ImageRoot | None = None,
    ) -> list[str]:
        """The words that run a command inside the sandbox process `pid` is in, as the app
        runs: its mount view (its /tmp too), PID and IPC namespaces, its root and folder, as
        the revision's user, who has no capability (homerun being root), with no_new_privs.
        An exec probe's command runs so, as Kubernetes runs one in the container: not as
        homerun's user, who may read what the sandbox hides.

        As a normal user, bwrap nests the app's user namespace in the one that owns its
        mount, PID and IPC namespaces, which a process of that user then cannot enter: the
        command gets a sandbox of the revision's own (`env`, `cwd`), which hides what the
        instance's hides, but not the instance's /tmp."""
        if not self.privileged:
            return self.command([], env, cwd, revision)
        # no_new_privs first, on the host (it holds across nsenter's setns and exec), as the
        # app has it: no setuid program or file capability gives the command back what it drops.
        args = [self.setpriv, "--no-new-privs", "--"]
        args += [self.nsenter, f"--target={pid}", "--mount", "--pid", "--ipc", "--root", "--wd"]
        uid, gid = user_and_group(revision, user)
        # From root to the revision's ids, nsenter drops the supplementary groups, and the
        # kernel every capability; the sandbox's mounts are nosuid besides.
        args += [f"--setgid={gid}", f"--setuid={uid}", "--"]
        # What setpriv and nsenter may not be given (names.host_split), set once nsenter has
        # made the revision's user: by the host's `env`, which a sandbox shows at its path, or
        # in one rooted in an image, by the static busybox it shows.
        _, acted_on = host_split(env)
        if acted_on:
            setter = [str(_DROPPER), "env"] if root is not None else [self.env_program]
            args += [*setter, *(f"{name}={value}" for name, value in acted_on.items())]
        return args

    def _rooted(
        self, argv: Sequence[str], env: Mapping[str, str], cwd: Path, revision: str, root: ImageRoot
    ) -> list[str]:
        """`argv` with an image's root folder as `/`. Only as root: the folder (a container's,
        made by the engine) is writable as a container's is, and the app runs as the
        revision's own user. Nothing of the image runs as root: the host's static busybox
        (`dropper`) makes that user, then the image's own Python (_homerun_enter.py) gives the
        stop signals their default handling and runs `argv`. bwrap, as root, makes its mount
        points inside the folder: none of them may be reached through a symbolic link there
        (it would lead bwrap to a folder of the host)."""
        if not self.privileged:
            raise SandboxUnavailable("an image's root folder is a sandbox's `/` only as root")
        if self.dropper is None:
            raise SandboxUnavailable(NO_DROPPER)
        uid, gid = user_and_group(revision, None)
        unsafe = unsafe_mount_point(root.folder, env, uid)
        if unsafe is not None:
            raise SandboxUnavailable(
                f"its image's root folder cannot hold the sandbox's mount points: {unsafe}"
            )
        args = [self.env_program, f"--ignore-signal={','.join(IGNORED_OUTSIDE)}"]
        args += [self.bwrap, "--unshare-pid", "--unshare-ipc", "--bind", str(root.folder), "/"]
        args += ["--proc", "/proc", "--dev", "/dev"]
        args += ["--perms", "0755", "--dir", str(_DROPPER.parent)]
        args += ["--ro-bind", self.dropper, str(_DROPPER)]
        args += ["--perms", "1777", "--tmpfs", "/tmp", "--perms", "1777", "--tmpfs", "/dev/shm"]
        shown, writable = _rooted_binds(env)
        binds = [(path, "--ro-bind") for path in shown]
        binds += [(path, "--bind") for path in writable]
        made: set[Path] = set()
        for path, how in binds:
            # The folders on the way, where the image lacks them, made 0755 (bwrap would make
            # them 0700, which the revision's user could not enter).
            for ancestor in reversed(path.parents):
                if ancestor != Path("/") and ancestor not in made:
                    made.add(ancestor)
                    args += ["--perms", "0755", "--dir", str(ancestor)]
            args += [how, str(path), str(path)]
        args += ["--ro-bind-try", os.path.realpath("/etc/resolv.conf"), "/etc/resolv.conf"]
        # What the host's programs may not be given (names.host_split): bwrap sets it for the
        # static busybox, which reads none of it, and so for the image's Python.
        _, acted_on = host_split(env)
        for name, value in acted_on.items():
            args += ["--setenv", name, value]
        # busybox's nsenter, given no namespace, drops the supplementary groups, sets the group,
        # then the user (the kernel drops every capability as root's user ids go), and runs
        # the image's Python without forking; bwrap has set no_new_privs already.
        args += ["--chdir", str(cwd), "--", str(_DROPPER), "nsenter", "-F"]
        args += ["-S", str(uid), "-G", str(gid), "--", root.python, str(_ENTER)]
        args += [str(uid), str(gid), ",".join(IGNORED_OUTSIDE), "--", *argv]
        return args


# The most a revision's inspector folder holds (its instances' snapshots are a few KiB each).
INSPECT_SIZE = "16m"
_MS_NOSUID, _MS_NODEV, _MS_NOEXEC, _MNT_DETACH = 2, 4, 8, 2


def _mount_tmpfs(path: Path, options: str) -> None:
    """A tmpfs at `path` (nosuid, nodev, noexec), in the daemon's mount namespace."""
    libc = ctypes.CDLL(None, use_errno=True)
    flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
    done = libc.mount(b"homerun-inspect", os.fsencode(path), b"tmpfs", flags, options.encode())
    if done != 0:
        error = ctypes.get_errno()
        raise SandboxUnavailable(f"cannot mount a tmpfs at {path}: {os.strerror(error)}")


def unmount_inspect_folders(folder: Path) -> None:
    """Unmount the revisions' inspector tmpfs under `folder` (HOMERUN_HOME/inspect): at the
    daemon's stop, and at its start for those a killed daemon left."""
    for point in mount_points_under(folder):
        _detach(point)


def unmount_folder(folder: Path) -> None:
    """Unmount `folder` if something is mounted there (a revision's inspector tmpfs, as its
    revision goes)."""
    if os.path.ismount(folder):
        _detach(str(folder))


def _detach(point: str) -> None:
    ctypes.CDLL(None, use_errno=True).umount2(os.fsencode(point), _MNT_DETACH)


def mount_points_under(folder: Path, mountinfo: Path = Path("/proc/self/mountinfo")) -> list[str]:
    """Mount points strictly under `folder`, as /proc/self/mountinfo lists them (its fifth
    field, with spaces and the like escaped as octal), deepest first."""
    points = []
    # As the kernel lists them: with no symbolic link on the way (a HOMERUN_HOME reached
    # through one).
    prefix = str(folder.resolve()).rstrip("/") + "/"
    with contextlib.suppress(OSError):
        for line in mountinfo.read_text().splitlines():
            fields = line.split(" ")
            if len(fields) > 4:
                point = re.sub(r"\\([0-7]{3})", lambda octal: chr(int(octal[1], 8)), fields[4])
                if point.startswith(prefix):
                    points.append(point)
    return sorted(set(points), key=len, reverse=True)


NO_DROPPER = (
    "no statically linked busybox here (apt-get install busybox-static, or scripts/setup as "
    "root): without it, an image's own programs would run as root in its sandbox before "
    "dropping to the revision's user"
)


def _rooted_binds(env: Mapping[str, str]) -> tuple[list[Path], list[Path]]:
    """The host's folders a sandbox rooted in an image shows, read-only and writable: homerun's
    programs (`_zygote/`, `_site/`), the service hosts file's folder, the inspector's folder."""
    shown = [Path(__file__).parent]
    hosts = env.get("HOMERUN_HOSTS")
    if hosts:
        shown.append(Path(hosts).parent)
    inspect = env.get("HOMERUN_INSPECT")
    return shown, [Path(inspect)] if inspect else []


def unsafe_mount_point(folder: Path, env: Mapping[str, str], uid: int) -> str | None:
    """Why a sandbox rooted in `folder` may not be made (None: it may). bwrap, as root, makes
    its mount points inside the folder, following what it finds there: a symbolic link on the
    way would lead it out of the folder, to make folders or files of the host, or bind over
    them. So no link may be on the way to one, nor a file where a folder must be, and every
    folder on the way must be one the app (`uid`, the revision's user) cannot change between
    this check and bwrap's steps: owned by another user, writable by its owner alone. Under
    /proc, /dev and /tmp the tree is bwrap's own (made before the binds beneath them)."""
    shown, writable = _rooted_binds(env)
    points = [Path("/proc"), Path("/dev"), Path("/tmp"), Path("/etc/resolv.conf")]
    fresh = {Path("/proc"), Path("/dev"), Path("/tmp")}
    for point in [*points, *shown, *writable]:
        seen = Path("/")
        for part in point.parts[1:]:
            parent, seen = seen, seen / part
            said = _changeable(folder / parent.relative_to("/"), uid)
            if said is not None:
                return f"{parent} {said}"
            try:
                info = os.lstat(folder / seen.relative_to("/"))
            except FileNotFoundError:
                break  # bwrap makes the rest, in a folder the app cannot change
            except OSError as error:
                return f"{seen} cannot be read ({error.strerror})"
            if stat.S_ISLNK(info.st_mode):
                return f"{seen} is a symbolic link"
            if seen in fresh:
                break
            if seen != point and not stat.S_ISDIR(info.st_mode):
                return f"{seen} is not a folder"
    return None


def _changeable(folder: Path, uid: int) -> str | None:
    """Why the app (`uid`) could change what `folder` holds, or None."""
    try:
        info = os.lstat(folder)
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if info.st_uid == uid:
        return "belongs to the revision's user"
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return "is writable by others than its owner"
    return None


def static_busybox() -> str | None:
    """The busybox on PATH if it is statically linked (Debian's busybox-static), else None:
    one that loads shared libraries would load them from an image's root folder."""
    program = shutil.which("busybox")
    if program is None:
        return None
    try:
        with open(program, "rb") as file:
            return program if _statically_linked(file.read(1 << 16)) else None
    except OSError:
        return None


def _statically_linked(head: bytes) -> bool:
    """Whether an ELF executable's program headers (in its first bytes) name no interpreter
    (PT_INTERP, the dynamic loader)."""
    if head[:4] != b"\x7fELF" or head[4] not in (1, 2) or head[5] not in (1, 2):
        return False
    order = "<" if head[5] == 1 else ">"
    if head[4] == 2:  # 64-bit
        (start,) = struct.unpack_from(order + "Q", head, 32)
        size, count = struct.unpack_from(order + "HH", head, 54)
    else:
        (start,) = struct.unpack_from(order + "I", head, 28)
        size, count = struct.unpack_from(order + "HH", head, 42)
    if start + size * count > len(head):
        return False
    kinds = [struct.unpack_from(order + "I", head, start + size * n)[0] for n in range(count)]
    return kinds != [] and 3 not in kinds  # PT_INTERP


def _mounts(hidden: list[Path], shown: list[Path], writable: list[Path]) -> list[str]:
    """bwrap's arguments for the tmpfs that hide, and the binds that show again, outermost
    first. The folders on the way from a tmpfs to a bind are made 0755 (bwrap would make them
    0700, which the revision's user could not enter)."""
    tmpfs = [Path("/tmp"), *hidden]
    steps: dict[Path, list[str]] = {}
    for folder in hidden:
        steps[folder] = ["--tmpfs", str(folder)]
    for path in shown:
        steps[path] = ["--ro-bind", str(path), str(path)]
    for path in writable:
        steps[path] = ["--bind", str(path), str(path)]
    for path in [*hidden, *shown, *writable]:
        for ancestor in path.parents:
            inside = any(ancestor != root and ancestor.is_relative_to(root) for root in tmpfs)
            if inside and ancestor not in steps:
                steps[ancestor] = ["--perms", "0755", "--dir", str(ancestor)]
    args: list[str] = []
    for path in sorted(steps, key=lambda path: len(path.parts)):
        args += steps[path]
    return args


def open_secret_files(mounts: Mounts) -> list[int]:
    """One memory file per secret file of `mounts`, holding its value, for bwrap's
    --ro-bind-data: the value reaches the sandbox without touching a disk. The caller closes
    them once bwrap has started."""
    fds: list[int] = []
    try:
        for file in mounts.secret_files:
            fd = os.memfd_create("homerun-secret", os.MFD_CLOEXEC)
            fds.append(fd)
            os.write(fd, file.data)
            os.lseek(fd, 0, os.SEEK_SET)
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def _volumes(mounts: Mounts, secret_fds: Sequence[int]) -> list[str]:
    """Each secret folder a read-only tmpfs holding its files (read-only, readable by all: the
    app's user may not be their owner), each in-memory volume a tmpfs of its size limit that
    the app may write (its pages count against the memory of the instance writing them)."""
    args: list[str] = []
    fds = iter(secret_fds)
    for folder, files in mounts.secret_folders().items():
        args += ["--perms", "0555", "--tmpfs", folder]
        for file in files:
            args += ["--perms", "0444", "--ro-bind-data", str(next(fds)), file.path]
        args += ["--remount-ro", folder]
    for volume in mounts.memory:
        args += ["--perms", "0777"]
        if volume.size_bytes is not None:
            args += ["--size", str(volume.size_bytes)]
        args += ["--tmpfs", volume.path]
    return args


def _root_view(mounts: Mounts) -> list[str]:
    """bwrap's arguments for `/` when a mount point of `mounts` is missing on the host (a
    /secrets folder): the read-only system cannot hold a new folder, so each folder on the
    way to the nearest one that exists is a tmpfs holding the host's entries, bound
    read-only, and the new folders. [] when every mount point exists (`/` bound whole)."""
    points = [Path(folder) for folder in mounts.secret_folders()]
    points += [Path(volume.path) for volume in mounts.memory]
    opened: set[Path] = set()
    for point in points:
        existing = next(
            (path for path in [point, *point.parents] if os.path.lexists(path)), Path("/")
        )
        if existing != point:
            opened.update([existing, *existing.parents])
    if not opened:
        return []
    args: list[str] = []

    def open_folder(folder: Path) -> None:
        for entry in sorted(os.scandir(folder), key=lambda entry: entry.name):
            path = Path(entry.path)
            if path in opened and entry.is_dir(follow_symlinks=False):
                args.extend(["--perms", "0755", "--dir", str(path)])
                open_folder(path)
            elif entry.is_symlink():
                args.extend(["--symlink", os.readlink(path), str(path)])
            else:
                args.extend(["--ro-bind-try", str(path), str(path)])

    open_folder(Path("/"))
    return args


def _shown(env: Mapping[str, str], cwd: Path, revision: str) -> list[Path]:
    """What the revision's processes read: its folder (the one named after it, above `cwd`),
    its virtualenv and the interpreter that made it, the hosts file's folder, the folders on
    PYTHONPATH (homerun's `_site`), and this folder (the zygote's program, `_zygote/`: the
    standard library's imports only)."""
    # The revision's whole folder, also when the instance starts in a folder of it
    # (workingDir: /workspace/sub runs `python ../main.py`).
    revision_dir = next((path for path in cwd.parents if path.name == revision), cwd)
    paths = [revision_dir, Path(__file__).parent]
    venv = env.get("VIRTUAL_ENV")
    if venv:
        paths.append(Path(venv))
        paths.extend(_interpreter_home(Path(venv)))
    hosts = env.get("HOMERUN_HOSTS")
    if hosts:
        paths.append(Path(hosts).parent)
    paths.extend(Path(part) for part in env.get("PYTHONPATH", "").split(":") if part)
    # Name resolution, where /etc/resolv.conf links into /run (systemd-resolved).
    resolv = Path(os.path.realpath("/etc/resolv.conf"))
    if resolv != Path("/etc/resolv.conf"):
        paths.append(resolv)
    unique: list[Path] = []
    for path in paths:
        if path.is_absolute() and path.exists() and path not in unique:
            # A path inside another one shown is shown with it.
            if not any(path.is_relative_to(other) for other in unique):
                unique = [other for other in unique if not other.is_relative_to(path)]
                unique.append(path)
    return unique


def _interpreter_home(venv: Path) -> list[Path]:
    """The installation a virtualenv's python comes from (pyvenv.cfg's `home`, its bin)."""
    with contextlib.suppress(OSError):
        for line in (venv / "pyvenv.cfg").read_text().splitlines():
            key, _, value = line.partition("=")
            if key.strip() == "home" and value.strip():
                home = Path(value.strip())
                prefix = home.parent if home.name == "bin" else home
                return [prefix, Path(os.path.realpath(prefix))]
    return []


@dataclass(frozen=True)
class HostIdOwners:
    """Whose a user or group id is on this machine, looked up at each call (a user added
    while homerun runs counts): its passwd and group databases (LDAP's too, through NSS), and
    the subordinate ranges its users hold for their containers."""

    etc: Path = Path("/etc")

    def owner(self, id_: int, *, group: bool) -> str | None:
        try:
            name = grp.getgrgid(id_).gr_name if group else pwd.getpwuid(id_).pw_name
        except (KeyError, OverflowError):
            name = None
        ranges = _subordinate(self.etc / ("subgid" if group else "subuid"))
        return HostIds(
            users={} if group or name is None else {id_: name},
            groups={id_: name} if group and name is not None else {},
            subordinate_users=() if group else ranges,
            subordinate_groups=ranges if group else (),
        ).owner(id_, group=group)


def _subordinate(path: Path) -> tuple[tuple[str, range], ...]:
    """/etc/subuid's `user:first:count` lines (a missing file: none)."""
    ranges = []
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            user, _, rest = line.strip().partition(":")
            first, _, count = rest.partition(":")
            if user and first.isdigit() and count.isdigit():
                ranges.append((user, range(int(first), int(first) + int(count))))
    return tuple(ranges)


def probe(setting: str, home: Path) -> tuple[Sandbox | None, str]:
    """The sandbox this machine gives for `setting` (auto | on | off), and one sentence for
    the daemon's log and status: what instances get, or what is missing and what follows.
    `on` with something missing raises SandboxUnavailable."""
    if setting == OFF:
        return None, (
            "instances are not sandboxed (sandbox: off; auto or on in config.yaml sandboxes "
            "them): they run as homerun's user and see its files, HOMERUN_HOME included"
        )
    sandbox, missing = _find(home)
    if sandbox is None:
        message = (
            f"instances are not sandboxed: {missing}; they run as homerun's user and see its "
            "files, HOMERUN_HOME included"
        )
        if setting == ON:
            raise SandboxUnavailable(f"sandbox: on in config.yaml, but {missing}")
        return None, message
    return sandbox, sandbox.describe()


def _find(home: Path) -> tuple[Sandbox | None, str]:
    programs = {name: shutil.which(name) for name in ("bwrap", "setpriv", "nsenter", "env")}
    absent = [name for name, path in programs.items() if path is None]
    if absent:
        packages = {
            "bwrap": "bubblewrap",
            "setpriv": "util-linux",
            "nsenter": "util-linux",
            "env": "coreutils",
        }
        needed = " ".join(dict.fromkeys(packages[name] for name in absent))
        return None, (
            f"{', '.join(absent)} not found (install {needed}: `apt-get install {needed}`, or "
            "scripts/setup as root)"
        )
    privileged = os.geteuid() == 0
    user_home = Path(os.path.expanduser("~"))
    sandbox = Sandbox(
        bwrap=str(programs["bwrap"]),
        setpriv=str(programs["setpriv"]),
        env_program=str(programs["env"]),
        nsenter=str(programs["nsenter"]),
        home=home,
        privileged=privileged,
        hidden=(user_home,) if user_home != Path("/") else (),
        dropper=static_busybox() if privileged else None,
    )
    probe_argv = sandbox.command(["true"], {}, Path("/"), "probe")
    try:
        done = subprocess.run(
            probe_argv, capture_output=True, timeout=_PROBE_SECONDS, text=True, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return None, f"bwrap could not be run ({error})"
    if done.returncode != 0:
        said = done.stderr.strip().splitlines()[-1:] or [f"exit code {done.returncode}"]
        hint = (
            ""
            if privileged
            else " (unprivileged user namespaces may be off: sysctl "
            "kernel.unprivileged_userns_clone=1, or run homerun as root)"
        )
        return None, f"bwrap cannot make a sandbox here: {said[0]}{hint}"
    if privileged:
        _share_programs()
    return sandbox, ""


def _share_programs() -> None:
    """Let revisions' own users read homerun's programs they run (`_site/`, `_zygote/`), also
    when homerun was installed or checked out under a umask of 077."""
    here = Path(__file__).parent
    with contextlib.suppress(OSError):  # a read-only installation is readable as it is
        share_read(here, recursive=False)
        for folder in ("_site", "_zygote"):
            share_read(here / folder)
