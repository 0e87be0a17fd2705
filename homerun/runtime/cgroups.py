"""Control groups (cgroup v1) that hold an instance's processes and enforce its limits.

homerun makes one folder per home in each hierarchy it may write to, under the daemon's own
group (`/sys/fs/cgroup/memory/<own>/homerun-KEY/`), and one folder per instance below it (and
one per zygote, which imports a revision's app: runtime/zygote.py). An instance's first
process joins its groups before it runs anything, so every process it starts, a `setsid` one
included, is there too: a stop reaches them all, and `--memory`, `--cpu` and a process count
bound all of them together.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from homerun.errors import HomerunError
from homerun.model.limits import Limits

# The controllers used, by what for: memory (--memory), cpu (--cpu as a CFS quota and a
# share), pids (a fork bomb stays bounded), freezer (a stop kills a group that forks faster
# than it can be listed: frozen, it cannot fork).
CONTROLLERS = ("memory", "cpu", "pids", "freezer")
# The one that lists an instance's processes: every process is in every hierarchy, so any
# would do; memory is the one nearly every kernel has.
_MEMBERSHIP_ORDER = ("memory", "pids", "freezer", "cpu")
CFS_PERIOD_US = 100_000  # 100 ms, the kernel's default and Kubernetes'
# Tasks (threads count) per instance: far above what a server with 1000 threads needs, and a
# fork bomb stops there.
DEFAULT_PIDS_MAX = 4096
_PREFIX = "homerun-"
_MAX_SHARES = 262_144  # the kernel's


class CgroupError(HomerunError):
    """An instance's control group could not be made or limited."""


@dataclass(frozen=True)
class Placement:
    """Where homerun's folders go: a controller's hierarchy mounted at `mount`, whose root is
    `mount_root` in the hierarchy, and the daemon's own group in it (/proc/self/cgroup)."""

    controller: str
    mount: Path
    mount_root: str
    own: str

    def folder(self, key: str) -> Path | None:
        """This home's folder, or None when the daemon's group is outside the mount."""
        own = self.own
        if self.mount_root != "/":
            if own != self.mount_root and not own.startswith(self.mount_root + "/"):
                return None
            own = own[len(self.mount_root) :]
        return self.mount / own.lstrip("/") / f"{_PREFIX}{key}"


def placements(mountinfo: str, self_cgroup: str) -> dict[str, Placement]:
    """The v1 hierarchies of CONTROLLERS that are mounted, from the texts of
    /proc/self/mountinfo and /proc/self/cgroup (pure)."""
    own: dict[str, str] = {}
    for line in self_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3 and parts[1]:
            for controller in parts[1].split(","):
                own[controller] = parts[2]
    found: dict[str, Placement] = {}
    for line in mountinfo.splitlines():
        before, _, after = line.partition(" - ")
        fields, tail = before.split(), after.split()
        if len(fields) < 5 or len(tail) < 3 or tail[0] != "cgroup":
            continue
        options = tail[2].split(",")
        for controller in CONTROLLERS:
            if controller in options and controller in own and controller not in found:
                found[controller] = Placement(
                    controller, Path(_unescape(fields[4])), _unescape(fields[3]), own[controller]
                )
    return found


def _unescape(text: str) -> str:
    # mountinfo writes a space as \040 (and a tab, newline, backslash the same way).
    return text.encode().decode("unicode_escape") if "\\" in text else text


@dataclass(frozen=True)
class Availability:
    """What could be set up: the folder of each usable controller, and why others are not."""

    folders: Mapping[str, Path]
    missing: Mapping[str, str] = field(default_factory=dict)

    def warning(self) -> str | None:
        """One sentence for the daemon's log, or None when every controller is there."""
        if not self.missing:
            return None
        reasons = "; ".join(f"{name}: {why}" for name, why in self.missing.items())
        consequences = []
        if "memory" in self.missing:
            consequences.append("--memory is not enforced")
        if "cpu" in self.missing:
            consequences.append("--cpu is not enforced")
        if not self.folders:
            consequences.append(
                "a process an instance detaches (setsid) may outlive it when the instance "
                "crashes, is forked by a zygote, or the daemon is SIGKILLed"
            )
        if "pids" in self.missing and self.folders:
            consequences.append("an instance's process count is not bounded")
        return (
            f"instances run without some control groups ({reasons}): "
            + ", ".join(consequences or ["stops are slower against fork bombs"])
            + " (run homerun as root on a machine with cgroup v1 memory and cpu hierarchies)"
        )


def available(key: str) -> Availability:
    """Make this home's folder in each hierarchy homerun can write to."""
    try:
        mountinfo = Path("/proc/self/mountinfo").read_text()
        self_cgroup = Path("/proc/self/cgroup").read_text()
    except OSError as error:
        return Availability({}, {name: str(error) for name in CONTROLLERS})
    found = placements(mountinfo, self_cgroup)
    folders: dict[str, Path] = {}
    missing: dict[str, str] = {}
    for controller in CONTROLLERS:
        placement = found.get(controller)
        if placement is None:
            missing[controller] = "no cgroup v1 hierarchy mounted"
            continue
        folder = placement.folder(key)
        if folder is None:
            missing[controller] = "the daemon's group is outside the mounted hierarchy"
            continue
        try:
            folder.mkdir(exist_ok=True)
        except OSError as error:
            missing[controller] = f"cannot create {folder}: {error.strerror}"
            continue
        folders[controller] = folder
    return Availability(folders, missing)


class InstanceCgroup:
    """One instance's folder in each hierarchy."""

    def __init__(self, name: str, folders: Mapping[str, Path]) -> None:
        self.name = name
        self.folders = dict(folders)
        self._membership = next((folders[c] for c in _MEMBERSHIP_ORDER if c in folders), None)

    @property
    def procs_files(self) -> tuple[str, ...]:
        return tuple(str(folder / "cgroup.procs") for folder in self.folders.values())

    def members(self) -> set[int]:
        """The processes in the group now (an exited one leaves it before it is a zombie)."""
        return _members(self._membership) if self._membership is not None else set()

    def signal(self, signum: int) -> None:
        """Send `signum` to every process in the group. A SIGKILL freezes the group first,
        so that nothing forks between the listing and the kill (a fork bomb)."""
        frozen = signum == signal.SIGKILL and self._freeze(True)
        try:
            _signal_all(self.members(), signum)
        finally:
            if frozen:
                self._freeze(False)  # a frozen process dies of its SIGKILL once thawed

    def memory_peak(self) -> int | None:
        return _read_int(self.folders.get("memory"), "memory.max_usage_in_bytes")

    def oom_kills(self) -> int:
        """How many processes the kernel's OOM killer ended in the group."""
        memory = self.folders.get("memory")
        if memory is None:
            return 0
        with contextlib.suppress(OSError):
            for line in (memory / "memory.oom_control").read_text().splitlines():
                name, _, value = line.partition(" ")
                if name == "oom_kill":
                    return int(value)
        return 0

    def oom_eventfd(self) -> tuple[int, int] | None:
        """An eventfd the kernel signals when the group hits its memory limit (and when the
        group is removed), and the memory.oom_control descriptor it watches; None without a
        memory group."""
        memory = self.folders.get("memory")
        if memory is None:
            return None
        event = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            control = os.open(memory / "memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            os.close(event)
            return None
        try:
            (memory / "cgroup.event_control").write_text(f"{event} {control}")
        except OSError:
            os.close(event)
            os.close(control)
            return None
        return event, control

    def remove(self) -> bool:
        """Remove the folders; False while a process is left in one (it is kept)."""
        removed = True
        for folder in self.folders.values():
            try:
                folder.rmdir()
            except FileNotFoundError:
                pass
            except OSError as error:
                if error.errno != errno.EBUSY:
                    raise
                removed = False
        cpu = self.folders.get("cpu")
        if removed and cpu is not None and not cpu.parent.name.startswith(_PREFIX):
            with contextlib.suppress(OSError):
                cpu.parent.rmdir()  # the revision's group, once its last instance is gone
        return removed

    def _freeze(self, frozen: bool) -> bool:
        freezer = self.folders.get("freezer")
        return freezer is not None and _freeze(freezer, frozen)


class Cgroups:
    """This home's control groups: one per instance, made with its limits."""

    def __init__(self, folders: Mapping[str, Path], *, pids_max: int = DEFAULT_PIDS_MAX) -> None:
        self.folders = dict(folders)
        self._pids_max = pids_max

    @property
    def controllers(self) -> tuple[str, ...]:
        return tuple(self.folders)

    def create(
        self, name: str, limits: Limits, group: str = "", *, holder: str = "instance"
    ) -> InstanceCgroup:
        """The groups of an instance (or of the `holder` named), limits written. In the cpu
        hierarchy they go under `group` (the revision's): under contention a revision's
        instances and zygote share one weight, so one that scales out on a CPU-bound load does
        not take its neighbours' time."""
        folders: dict[str, Path] = {}
        where = self.folders.get("memory") or next(iter(self.folders.values()), Path("/"))
        try:
            for controller, root in self.folders.items():
                where = root / group / name if group and controller == "cpu" else root / name
                where.mkdir(parents=True, exist_ok=True)
                folders[controller] = where
            cgroup = InstanceCgroup(name, folders)
            self.reweigh()
            for controller, values in limit_values(limits, self._pids_max).items():
                if controller in folders:
                    for file_name, value in values:
                        where = folders[controller] / file_name
                        _write(where, value)
        except BaseException as error:
            for folder in folders.values():
                with contextlib.suppress(OSError):
                    folder.rmdir()
            if isinstance(error, OSError):
                raise CgroupError(
                    f"cannot set up the control group of {holder} {name} ({where}: "
                    f"{error.strerror or error}); the daemon must be able to write under "
                    f"{where.parent}: check that it still runs as root and the folder exists"
                ) from error
            raise
        return cgroup

    def reweigh(self) -> None:
        """Give this home's cpu group the weight of what is in it: 1024 (a process's) for each
        revision group or task in it. Outside it each process weighs 1024, and so did each
        instance before it was grouped: a daemon's instances together must not weigh as one
        process against the rest of the machine."""
        root = self.folders.get("cpu")
        if root is None:
            return
        with contextlib.suppress(OSError):
            groups = sum(1 for entry in root.iterdir() if entry.is_dir())
            (root / "cpu.shares").write_text(str(min(_MAX_SHARES, 1024 * max(1, groups))))

    def clean(self, attempts: int = 50) -> int:
        """Kill every process left in this home's groups (left by a daemon that was killed,
        or not yet removed) and remove the groups; how many instance (and zygote) groups
        there were."""
        trees = {controller: _below(root) for controller, root in self.folders.items()}
        folders = [folder for tree in trees.values() for folder in tree]
        instances = {folder.name for folder in folders if not _has_subfolder(folder)}
        for attempt in range(attempts):
            frozen = [folder for folder in trees.get("freezer", []) if _freeze(folder, True)]
            left: set[int] = set()
            for folder in folders:
                left |= _members(folder)
            _signal_all(left, signal.SIGKILL)
            for folder in frozen:
                _freeze(folder, False)
            if not left:
                break
            time.sleep(0 if attempt < 5 else 0.01)
        for folder in folders:  # the deepest first
            with contextlib.suppress(OSError):
                folder.rmdir()
        return len(instances)

    def remove(self) -> None:
        """Remove this home's own folders (once clean: the daemon stops)."""
        for folder in self.folders.values():
            with contextlib.suppress(OSError):
                folder.rmdir()


def _below(root: Path) -> list[Path]:
    """The folders under root, each after those under it."""
    found: list[Path] = []
    with contextlib.suppress(OSError):
        for entry in root.iterdir():
            if entry.is_dir():
                found.extend(_below(entry))
                found.append(entry)
    return found


def _has_subfolder(folder: Path) -> bool:
    with contextlib.suppress(OSError):
        return any(entry.is_dir() for entry in folder.iterdir())
    return False


def _members(folder: Path) -> set[int]:
    try:
        return {int(pid) for pid in (folder / "cgroup.procs").read_text().split()}
    except OSError:
        return set()


def _freeze(folder: Path, frozen: bool) -> bool:
    try:
        (folder / "freezer.state").write_text("FROZEN" if frozen else "THAWED")
    except OSError:
        return False
    return True


def kill_and_remove(cgroup: InstanceCgroup, attempts: int = 50) -> None:
    """SIGKILL whatever is in the group until it is empty (bounded), then remove it."""
    for attempt in range(attempts):
        cgroup.signal(signal.SIGKILL)
        if not cgroup.members() and cgroup.remove():
            return
        # A killed process leaves the group once the kernel has torn it down: a moment.
        time.sleep(0 if attempt < 5 else 0.01)


def limit_values(limits: Limits, pids_max: int) -> dict[str, list[tuple[str, str]]]:
    """The files to write, per controller, for `limits` (pure). The memory limit holds swap
    too (memsw), else an instance past its limit would swap rather than end."""
    quota = max(1000, limits.cpu_millis * CFS_PERIOD_US // 1000)  # the kernel's minimum: 1 ms
    return {
        "memory": [
            ("memory.limit_in_bytes", str(limits.memory_bytes)),
            ("memory.memsw.limit_in_bytes", str(limits.memory_bytes)),
        ],
        "cpu": [
            ("cpu.cfs_period_us", str(CFS_PERIOD_US)),
            ("cpu.cfs_quota_us", str(quota)),
            # Under contention, CPU time is shared in proportion (1024 per core asked for).
            ("cpu.shares", str(max(2, limits.cpu_millis * 1024 // 1000))),
        ],
        "pids": [("pids.max", str(pids_max))],
    }


def _write(path: Path, value: str) -> None:
    try:
        path.write_text(value)
    except FileNotFoundError:
        if path.name != "memory.memsw.limit_in_bytes":  # swap accounting may be off
            raise


def _read_int(folder: Path | None, name: str) -> int | None:
    if folder is None:
        return None
    try:
        return int((folder / name).read_text())
    except (OSError, ValueError):
        return None


def _signal_all(pids: Iterable[int], signum: int) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)
