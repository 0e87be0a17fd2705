"""LimitedRuntime against real control groups: every process an instance starts is in its
groups, so a stop ends them all; --memory ends an instance that passes it, with Cloud Run's
line; --cpu caps its CPU time; a fork bomb stays bounded. Runs as root on cgroup v1."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Coroutine, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from homerun.model.limits import Limits, MiB
from homerun.runtime.base import InstanceSpec, join_cgroups
from homerun.runtime.cgroups import Cgroups, available
from homerun.runtime.limited import LimitedInstance, LimitedRuntime
from homerun.runtime.process import ProcessRuntime
from homerun.runtime.zygote import ZygoteRuntime

from .helpers import GUNICORN_SEED, REPO_ROOT, Leftovers, Output, Seeds, alive, first_response, spec

pytestmark = pytest.mark.timeout(300)

HOSTILE = REPO_ROOT / "tests" / "apps" / "hostile"
RUNTIMES = ("zygote", "spawn")


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[dict[str, Path]]:
    """This test's own control groups (a key of its own); removed at the end, pass or fail."""
    key = "test-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:10]
    found = available(key)
    if os.geteuid() != 0 or not {"memory", "cpu"} <= set(found.folders):
        pytest.skip(f"needs root and cgroup v1 memory and cpu hierarchies: {found.warning()}")
    yield dict(found.folders)
    cgroups = Cgroups(found.folders)
    cgroups.clean()
    cgroups.remove()
    assert not any(folder.exists() for folder in found.folders.values())


def run(scenario: Coroutine[Any, Any, None]) -> None:
    asyncio.run(asyncio.wait_for(scenario, 120))


@asynccontextmanager
async def opened(runtime: LimitedRuntime, leftovers: Leftovers) -> AsyncIterator[LimitedRuntime]:
    runtime.open()
    try:
        yield runtime
    finally:
        await leftovers.reap()
        runtime.close()


def limited(kind: str, folders: dict[str, Path], pids_max: int = 4096) -> LimitedRuntime:
    inner = ZygoteRuntime() if kind == "zygote" else ProcessRuntime()
    return LimitedRuntime(inner, Cgroups(folders, pids_max=pids_max))


async def until(condition: Any, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return True
        await asyncio.sleep(0.02)
    return bool(condition())


async def get_json(port: int, path: str) -> dict[str, Any]:
    import json

    status, body = await first_response(port, path, within=30)
    assert status == 200, body
    return dict(json.loads(body))


@pytest.mark.parametrize("kind", RUNTIMES)
def test_a_detached_child_ends_with_its_instance(
    kind: str, seeds: Seeds, folders: dict[str, Path], leftovers: Leftovers
) -> None:
    async def scenario() -> None:
        async with opened(limited(kind, folders), leftovers) as runtime:
            instance_spec = spec(
                seeds.flask, revision=f"hostile-{kind}-00001-abc", command=GUNICORN_SEED
            )
            instance_spec = replace(instance_spec, cwd=HOSTILE)
            instance = await runtime.start(instance_spec, Output())
            leftovers.add(instance)
            assert isinstance(instance, LimitedInstance)
            detached = (await get_json(instance_spec.port, "/detach"))["pid"]
            if kind == "zygote":
                assert runtime.mode(instance_spec.revision)[0] == "zygote"
            assert alive(detached)
            assert detached in instance.cgroup.members()
            assert os.getsid(detached) != os.getsid(instance.pid)  # out of the group's reach
            instance.signal(signal.SIGTERM)
            await asyncio.wait_for(instance.wait(), 15)
            assert not alive(detached)
            assert not any(folder.exists() for folder in instance.cgroup.folders.values())

    run(scenario())


def test_what_an_instance_left_when_it_exited_on_its_own_ends_with_it(
    tmp_path: Path, folders: dict[str, Path], leftovers: Leftovers
) -> None:
    """A job's task that exits leaving a detached process: the process goes with it."""
    pid_file = tmp_path / "pid"
    script = (
        "import subprocess, sys; "
        "child = subprocess.Popen(['sleep', '600'], start_new_session=True); "
        f"open({str(pid_file)!r}, 'w').write(str(child.pid))"
    )

    async def scenario() -> None:
        async with opened(limited("spawn", folders), leftovers) as runtime:
            instance = await runtime.start(
                bare("leaves-a-child", [sys.executable, "-c", script], tmp_path), Output()
            )
            leftovers.add(instance)
            assert await asyncio.wait_for(instance.wait(), 15) == 0
            detached = int(pid_file.read_text())
            assert not alive(detached)

    run(scenario())


@pytest.mark.parametrize("kind", RUNTIMES)
def test_an_instance_past_its_memory_limit_is_ended_with_cloud_runs_line(
    kind: str, seeds: Seeds, folders: dict[str, Path], leftovers: Leftovers
) -> None:
    async def scenario() -> None:
        async with opened(limited(kind, folders), leftovers) as runtime:
            output = Output()
            instance_spec = replace(
                spec(seeds.flask, revision=f"hog-{kind}-00001-abc", command=GUNICORN_SEED),
                cwd=HOSTILE,
                limits=Limits(memory_bytes=128 * MiB, cpu_millis=1000),
            )
            instance = await runtime.start(instance_spec, output)
            leftovers.add(instance)
            assert isinstance(instance, LimitedInstance)
            status, _ = await first_response(instance_spec.port, "/", within=30)
            assert status == 200
            with pytest.raises((OSError, IndexError, ValueError, TimeoutError)):
                await first_response(instance_spec.port, "/hog?mib=400", within=0.1)
            status = await asyncio.wait_for(instance.wait(), 15)
            assert status == -signal.SIGKILL or instance.memory_exceeded, status
            assert instance.memory_exceeded
            assert output.has("stderr", "Memory limit of 128 MiB exceeded with "), output.lines
            assert output.has("stderr", '"severity": "ERROR"')

    run(scenario())


def test_a_cpu_limit_of_half_a_core_holds_a_busy_loop_to_half(
    seeds: Seeds, folders: dict[str, Path], leftovers: Leftovers
) -> None:
    async def scenario() -> None:
        async with opened(limited("spawn", folders), leftovers) as runtime:
            instance_spec = replace(
                spec(seeds.flask, revision="burn-00001-abc", command=GUNICORN_SEED),
                cwd=HOSTILE,
                limits=Limits(memory_bytes=512 * MiB, cpu_millis=500),
            )
            instance = await runtime.start(instance_spec, Output())
            leftovers.add(instance)
            used = await get_json(instance_spec.port, "/burn?seconds=2")
            share = used["cpu"] / used["wall"]
            # The quota is 50 ms in every 100 ms; the kernel may lend a period's slack.
            assert 0.05 < share <= 0.56, used

    run(scenario())


def test_a_fork_bomb_stays_bounded_and_its_stop_ends_it(
    tmp_path: Path, folders: dict[str, Path], leftovers: Leftovers
) -> None:
    bomb = (
        "import os, time\n"
        "while True:\n"
        "    try:\n"
        "        os.fork()\n"
        "    except OSError:\n"
        "        time.sleep(0.05)\n"
    )

    async def scenario() -> None:
        async with opened(limited("spawn", folders, pids_max=40), leftovers) as runtime:
            instance = await runtime.start(
                bare("fork-bomb", [sys.executable, "-c", bomb], tmp_path), Output()
            )
            leftovers.add(instance)
            assert isinstance(instance, LimitedInstance)
            assert await until(lambda: len(instance.cgroup.members()) >= 20, 10)
            await asyncio.sleep(0.5)
            assert len(instance.cgroup.members()) <= 40
            instance.signal(signal.SIGKILL)
            await asyncio.wait_for(instance.wait(), 15)
            assert not instance.cgroup.members()

    run(scenario())


def test_groups_a_killed_daemon_left_are_emptied_and_removed(folders: dict[str, Path]) -> None:
    cgroups = Cgroups(folders)
    left = cgroups.create("left-behind", Limits(memory_bytes=64 * MiB, cpu_millis=100))
    sleeper = subprocess.Popen(
        ["sleep", "600"],
        start_new_session=True,
        preexec_fn=lambda: join_cgroups(left.procs_files),
    )
    try:
        assert left.members() == {sleeper.pid}
        assert Cgroups(folders).clean() == 1
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
        assert not any(folder.exists() for folder in left.folders.values())
    finally:
        sleeper.kill()
        sleeper.wait()


def test_the_reaper_empties_the_groups_once_the_daemon_is_gone(
    folders: dict[str, Path],
) -> None:
    """The daemon's end (its pipe to the reaper closes, as on a SIGKILL) ends what it left."""
    cgroups = Cgroups(folders)
    left = cgroups.create("orphaned", Limits(memory_bytes=64 * MiB, cpu_millis=100))
    sleeper = subprocess.Popen(
        ["sleep", "600"],
        start_new_session=True,
        preexec_fn=lambda: join_cgroups(left.procs_files),
    )
    reaper = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "homerun.runtime._reaper",
            *(f"{name}={folder}" for name, folder in folders.items()),
        ],
        stdin=subprocess.PIPE,
    )
    try:
        assert reaper.stdin is not None
        reaper.stdin.close()
        assert reaper.wait(timeout=30) == 0
        assert sleeper.wait(timeout=10) == -signal.SIGKILL
        assert not any(folder.exists() for folder in left.folders.values())
    finally:
        sleeper.kill()
        sleeper.wait()


def bare(name: str, argv: list[str], cwd: Path) -> InstanceSpec:
    """A process that is no server (as a job's task): no port, no revision."""
    return InstanceSpec(name=name, argv=argv, env={"PATH": os.environ["PATH"]}, cwd=cwd, port=0)


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", "rb") as stat:
        fields = stat.read().rsplit(b")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_revision_scaled_out_on_a_busy_loop_does_not_starve_its_neighbour(
    tmp_path: Path, folders: dict[str, Path], leftovers: Leftovers
) -> None:
    """Four instances of one revision against one of another, all burning CPU: under
    contention each revision weighs the same, so the lone instance gets about as much CPU
    time as the four together (1/5 of it if every instance weighed the same)."""
    busy = [sys.executable, "-c", "while True: pass"]

    async def scenario() -> None:
        async with opened(limited("spawn", folders), leftovers) as runtime:
            burners = []
            for number in range(4):
                instance = await runtime.start(
                    replace(bare(f"burner-{number}", busy, tmp_path), revision="burner-00001"),
                    Output(),
                )
                leftovers.add(instance)
                burners.append(instance)
            neighbour = await runtime.start(
                replace(bare("neighbour-0", busy, tmp_path), revision="neighbour-00001"),
                Output(),
            )
            leftovers.add(neighbour)
            # Against the rest of the machine, the two revisions weigh as two processes.
            assert (folders["cpu"] / "cpu.shares").read_text().strip() == "2048"
            await asyncio.sleep(0.5)
            pids = [instance.pid for instance in [*burners, neighbour]]
            before = [cpu_seconds(pid) for pid in pids]
            await asyncio.sleep(3)
            used = [cpu_seconds(pid) - start for pid, start in zip(pids, before, strict=True)]
            burner_total, neighbour_used = sum(used[:-1]), used[-1]
            assert neighbour_used >= 0.5 * burner_total, used  # about 1; 0.25 ungrouped
            assert burner_total <= 1.15 * 3, used  # four instances, and not more than a core

    run(scenario())
