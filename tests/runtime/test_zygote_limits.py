"""A revision's zygote (and the base it is forked from) in control groups of its own, against
real gunicorn, real control groups and, where it works, the real sandbox: what an app does at
import is bounded by the revision's --memory, --cpu and process count, and what it starts then
(a `setsid` double fork) ends with the zygote, whether it stops by forget, by close, or with a
SIGKILLed daemon. Runs as root on cgroup v1."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Coroutine, Iterator
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import pytest

from homerun.model.limits import Limits, MiB
from homerun.runtime.base import InstanceSpec
from homerun.runtime.cgroups import Cgroups, available, placements
from homerun.runtime.limited import LimitedInstance, LimitedRuntime
from homerun.runtime.sandbox import Sandbox, probe
from homerun.runtime.zygote import ZygoteRuntime

from .helpers import Leftovers, Output, Seeds, alive, first_response, spec

pytestmark = pytest.mark.timeout(300)

COMMAND = "exec gunicorn --bind :$PORT --workers 1 main:app"
WSGI_APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
"""
# As the security test's main.py did: at import, a child in a session of its own, forked twice
# (no instance's, and not the zygote's child), burning CPU. Its argv holds a marker, by which
# the test finds it (in a sandbox its pid is another number).
DETACHING_APP = (
    WSGI_APP
    + """
import os, subprocess, sys

_first = os.fork()
if _first == 0:
    subprocess.Popen(
        [sys.executable, "-c", "while True: pass", os.environ["TEST_MARKER"]],
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os._exit(0)
os.waitpid(_first, 0)
"""
)
# 300 MiB at import, every page written.
HOARDING_APP = WSGI_APP + "\nhoard = b'x' * (300 << 20)\n"

MEMORY = 256 * MiB
CPU_MILLIS = 200  # a fifth of a core: 20 ms in every 100 ms


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """This test's own control groups (a key of its own); emptied and removed at the end,
    pass or fail, which kills whatever a test left in them."""
    key = "test-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:10]
    found = available(key)
    if os.geteuid() != 0 or not {"memory", "cpu"} <= set(found.folders):
        pytest.skip(f"needs root and cgroup v1 memory and cpu hierarchies: {found.warning()}")
    yield dict(found.folders)
    cgroups = Cgroups(found.folders)
    cgroups.clean()
    cgroups.remove()


@pytest.fixture(params=["plain", "sandboxed"])
def sandbox(request: pytest.FixtureRequest, tmp_path: Path) -> Sandbox | None:
    if request.param == "plain":
        return None
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    found, said = probe("auto", home)
    if found is None or os.geteuid() != 0:
        pytest.skip(f"needs root and bubblewrap: {said}")
    return found


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, 120))


def app_folder(tmp_path: Path, source: str) -> Path:
    """An app's folder that the revision's user may read (in a sandbox it is not root)."""
    folder = tmp_path / "app"
    folder.mkdir(mode=0o755)
    (folder / "main.py").write_text(source)
    (folder / "main.py").chmod(0o644)
    return folder


def app_spec(seeds: Seeds, revision: str, folder: Path, marker: str = "") -> InstanceSpec:
    return replace(
        spec(seeds.flask, revision=revision, command=COMMAND, env={"TEST_MARKER": marker}),
        cwd=folder,
        limits=Limits(memory_bytes=MEMORY, cpu_millis=CPU_MILLIS),
    )


def pids_in_mode(reason: str) -> tuple[int, int | None]:
    """(the revision's zygote, its base or None), as describe says them."""
    zygote = re.search(r"zygote pid (\d+)", reason)
    assert zygote, reason
    base = re.search(r"base pid (\d+)", reason)
    return int(zygote[1]), int(base[1]) if base else None


def cgroup_folders(pid: int) -> dict[str, Path]:
    """The folder of each of homerun's controllers that `pid` is in, read in /proc/PID/cgroup."""
    mounts = placements(
        Path("/proc/self/mountinfo").read_text(), Path("/proc/self/cgroup").read_text()
    )
    found: dict[str, Path] = {}
    for line in Path(f"/proc/{pid}/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        for controller in controllers.split(","):
            placement = mounts.get(controller)
            if placement is not None and placement.mount_root == "/":
                found[controller] = placement.mount / path.lstrip("/")
    return found


def _below(root: Path) -> list[Path]:
    try:
        return list(root.rglob("*"))
    except FileNotFoundError:
        return []


def zygote_groups(folders: dict[str, Path], bases: bool = True) -> list[Path]:
    """Revisions' zygotes' groups (and bases') under this test's folders (none once a folder
    is gone: a reaper removes the home's own group too when it empties it)."""
    return [
        group
        for root in folders.values()
        for group in _below(root)
        if group.is_dir()
        and (".zygote." in group.name or (bases and group.name.startswith("base.")))
    ]


def find_marked(marker: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            if marker.encode() in cmdline.split(b"\0") and alive(int(entry.name)):
                found.append(int(entry.name))
    return found


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def until(condition: Any, within: float = 10) -> bool:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def assert_in_own_groups(
    pid: int, name: str, cpu_parent: Path, folders: dict[str, Path]
) -> dict[str, Path]:
    """`pid` is in groups homerun made (named `name`, a pattern) with the revision's limits."""
    groups = cgroup_folders(pid)
    assert set(folders) <= set(groups), groups
    for controller, root in folders.items():
        group = groups[controller]
        assert group.parent == (cpu_parent if controller == "cpu" else root), (controller, group)
        assert re.fullmatch(name, group.name), (controller, group)
    assert int((groups["memory"] / "memory.limit_in_bytes").read_text()) == MEMORY
    assert int((groups["cpu"] / "cpu.cfs_quota_us").read_text()) == CPU_MILLIS * 100
    if "pids" in groups:
        assert (groups["pids"] / "pids.max").read_text().strip() == "4096"
    return groups


@pytest.mark.parametrize("stop", ["forget", "close"])
def test_what_an_app_starts_at_import_is_in_the_zygotes_groups_and_ends_with_it(
    stop: str,
    sandbox: Sandbox | None,
    seeds: Seeds,
    folders: dict[str, Path],
    tmp_path: Path,
    leftovers: Leftovers,
) -> None:
    revision = f"detach-{stop}-00001-abc"
    marker = f"detached-{uuid.uuid4().hex}"
    instance_spec = app_spec(seeds, revision, app_folder(tmp_path, DETACHING_APP), marker)

    async def scenario() -> None:
        runtime = LimitedRuntime(ZygoteRuntime(sandbox=sandbox), Cgroups(folders))
        runtime.open()
        try:
            instance = await runtime.start(instance_spec, Output())
            leftovers.add(instance)
            assert isinstance(instance, LimitedInstance)
            status, _ = await first_response(instance_spec.port, "/", within=30)
            assert status == 200
            mode, reason = runtime.mode(revision)
            assert mode == "zygote", reason
            assert "each instance and each zygote in control groups of its own" in reason
            zygote, base = pids_in_mode(reason)
            groups = assert_in_own_groups(
                zygote, re.escape(revision) + r"\.zygote\.\d+", folders["cpu"] / revision, folders
            )
            if sandbox is None:
                assert base is not None, reason  # forked from a base, itself in its own groups
                assert_in_own_groups(base, r"base\.\d+", folders["cpu"], folders)
            # The app's child: in the zygote's groups, out of the instance's, held to the
            # revision's --cpu (a fifth of a core) though it loops without end.
            assert await until(lambda: len(find_marked(marker)) == 1)
            [detached] = find_marked(marker)
            assert cgroup_folders(detached) == groups
            assert detached not in instance.cgroup.members()
            before, started = cpu_seconds(detached), time.monotonic()
            await asyncio.sleep(1.0)
            share = (cpu_seconds(detached) - before) / (time.monotonic() - started)
            assert share < 0.35, share  # a whole core (1.0) without the quota

            instance.signal(signal.SIGTERM)
            await asyncio.wait_for(instance.wait(), 15)
            assert alive(detached)  # the zygote outlives its instances, and so does the child
            if stop == "forget":
                runtime.forget(revision)
            else:
                await leftovers.reap()
                runtime.close()
            assert await until(lambda: not alive(detached)), "the app's child outlived its zygote"
            assert await until(lambda: not alive(zygote))
            assert await until(lambda: not zygote_groups(folders)), zygote_groups(folders)
        finally:
            await leftovers.reap()
            runtime.close()

    run(scenario())


def test_an_app_past_its_memory_limit_at_import_ends_its_zygote_and_the_start_says_so(
    sandbox: Sandbox | None,
    seeds: Seeds,
    folders: dict[str, Path],
    tmp_path: Path,
    leftovers: Leftovers,
) -> None:
    """300 MiB at import under --memory 256Mi: the zygote's group stops it (it held all of it,
    in the daemon's group, before), the revision's log says so in Cloud Run's words, and the
    instance, spawned since, ends past its own limit: the start fails, and does not hang."""
    revision = "hoard-00001-abc"
    instance_spec = app_spec(seeds, revision, app_folder(tmp_path, HOARDING_APP))

    async def scenario() -> None:
        runtime = LimitedRuntime(ZygoteRuntime(sandbox=sandbox), Cgroups(folders))
        runtime.open()
        try:
            output = Output()
            instance = await asyncio.wait_for(runtime.start(instance_spec, output), 60)
            leftovers.add(instance)
            assert isinstance(instance, LimitedInstance)
            mode, reason = runtime.mode(revision)
            assert mode == "spawn", reason
            assert (
                "the app used more than its memory limit of 256 MiB while the zygote imported it"
                in reason
            ), reason
            assert output.has("stderr", "by the revision's zygote, importing the app"), output
            assert output.has("stderr", "Memory limit of 256 MiB exceeded with "), output
            assert not zygote_groups(folders, bases=False)  # removed, with all in them
            # The spawned instance imports the same app, in its own groups: ended the same way.
            await asyncio.wait_for(instance.wait(), 30)
            assert instance.memory_exceeded
            lines = [line for _, line in output.lines if "Memory limit of 256 MiB" in line]
            assert len(lines) == 2, output.lines
            assert json.loads(lines[0])["severity"] == "ERROR"
        finally:
            await leftovers.reap()
            runtime.close()

    run(scenario())


# A daemon standing in: the limited zygote runtime starts the instance, prints the pids, waits to
# be killed.
HARNESS = """
import asyncio, json, re, sys
from pathlib import Path
from homerun.runtime import InstanceSpec
from homerun.runtime.cgroups import Cgroups
from homerun.runtime.limited import LimitedRuntime
from homerun.runtime.zygote import ZygoteRuntime

async def main(fields, folders):
    runtime = LimitedRuntime(ZygoteRuntime(), Cgroups({k: Path(v) for k, v in folders.items()}))
    runtime.open()
    spec = InstanceSpec(**dict(fields, cwd=Path(fields["cwd"])))
    instance = await runtime.start(spec, lambda stream, line: None)
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", spec.port)
            writer.close()
            break
        except OSError:
            await asyncio.sleep(0.01)
    zygote = re.search(r"zygote pid (\\d+)", runtime.mode(spec.revision)[1])
    print(json.dumps({"instance": instance.pid, "zygote": int(zygote[1])}), flush=True)
    await asyncio.Event().wait()

asyncio.run(main(json.loads(sys.argv[1]), json.loads(sys.argv[2])))
"""


def reapers_of(daemon: int) -> list[int]:
    """The reapers a (stand-in) daemon started, its children in sessions of their own: the
    process runtime's (of process groups) and the limited runtime's (of control groups)."""
    children = Path(f"/proc/{daemon}/task/{daemon}/children").read_text().split()
    return [
        int(pid)
        for pid in children
        if b"homerun.runtime._reaper" in Path(f"/proc/{pid}/cmdline").read_bytes()
    ]


@pytest.mark.parametrize("cleaner", ["reaper", "next start"])
def test_what_a_zygote_started_outlives_no_killed_daemon(
    cleaner: str, seeds: Seeds, folders: dict[str, Path], tmp_path: Path
) -> None:
    """The daemon SIGKILLed: its reaper empties and removes this home's groups, the zygote's
    too; with the reaper gone as well, the next start of a runtime on the same home does."""
    marker = f"detached-{uuid.uuid4().hex}"
    instance_spec = app_spec(seeds, "orphan-00001-abc", app_folder(tmp_path, DETACHING_APP), marker)
    fields = {key: value for key, value in asdict(instance_spec).items() if key != "mounts"}
    fields |= {"cwd": str(instance_spec.cwd), "limits": None}
    harness = subprocess.Popen(
        [
            sys.executable,
            "-c",
            HARNESS,
            json.dumps(fields),
            json.dumps({name: str(folder) for name, folder in folders.items()}),
        ],
        stdout=subprocess.PIPE,
        start_new_session=True,
    )

    async def scenario() -> None:
        assert harness.stdout is not None
        line = await asyncio.wait_for(asyncio.to_thread(harness.stdout.readline), 60)
        started = json.loads(line)
        assert await until(lambda: len(find_marked(marker)) == 1)
        [detached] = find_marked(marker)
        assert cgroup_folders(detached)["memory"].parent == folders["memory"]
        if cleaner == "next start":
            # Its reapers killed too: what the next start cleans up is left.
            reapers = reapers_of(harness.pid)
            assert len(reapers) == 2, reapers
            for reaper in reapers:
                os.kill(reaper, signal.SIGKILL)
        harness.kill()  # as the kernel kills a daemon: no cleanup of its own
        harness.wait()
        if cleaner == "next start":
            assert not await until(lambda: not alive(detached), within=1)  # nothing ended it
            runtime = LimitedRuntime(ZygoteRuntime(), Cgroups(folders))
            runtime.open()
            runtime.close()
        assert await until(lambda: not alive(detached), within=15)
        assert await until(lambda: not alive(started["zygote"]))
        assert await until(lambda: not zygote_groups(folders)), zygote_groups(folders)

    try:
        run(scenario())
    finally:
        harness.kill()
        harness.wait()
        if harness.stdout is not None:
            harness.stdout.close()
