"""The sandbox (runtime/sandbox.py) with real bwrap, control groups and instances: forked and
spawned instances run as the revision's own user in a PID namespace, the daemon knows their
pids as its own, they join their control groups, a stop's SIGTERM reaches the app (which exits
as it chooses) and what they write to /tmp counts against their memory. The attacks themselves
are tried end to end in tests/e2e/test_sandbox.py."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import replace
from pathlib import Path

import pytest

from homerun.errors import HomerunError
from homerun.model.limits import Limits, MiB
from homerun.model.run_as import RunAs
from homerun.model.volumes import MemoryMount, Mounts, SecretFile
from homerun.runtime.base import ImageRoot, InstanceSpec
from homerun.runtime.cgroups import Cgroups, available
from homerun.runtime.limited import LimitedInstance, LimitedRuntime
from homerun.runtime.names import host_split
from homerun.runtime.process import ProcessRuntime
from homerun.runtime.sandbox import (
    FIRST_UID,
    Sandbox,
    SandboxUnavailable,
    mount_points_under,
    probe,
    revision_uid,
    static_busybox,
    unmount_inspect_folders,
    unsafe_mount_point,
)
from homerun.runtime.zygote import ZygoteRuntime

from .helpers import GUNICORN_SEED, REPO_ROOT, Leftovers, Output, Seeds, first_response, spec

pytestmark = pytest.mark.timeout(300)

SNOOP = REPO_ROOT / "tests" / "apps" / "snoop"
RUNTIMES = ("zygote", "spawn")


# -- what the sandbox is made of (pure) -------------------------------------------------------


def fake_sandbox(home: Path, privileged: bool = True) -> Sandbox:
    return Sandbox("bwrap", "setpriv", "env", home=home, privileged=privileged)


def pairs(args: list[str], option: str) -> list[str]:
    return [args[index + 1] for index, arg in enumerate(args) if arg == option]


def test_in_an_images_root_the_static_busybox_makes_the_user_before_the_image_runs(
    tmp_path: Path,
) -> None:
    root = ImageRoot(folder=tmp_path / "root", python="/usr/bin/python3")
    root.folder.mkdir()
    env = {"HOMERUN_INSPECT": str(tmp_path / "inspect")}
    without = fake_sandbox(tmp_path / "home")
    with pytest.raises(SandboxUnavailable, match="apt-get install busybox-static"):
        without.command(["app"], env, Path("/srv"), "rev", root=root)
    sandbox = replace(without, dropper="/usr/bin/busybox")
    args = sandbox.command(["app"], env, Path("/srv"), "rev", root=root)
    uid = str(revision_uid("rev"))
    command = args[args.index("--") + 1 :]
    # The first program run is the host's busybox, bound into the sandbox's own /dev; the
    # image's Python comes after it has made the revision's user.
    assert command[:8] == ["/dev/.homerun/busybox", "nsenter", "-F", "-S", uid, "-G", uid, "--"]
    assert command[8] == "/usr/bin/python3"
    at = args.index("/usr/bin/busybox")
    assert args[at - 1 : at + 2] == ["--ro-bind", "/usr/bin/busybox", "/dev/.homerun/busybox"]


def test_the_way_to_each_mount_point_is_one_the_app_cannot_change(tmp_path: Path) -> None:
    folder = tmp_path / "root"
    (folder / "etc").mkdir(parents=True)
    (folder / "srv").mkdir()
    inspect = Path("/var/lib/homerun/inspect/rev")  # under a folder the image may have
    env = {"HOMERUN_INSPECT": str(inspect)}
    uid = revision_uid("rev")
    assert unsafe_mount_point(folder, env, uid) is None
    # A link: bwrap, as root, would follow it out of the folder.
    (folder / "etc" / "resolv.conf").symlink_to("../../oldroot/etc/nologin")
    assert unsafe_mount_point(folder, env, uid) == "/etc/resolv.conf is a symbolic link"
    (folder / "etc" / "resolv.conf").unlink()
    (folder / "tmp").symlink_to("/")
    assert unsafe_mount_point(folder, env, uid) == "/tmp is a symbolic link"
    (folder / "tmp").unlink()
    # A folder on the way that the app could change between the check and bwrap's steps.
    (folder / "var").mkdir(mode=0o755)
    (folder / "var").chmod(0o1777)
    assert unsafe_mount_point(folder, env, uid) == "/var is writable by others than its owner"
    (folder / "var").chmod(0o755)
    os.chown(folder / "var", uid, uid)
    assert unsafe_mount_point(folder, env, uid) == "/var belongs to the revision's user"
    os.chown(folder / "var", 0, 0)
    # A file where a folder must be.
    (folder / "var" / "lib").write_text("")
    assert unsafe_mount_point(folder, env, uid) == "/var/lib is not a folder"
    with pytest.raises(SandboxUnavailable, match="/var/lib is not a folder"):
        replace(fake_sandbox(tmp_path / "home"), dropper="/bin/busybox").command(
            ["app"], env, Path("/srv"), "rev", root=ImageRoot(folder=folder, python="/p")
        )
    # Under /tmp (and /proc, /dev) the tree is the sandbox's own: not the image's.
    (folder / "var" / "lib").unlink()
    (folder / "tmp" / "x").mkdir(parents=True)
    (folder / "tmp").chmod(0o1777)
    assert unsafe_mount_point(folder, {"HOMERUN_INSPECT": "/tmp/x/inspect/rev"}, uid) is None


# What the host's programs run as root act on in their own environment (runtime/names.py).
HOSTILE_ENV = {"LD_PRELOAD": "./p.so", "GCONV_PATH": "/x", "PATH": "/app/bin", "MODE": "beta"}


def test_what_a_host_program_acts_on_is_split_from_the_rest() -> None:
    kept, acted_on = host_split({**HOSTILE_ENV, "CONTAINERS_CONF": "/c", "GODEBUG": "x=1"})
    assert kept == {"MODE": "beta"}
    assert set(acted_on) == {"LD_PRELOAD", "GCONV_PATH", "PATH", "CONTAINERS_CONF", "GODEBUG"}


def test_the_loaders_variables_reach_the_app_only_once_it_is_its_own_user(tmp_path: Path) -> None:
    sandbox = replace(fake_sandbox(tmp_path / "home"), dropper="/bin/busybox")
    # The sandbox's first programs (env, bwrap, setpriv) start without them...
    assert sandbox.host_env(HOSTILE_ENV) == {"MODE": "beta"}
    args = sandbox.command(["app"], HOSTILE_ENV, Path("/srv"), "rev")
    # ...and `env` sets them after setpriv has made the revision's user.
    after = args[args.index("--no-new-privs") :]
    assert after == [
        "--no-new-privs",
        "--",
        "env",
        "LD_PRELOAD=./p.so",
        "GCONV_PATH=/x",
        "PATH=/app/bin",
        "app",
    ]
    # In an image's root, bwrap sets them for the static busybox (which reads none of them).
    (tmp_path / "root").mkdir()
    rooted = sandbox.command(
        ["app"], HOSTILE_ENV, Path("/srv"), "rev", root=ImageRoot(tmp_path / "root", "/p")
    )
    assert rooted[rooted.index("LD_PRELOAD") - 1 : rooted.index("LD_PRELOAD") + 2] == [
        "--setenv",
        "LD_PRELOAD",
        "./p.so",
    ]
    # An exec probe's command: after nsenter has made the user, by the host's env or busybox's.
    entered = sandbox.enter(42, "rev", HOSTILE_ENV, Path("/srv"))
    assert entered[entered.index("--setuid=" + str(revision_uid("rev"))) + 1 :] == [
        "--",
        "env",
        "LD_PRELOAD=./p.so",
        "GCONV_PATH=/x",
        "PATH=/app/bin",
    ]
    root = ImageRoot(tmp_path / "root", "/p")
    entered = sandbox.enter(42, "rev", HOSTILE_ENV, Path("/srv"), root=root)
    assert entered[entered.index("--") + 1 :][-5:-3] == ["/dev/.homerun/busybox", "env"]


def test_a_home_the_sandbox_hides_becomes_tmp(tmp_path: Path) -> None:
    sandbox = replace(fake_sandbox(tmp_path / "home"), hidden=(Path("/root"),))
    assert sandbox.inherited_env({"HOME": "/root", "LANG": "C"}) == {"HOME": "/tmp", "LANG": "C"}
    assert sandbox.inherited_env({"HOME": str(tmp_path / "home" / "x")})["HOME"] == "/tmp"
    assert sandbox.inherited_env({"HOME": "/srv/app"})["HOME"] == "/srv/app"
    assert "HOME" not in sandbox.inherited_env({})


def test_mount_points_under_a_folder_are_read_from_mountinfo(tmp_path: Path) -> None:
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(
        "22 1 0:21 / /proc rw - proc proc rw\n"
        "90 22 0:50 / /h/inspect/rev-1 rw,nosuid - tmpfs homerun-inspect rw,size=16384k\n"
        "91 22 0:51 / /h/inspect/with\\040space rw - tmpfs homerun-inspect rw\n"
        "92 22 0:52 / /h/inspect rw - tmpfs other rw\n"
    )
    found = mount_points_under(Path("/h/inspect"), mountinfo)
    assert found == ["/h/inspect/with space", "/h/inspect/rev-1"]


@pytest.mark.skipif(os.geteuid() != 0, reason="only root mounts the inspector's tmpfs")
def test_the_inspectors_folder_is_a_small_tmpfs_of_the_revisions_user(tmp_path: Path) -> None:
    # An app could otherwise fill the host's disk through it: it writes there as itself.
    sandbox = fake_sandbox(tmp_path / "home")
    folder = tmp_path / "home" / "inspect" / "rev"
    try:
        sandbox.prepare("rev", {"HOMERUN_INSPECT": str(folder)})
        sandbox.prepare("rev", {"HOMERUN_INSPECT": str(folder)})  # once is enough
        assert mount_points_under(tmp_path / "home") == [str(folder)]
        info = folder.stat()
        assert (info.st_uid, info.st_gid) == (revision_uid("rev"), revision_uid("rev"))
        with pytest.raises(OSError) as full, open(folder / "fill", "wb") as fill:
            for _ in range(20):
                fill.write(b"x" * (1 << 20))
                fill.flush()
        assert full.value.errno == errno.ENOSPC
        assert (folder / "fill").stat().st_size <= 16 << 20
    finally:
        unmount_inspect_folders(tmp_path / "home")
    assert mount_points_under(tmp_path / "home") == []
    assert not (folder / "fill").exists()  # it never was on the disk


def test_only_a_statically_linked_busybox_is_the_dropper() -> None:
    found = static_busybox()
    if shutil.which("busybox") is None:
        assert found is None
        return
    # Debian's busybox-static (scripts/setup-containers installs it) has no ELF interpreter.
    interpreter = b"ld-linux" in Path(shutil.which("busybox") or "").read_bytes()[:4096]
    assert (found is None) == interpreter


def test_home_is_hidden_and_only_the_revisions_own_folders_are_shown(tmp_path: Path) -> None:
    home = tmp_path / "home"
    folder = home / "revisions" / "hello-00001-abc" / "rootfs" / "app"
    venv = home / "venvs" / "0123"
    other = home / "revisions" / "other-00001-xyz"
    for made in (folder, venv / "bin", other):
        made.mkdir(parents=True)
    args = fake_sandbox(home).command(
        ["gunicorn", "main:app"], {"VIRTUAL_ENV": str(venv)}, folder, "hello-00001-abc"
    )
    assert str(home) in pairs(args, "--tmpfs")
    assert "/tmp" in pairs(args, "--tmpfs") and "/run" in pairs(args, "--tmpfs")
    shown = pairs(args, "--ro-bind")
    # The revision's whole folder: a workingDir below the code still reaches all of it.
    assert str(folder.parents[1]) in shown and str(venv) in shown
    assert not any(path.startswith(str(other)) for path in shown)
    # The way from the tmpfs to the folders shown: folders the revision's user may enter.
    assert str(home / "revisions") in pairs(args, "--dir")
    # The home is hidden before anything in it is shown again.
    assert args.index(str(home)) < args.index(str(folder.parents[1]))
    # The app runs unprivileged: its own user and group, no capability, no new privileges.
    uid = str(revision_uid("hello-00001-abc"))
    assert pairs(args, "--reuid") == [uid] and pairs(args, "--regid") == [uid]
    assert {"--clear-groups", "--no-new-privs", "--inh-caps=-all"} <= set(args)
    assert args[-2:] == ["gunicorn", "main:app"]


def test_each_revision_has_a_user_of_its_own() -> None:
    uids = {revision_uid(f"hello-{n:05d}-abc") for n in range(1, 200)}
    assert len(uids) > 190  # a hash in a million ids: collisions are rare
    assert min(uids) >= FIRST_UID


def test_as_a_normal_user_a_user_namespace_and_the_same_user(tmp_path: Path) -> None:
    args = fake_sandbox(tmp_path, privileged=False).command(["app"], {}, tmp_path, "r-00001-a")
    assert "--unshare-user" in args
    assert "--reuid" not in args
    assert "user namespace" in fake_sandbox(tmp_path, privileged=False).describe()


def test_off_says_what_instances_see(tmp_path: Path) -> None:
    sandbox, said = probe("off", tmp_path)
    assert sandbox is None
    assert "not sandboxed (sandbox: off;" in said and "HOMERUN_HOME" in said


def test_a_machine_without_bwrap_is_told_so_and_on_refuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no bwrap, setpriv, nsenter or env on it
    sandbox, said = probe("auto", tmp_path)
    assert sandbox is None
    assert "bwrap, setpriv, nsenter, env not found" in said
    assert "apt-get install bubblewrap util-linux coreutils`" in said  # each package once
    with pytest.raises(SandboxUnavailable, match="sandbox: on in config.yaml, but bwrap"):
        probe("on", tmp_path)


def test_a_sandbox_asked_for_but_missing_is_said_in_describe() -> None:
    lacking = "instances are not sandboxed: bwrap not found"
    for runtime in (ProcessRuntime(unsandboxed=lacking), ZygoteRuntime(unsandboxed=lacking)):
        assert runtime.mode("hello-00001-abc")[1].endswith(f"; {lacking}")
    assert "sandbox" not in ProcessRuntime().mode("hello-00001-abc")[1]


# -- real instances in it ---------------------------------------------------------------------


@pytest.fixture
def sandbox(tmp_path: Path) -> Sandbox:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "signing-key").write_text("secret")
    found, said = probe("auto", home)
    if found is None or os.geteuid() != 0:
        pytest.skip(f"needs root and bubblewrap: {said}")
    return found


@pytest.fixture
def folders(tmp_path: Path) -> Iterator[dict[str, Path]]:
    key = "test-" + hashlib.sha256(str(tmp_path).encode()).hexdigest()[:10]
    found = available(key)
    if os.geteuid() != 0 or not {"memory", "cpu"} <= set(found.folders):
        pytest.skip(f"needs root and cgroup v1 memory and cpu hierarchies: {found.warning()}")
    yield dict(found.folders)
    cgroups = Cgroups(found.folders)
    cgroups.clean()
    cgroups.remove()


@asynccontextmanager
async def opened(runtime: LimitedRuntime, leftovers: Leftovers) -> AsyncIterator[LimitedRuntime]:
    runtime.open()
    try:
        yield runtime
    finally:
        await leftovers.reap()
        runtime.close()


def limited(kind: str, folders: dict[str, Path], sandbox: Sandbox) -> LimitedRuntime:
    inner = ZygoteRuntime(sandbox=sandbox) if kind == "zygote" else ProcessRuntime(sandbox=sandbox)
    return LimitedRuntime(inner, Cgroups(folders))


def status_of(pid: int) -> dict[str, str]:
    lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    return {key: value.strip() for key, _, value in (line.partition(":") for line in lines)}


def app_processes(instance: LimitedInstance) -> list[int]:
    """The instance's processes that run as the revision (not the bwrap around a spawned one)."""
    return [pid for pid in instance.cgroup.members() if status_of(pid)["Uid"].split()[0] != "0"]


@pytest.mark.parametrize("kind", RUNTIMES)
def test_an_instance_runs_as_its_revision_in_its_groups_and_stops_gracefully(
    kind: str, seeds: Seeds, folders: dict[str, Path], sandbox: Sandbox, leftovers: Leftovers
) -> None:
    revision = f"snoop-{kind}-00001-abc"

    async def scenario() -> None:
        async with opened(limited(kind, folders, sandbox), leftovers) as runtime:
            output = Output()
            instance_spec = replace(
                spec(seeds.flask, revision=revision, command=GUNICORN_SEED), cwd=SNOOP
            )
            instance = await runtime.start(instance_spec, output)
            leftovers.add(instance)
            assert isinstance(instance, LimitedInstance)
            status, _ = await first_response(instance_spec.port, "/me", within=30)
            assert status == 200
            mode, reason = runtime.mode(revision)
            assert mode == ("zygote" if kind == "zygote" else "spawn"), reason
            assert "sandboxed (bubblewrap)" in reason
            # The daemon's pid of the instance (a forked one's own; the bwrap that waits for
            # a spawned one), in the instance's groups; the app in a PID namespace.
            members = instance.cgroup.members()
            assert instance.pid in members
            apps = app_processes(instance)
            assert apps, members
            if kind == "zygote":
                assert instance.pid in apps
            for pid in apps:
                assert len(status_of(pid)["NSpid"].split()) == 2
                assert status_of(pid)["Uid"].split()[0] == str(revision_uid(revision))
                assert status_of(pid)["NoNewPrivs"] == "1"
                assert status_of(pid)["CapEff"] == "0000000000000000"
            # A stop's SIGTERM reaches gunicorn, which exits on its own (not killed).
            instance.signal(signal.SIGTERM)
            assert await asyncio.wait_for(instance.wait(), 15) == 0
            assert output.has("stderr", "Handling signal: term"), output.lines
            assert not any(folder.exists() for folder in instance.cgroup.folders.values())

    asyncio.run(asyncio.wait_for(scenario(), 120))


@pytest.mark.parametrize("kind", RUNTIMES)
def test_what_an_instance_writes_to_tmp_counts_against_its_memory(
    kind: str, seeds: Seeds, folders: dict[str, Path], sandbox: Sandbox, leftovers: Leftovers
) -> None:
    async def scenario() -> None:
        async with opened(limited(kind, folders, sandbox), leftovers) as runtime:
            output = Output()
            instance_spec = replace(
                spec(seeds.flask, revision=f"tmp-{kind}-00001-abc", command=GUNICORN_SEED),
                cwd=SNOOP,
                limits=Limits(memory_bytes=128 * MiB, cpu_millis=1000),
            )
            instance = await runtime.start(instance_spec, output)
            leftovers.add(instance)
            assert isinstance(instance, LimitedInstance)
            status, _ = await first_response(instance_spec.port, "/", within=30)
            assert status == 200
            with pytest.raises((OSError, IndexError, ValueError, TimeoutError)):
                await first_response(instance_spec.port, "/fill-tmp?mib=300", within=0.1)
            await asyncio.wait_for(instance.wait(), 15)
            assert instance.memory_exceeded
            assert output.has("stderr", "Memory limit of 128 MiB exceeded with "), output.lines

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_a_home_inside_a_folder_only_root_may_enter_is_reached_through_a_tmpfs(
    seeds: Seeds, folders: dict[str, Path], leftovers: Leftovers
) -> None:
    """HOMERUN_HOME under a 0700 folder outside /tmp (whose whole tree the sandbox remakes): the
    revision's user cannot enter the folder on the host, so the sandbox hides it too and the
    way to the revision's folder is made of folders it may enter."""
    private = Path(tempfile.mkdtemp(prefix="homerun-test-private-", dir="/var/tmp"))
    try:
        home = private / "home"
        home.mkdir(mode=0o700)
        found, said = probe("auto", home)
        if found is None or os.geteuid() != 0:
            pytest.skip(f"needs root and bubblewrap: {said}")
        revision = "private-00001-abc"
        app = home / "revisions" / revision / "app"
        shutil.copytree(SNOOP, app)
        assert found.command(["true"], {}, app, revision).count(str(private)) == 1

        async def scenario() -> None:
            async with opened(limited("spawn", folders, found), leftovers) as runtime:
                instance_spec = spec(seeds.flask, revision=revision, command=GUNICORN_SEED, cwd=app)
                instance = await runtime.start(instance_spec, Output())
                leftovers.add(instance)
                status, body = await first_response(instance_spec.port, "/me", within=30)
                assert status == 200, body

        asyncio.run(asyncio.wait_for(scenario(), 120))
    finally:
        shutil.rmtree(private)


# -- secret files and in-memory volumes ---------------------------------------------------------

MOUNTS = Mounts(
    secret_files=(
        SecretFile("/secrets/api-key", b"hunter2-value"),
        SecretFile("/secrets/v1", b"1"),
    ),
    memory=(MemoryMount("/cache", 1 * MiB),),
)


def test_mounts_are_bwrap_options_and_a_missing_mount_point_opens_the_root(tmp_path: Path) -> None:
    folder = tmp_path / "revision"
    folder.mkdir()
    args = fake_sandbox(tmp_path / "home").command(
        ["app"], {}, folder, "hello-00001-abc", MOUNTS, [7, 8]
    )
    assert pairs(args, "--ro-bind-data") == ["7", "8"]
    assert args[args.index("--size") + 1 : args.index("--size") + 4] == [
        str(MiB),
        "--tmpfs",
        "/cache",
    ]
    assert "/secrets" in pairs(args, "--remount-ro") and "/" in pairs(args, "--remount-ro")
    # /secrets does not exist here: `/` is a tmpfs holding the host's entries, bound one by one.
    assert ("/", "/") not in zip(pairs(args, "--ro-bind"), pairs(args, "--ro-bind"), strict=True)
    assert "/usr" in pairs(args, "--ro-bind-try")
    # A mount point the host has: `/` bound whole, as without mounts.
    existing = Mounts(memory=(MemoryMount(str(tmp_path), None),))
    plain = fake_sandbox(tmp_path / "home").command(["app"], {}, folder, "r", existing)
    assert plain[plain.index("--ro-bind") + 1] == "/" and "--remount-ro" not in plain
    assert "--size" not in plain and pairs(plain, "--tmpfs")[-1] == str(tmp_path)
    assert "hunter2" not in " ".join(args)  # values go through file descriptors only


MOUNT_SCRIPT = """
cat /secrets/api-key; echo
ls /secrets | tr '\\n' ' '; echo
echo changed > /secrets/api-key 2>/dev/null && echo SECRET-WRITABLE || echo secret-read-only
echo more > /secrets/new 2>/dev/null && echo FOLDER-WRITABLE || echo folder-read-only
head -c 524288 /dev/zero > /cache/half && echo half-written
head -c 1048576 /dev/zero > /cache/more 2>/dev/null && echo OVER-LIMIT || echo over-limit-refused
echo done
"""


@pytest.mark.parametrize("kind", RUNTIMES)
def test_secret_files_are_read_only_and_a_volume_holds_its_size_limit(
    kind: str, folders: dict[str, Path], sandbox: Sandbox, leftovers: Leftovers, tmp_path: Path
) -> None:
    revision = f"mounts-{kind}-00001-abc"

    async def scenario() -> None:
        async with opened(limited(kind, folders, sandbox), leftovers) as runtime:
            output = Output()
            instance_spec = InstanceSpec(
                name=f"{revision}-x",
                argv=["/bin/sh", "-c", MOUNT_SCRIPT],
                env={"PATH": "/usr/bin:/bin"},
                cwd=tmp_path,
                port=0,
                revision=revision,
                limits=Limits(memory_bytes=128 * MiB, cpu_millis=1000),
                mounts=MOUNTS,
            )
            instance = await runtime.start(instance_spec, output)
            leftovers.add(instance)
            assert await asyncio.wait_for(instance.wait(), 30) == 0, output.lines
            said = [line for stream, line in output.lines if stream == "stdout"]
            assert said == [
                "hunter2-value",
                "api-key v1 ",
                "secret-read-only",
                "folder-read-only",
                "half-written",
                "over-limit-refused",
                "done",
            ], output.lines
            if kind == "zygote":
                mode, reason = runtime.mode(revision)
                assert mode == "spawn" and "each instance's own" in reason

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_what_an_instance_writes_to_a_volume_counts_against_its_memory(
    folders: dict[str, Path], sandbox: Sandbox, leftovers: Leftovers, tmp_path: Path
) -> None:
    async def scenario() -> None:
        async with opened(limited("spawn", folders, sandbox), leftovers) as runtime:
            output = Output()
            instance_spec = InstanceSpec(
                name="fill-00001-abc-x",
                argv=["/bin/sh", "-c", "head -c 300000000 /dev/zero > /cache/big; sleep 30"],
                env={"PATH": "/usr/bin:/bin"},
                cwd=tmp_path,
                port=0,
                revision="fill-00001-abc",
                limits=Limits(memory_bytes=64 * MiB, cpu_millis=1000),
                mounts=Mounts(memory=(MemoryMount("/cache", 512 * MiB),)),
            )
            instance = await runtime.start(instance_spec, output)
            leftovers.add(instance)
            await asyncio.wait_for(instance.wait(), 30)
            assert instance.memory_exceeded, output.lines

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_without_a_sandbox_mounts_are_refused_rather_than_left_out(tmp_path: Path) -> None:
    async def scenario() -> None:
        runtime = ProcessRuntime()
        instance_spec = InstanceSpec(
            name="plain-x", argv=["true"], env={}, cwd=tmp_path, port=0, mounts=MOUNTS
        )
        with pytest.raises(HomerunError, match="need the sandbox"):
            await runtime.start(instance_spec, Output())

    asyncio.run(scenario())


def test_two_instances_of_a_revision_have_volumes_of_their_own(
    folders: dict[str, Path], sandbox: Sandbox, leftovers: Leftovers, tmp_path: Path
) -> None:
    revision = "pair-00001-abc"

    async def scenario() -> None:
        async with opened(limited("zygote", folders, sandbox), leftovers) as runtime:
            outputs = [Output(), Output()]
            scripts = [
                "echo mine > /cache/first && echo wrote; sleep 30",
                "ls -A /cache | wc -l; ls -A /secrets",
            ]
            instances = []
            for index, script in enumerate(scripts):
                instance = await runtime.start(
                    InstanceSpec(
                        name=f"{revision}-{index}",
                        argv=["/bin/sh", "-c", script],
                        env={"PATH": "/usr/bin:/bin"},
                        cwd=tmp_path,
                        port=0,
                        revision=revision,
                        mounts=MOUNTS,
                    ),
                    outputs[index],
                )
                leftovers.add(instance)
                instances.append(instance)
                if index == 0:
                    await outputs[0].wait_for("stdout", "wrote", within=20)
            assert await asyncio.wait_for(instances[1].wait(), 30) == 0, outputs[1].lines
            assert [line for _, line in outputs[1].lines] == ["0", "api-key", "v1"]

    asyncio.run(asyncio.wait_for(scenario(), 120))


def test_a_security_context_user_replaces_the_revisions_own(tmp_path: Path) -> None:
    home = tmp_path / "home"
    folder = home / "revisions" / "hello-00001-abc" / "app"
    folder.mkdir(parents=True)
    sandbox = fake_sandbox(home)
    args = sandbox.command(["app"], {}, folder, "hello-00001-abc", user=RunAs(2020, 2021))
    assert pairs(args, "--reuid") == ["2020"] and pairs(args, "--regid") == ["2021"]
    # A group alone keeps the revision's user; a user alone gets the group of that id.
    args = sandbox.command(["app"], {}, folder, "hello-00001-abc", user=RunAs(None, 5))
    assert pairs(args, "--reuid") == [str(revision_uid("hello-00001-abc"))]
    assert pairs(args, "--regid") == ["5"]
    args = sandbox.command(["app"], {}, folder, "hello-00001-abc", user=RunAs(7))
    assert pairs(args, "--reuid") == ["7"] and pairs(args, "--regid") == ["7"]
