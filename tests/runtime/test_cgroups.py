"""Where homerun's control groups go, what it writes in them, and what it says without them."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from homerun.model.limits import Limits, MiB
from homerun.runtime.cgroups import (
    Availability,
    CgroupError,
    Cgroups,
    Placement,
    limit_values,
    placements,
)

# This machine's: memory under a group of its own, cpu at the root, and a cgroup2 beside.
MOUNTINFO = """\
30 25 0:26 / /sys/fs/cgroup/cpu rw,nosuid,nodev,noexec,relatime shared:9 - cgroup cgroup rw,cpu
31 25 0:27 / /sys/fs/cgroup/cpuacct rw,relatime shared:10 - cgroup cgroup rw,cpuacct
33 25 0:29 / /sys/fs/cgroup/memory rw,relatime shared:12 - cgroup cgroup rw,memory
36 25 0:32 / /sys/fs/cgroup/pids rw,relatime shared:15 - cgroup cgroup rw,pids
37 25 0:33 / /sys/fs/cgroup/unified rw,relatime shared:16 - cgroup2 cgroup2 rw
"""
SELF_CGROUP = """\
8:pids:/
4:memory:/process_api/177a
2:cpuacct:/
1:cpu:/
0::/
"""


def test_each_hierarchy_is_found_with_the_daemons_own_group_in_it() -> None:
    found = placements(MOUNTINFO, SELF_CGROUP)
    assert set(found) == {"cpu", "memory", "pids"}  # no freezer mounted here
    assert found["memory"].folder("abc") == Path(
        "/sys/fs/cgroup/memory/process_api/177a/homerun-abc"
    )
    assert found["cpu"].folder("abc") == Path("/sys/fs/cgroup/cpu/homerun-abc")


def test_joined_controllers_and_a_container_s_mount_root() -> None:
    mountinfo = (
        "40 25 0:40 /docker/x /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n"
    )
    found = placements(mountinfo, "3:cpu,cpuacct:/docker/x/inner\n")
    assert found["cpu"].folder("k") == Path("/sys/fs/cgroup/cpu,cpuacct/inner/homerun-k")
    outside = Placement("cpu", Path("/sys/fs/cgroup/cpu"), "/docker/x", "/elsewhere")
    assert outside.folder("k") is None


def test_limits_are_a_quota_a_share_a_memory_limit_with_swap_and_a_process_count() -> None:
    values = limit_values(Limits(memory_bytes=256 * MiB, cpu_millis=500), pids_max=100)
    assert values["memory"] == [
        ("memory.limit_in_bytes", str(256 * MiB)),
        ("memory.memsw.limit_in_bytes", str(256 * MiB)),
    ]
    assert dict(values["cpu"]) == {
        "cpu.cfs_period_us": "100000",
        "cpu.cfs_quota_us": "50000",
        "cpu.shares": "512",
    }
    assert values["pids"] == [("pids.max", "100")]
    # The kernel refuses a quota under 1 ms.
    assert dict(limit_values(Limits(MiB, 1), 1)["cpu"])["cpu.cfs_quota_us"] == "1000"


def test_what_is_missing_is_said_with_what_it_costs() -> None:
    everything = {name: Path(f"/{name}") for name in ("memory", "cpu", "pids", "freezer")}
    assert Availability(everything).warning() is None
    none = Availability(
        {}, {"memory": "cannot create /x: Permission denied", "cpu": "no hierarchy"}
    )
    warning = none.warning()
    assert warning is not None
    assert "--memory is not enforced" in warning and "--cpu is not enforced" in warning
    assert "Permission denied" in warning and "setsid" in warning


def test_a_daemon_that_is_not_root_says_what_it_cannot_enforce() -> None:
    """Run as `nobody`, homerun cannot make control groups: the warning names each missing
    controller and its cost, and nothing raises."""
    if os.geteuid() != 0:
        pytest.skip("needs root to become nobody")
    script = (
        "from homerun.runtime.cgroups import available; "
        "found = available('as-nobody'); print(sorted(found.folders)); print(found.warning())"
    )
    result = subprocess.run(
        [shutil.which("python3", path="/usr/bin:/bin") or sys.executable, "-c", script],
        user="nobody",
        capture_output=True,
        text=True,
        timeout=60,
        cwd="/",
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )
    assert result.returncode == 0, result.stderr
    folders, warning = result.stdout.splitlines()
    assert folders == "[]"
    assert "memory: cannot create" in warning and "Permission denied" in warning
    assert "--memory is not enforced, --cpu is not enforced" in warning
    assert "run homerun as root" in warning


def test_a_group_that_cannot_be_made_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    cgroups = Cgroups({"memory": blocker / "homerun-k"})
    with pytest.raises(CgroupError) as raised:
        cgroups.create("svc-00001-abc-1a2b3c", Limits(memory_bytes=MiB, cpu_millis=1000))
    message = str(raised.value)
    assert "cannot set up the control group of instance svc-00001-abc-1a2b3c" in message
    assert str(blocker) in message and "Not a directory" in message
