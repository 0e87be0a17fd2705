"""Sandboxed builds for real: pip and bwrap run what a deploy brings, which gets nothing of the
machine's, and the virtualenv it leaves is root's, readable and runnable by other users."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from homerun.build import build
from homerun.build.confined import processes_of, seal
from homerun.build.dependencies import InstallPlan, PipStep
from homerun.build.interpreter import probe_interpreter
from homerun.build.sandbox import FIRST_UID, UID_RANGE, BuildSandbox, Mount, find
from homerun.build.venv import ensure_venv

from .helpers import Output, write_tree

AS_ROOT = pytest.mark.skipif(os.geteuid() != 0, reason="builds are sandboxed as root only")
SECRET = "homerun-test-secret-4b1d"

# A local package whose setup.py tries what a hostile deploy would, and records what it could
# do in a module the build installs into the virtualenv (evil_report.py).
EVIL_SETUP = """\
import json, os, subprocess, sys
from setuptools import setup

CHECKS = json.loads({checks!r})
report = {{}}


def attempt(name, action):
    try:
        report[name] = {{"ok": True, "result": action()}}
    except Exception as error:
        report[name] = {{"ok": False, "error": type(error).__name__ + ": " + str(error)}}


def read(path):
    with open(path, "rb") as file:
        return file.read().decode(errors="replace")


def write(path):
    with open(path, "w") as file:
        file.write("pwned")
    return path


status = dict(line.split(":", 1) for line in read("/proc/self/status").splitlines() if ":" in line)
report["status"] = {{key: status[key].split() for key in ("Uid", "Gid", "Groups", "CapEff",
                                                         "CapPrm", "CapBnd", "NoNewPrivs")}}
attempt("shadow", lambda: read("/etc/shadow"))
for name in ("admin-token", "signing-key", "homerun.db"):
    attempt(name, lambda name=name: read(os.path.join(CHECKS["home"], name)))
attempt("list_home", lambda: os.listdir(CHECKS["home"]))
attempt("list_user_home", lambda: os.listdir(os.path.expanduser("~root")))
for name in ("home", "other_venv", "source", "artifact", "host_tmp", "var_tmp"):
    attempt("write_" + name, lambda name=name: write(os.path.join(CHECKS[name], "pwned")))
attempt("write_etc", lambda: write("/etc/homerun-pwned"))
attempt("daemon_environ", lambda: read("/proc/%d/environ" % CHECKS["daemon_pid"]))
attempt("signal_daemon", lambda: os.kill(CHECKS["daemon_pid"], 0))
report["secret_in_environment"] = CHECKS["secret"] in json.dumps(dict(os.environ))
# Something left running, to come back and change the virtualenv once it is shared.
subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True,
                 stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
with open("evil_report.py", "w") as file:
    file.write("REPORT = %r\\n" % json.dumps(report))
setup(name="evil", version="1.0", py_modules=["evil_report"])
"""


def _sandbox() -> BuildSandbox:
    sandbox, why = find()
    if sandbox is None:
        pytest.skip(why)
    return sandbox


def _build_processes() -> list[int]:
    """Pids of processes running as any build's user."""
    return [
        int(entry.name)
        for entry in os.scandir("/proc")
        if entry.name.isdigit() and _in_build_range(int(entry.name))
    ]


def _in_build_range(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    return any(FIRST_UID <= int(uid) < FIRST_UID + UID_RANGE for uid in uids)


def _owned_by_root_and_read_only(venv: Path) -> list[str]:
    """What in `venv` is not root's, or may be written by others, or is set-id."""
    wrong = []
    for path in [venv, *venv.rglob("*")]:
        info = path.lstat()
        if info.st_uid != 0 or info.st_gid != 0:
            wrong.append(f"{path}: owned by {info.st_uid}:{info.st_gid}")
        if stat.S_ISLNK(info.st_mode):
            continue
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH | stat.S_ISUID | stat.S_ISGID):
            wrong.append(f"{path}: mode {stat.filemode(info.st_mode)}")
    return wrong


@AS_ROOT
@pytest.mark.slow
def test_a_hostile_setup_py_gets_nothing_of_the_machine(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _sandbox()
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    for name in ("admin-token", "signing-key", "homerun.db"):
        (home / name).write_text(f"{SECRET} {name}")
        (home / name).chmod(0o600)
    monkeypatch.setenv("HOMERUN_HOME", str(home))
    monkeypatch.setenv("HOMERUN_TOKEN", SECRET)
    cache = home / "venvs"
    interpreter = probe_interpreter()
    empty = InstallPlan(origin="nothing", steps=(), names=frozenset())
    other_venv = ensure_venv(plan=empty, interpreter=interpreter, cache=cache, output=Output())
    other_before = sorted(str(path) for path in other_venv.rglob("*"))
    host_tmp = tmp_path / "host-tmp"
    host_tmp.mkdir()
    var_tmp = Path("/var/tmp") / f"homerun-test-{os.getpid()}"
    var_tmp.mkdir(mode=0o777, exist_ok=True)
    var_tmp.chmod(0o777)  # a folder any user may write, on the host
    source = tmp_path / "src"
    dest = home / "revisions" / "evil-00001-abc"
    checks = {
        "home": str(home),
        "other_venv": str(other_venv),
        "source": str(source),
        "artifact": str(dest / "app"),
        "host_tmp": str(host_tmp),
        "var_tmp": str(var_tmp),
        "daemon_pid": os.getpid(),
        "secret": SECRET,
    }
    write_tree(
        source,
        {
            "main.py": "print('hello')\n",
            "requirements.txt": "./evil\n",
            "evil/setup.py": EVIL_SETUP.format(checks=json.dumps(checks)),
        },
    )
    output = Output()
    try:
        artifact = build(
            source,
            dest,
            command=["python", "main.py"],
            args=None,
            user_env={},
            venv_cache=cache,
            output=output,
        )
        # Nothing of the build's user runs on: the sleeper it started is gone.
        assert _build_processes() == []
        venv = artifact.venv
        assert venv is not None
        installed = list(venv.glob("lib/python*/site-packages/evil_report.py"))
        assert installed, output.text
        namespace: dict[str, str] = {}
        exec(installed[0].read_text(), namespace)
        report = json.loads(namespace["REPORT"])
    finally:
        shutil.rmtree(var_tmp, ignore_errors=True)
    assert any(line.startswith("building in a sandbox as user") for line in output.lines)

    # A user of its own, no capability, no way to gain one.
    uids = {int(uid) for uid in report["status"]["Uid"]}
    assert len(uids) == 1 and FIRST_UID <= uids.pop() < FIRST_UID + UID_RANGE
    assert report["status"]["Groups"] == []
    assert int(report["status"]["CapEff"][0], 16) == 0
    assert int(report["status"]["CapPrm"][0], 16) == 0
    assert int(report["status"]["CapBnd"][0], 16) == 0
    assert report["status"]["NoNewPrivs"] == ["1"]
    # Nothing to read: /etc/shadow is root's, HOMERUN_HOME and root's home are empty tmpfs.
    assert not report["shadow"]["ok"] and "PermissionError" in report["shadow"]["error"]
    for name in ("admin-token", "signing-key", "homerun.db"):
        assert not report[name]["ok"], report[name]
    # HOMERUN_HOME holds only the folders on the way to what the build is shown.
    assert sorted(report["list_home"]["result"]) == ["revisions", "venvs"]
    assert report["list_user_home"]["result"] in ([], [".pyenv"])  # the interpreter's way
    assert not report["daemon_environ"]["ok"]
    assert not report["signal_daemon"]["ok"]
    assert report["secret_in_environment"] is False
    # Nothing written outside the virtualenv reaches the host.
    for name in ("home", "other_venv", "source", "host_tmp", "var_tmp", "etc"):
        assert not report[f"write_{name}"]["ok"], (name, report[f"write_{name}"])
    assert not (home / "pwned").exists() and not (other_venv / "pwned").exists()
    assert not (source / "pwned").exists() and not (host_tmp / "pwned").exists()
    assert not Path("/etc/homerun-pwned").exists()
    # Its copy of the source is its own: the artifact's stays as it was.
    assert report["write_artifact"]["ok"]
    assert not (dest / "app" / "pwned").exists()
    assert not list((dest / "app" / "evil").glob("*.egg-info"))
    assert sorted(str(path) for path in other_venv.rglob("*")) == other_before
    # The virtualenv is root's now; nothing of the build is left beside it.
    assert _owned_by_root_and_read_only(venv) == []
    assert sorted(path.name for path in cache.iterdir()) == sorted(
        [
            other_venv.name,
            f"{other_venv.name}.lock",
            venv.name,
            f"{venv.name}.lock",
        ]
    )


@AS_ROOT
@pytest.mark.slow
def test_a_sandboxed_build_installs_from_the_index_for_other_users_to_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = _sandbox()
    home = tmp_path / "home"
    monkeypatch.setenv("HOMERUN_HOME", str(home))
    source = write_tree(tmp_path / "src", {"requirements.txt": "flask\n"})
    plan = InstallPlan(
        "requirements.txt",
        (PipStep(("-r", str(source / "requirements.txt")), source),),
        frozenset({"flask"}),
    )
    output = Output()
    venv = ensure_venv(
        plan=plan, interpreter=probe_interpreter(), cache=home / "venvs", output=output
    )
    assert "Successfully installed" in output.text
    assert _owned_by_root_and_read_only(venv) == []
    # Another unprivileged user (an instance's) imports and runs it, but cannot change it,
    # even where it is shown writable.
    reader = FIRST_UID + UID_RANGE + 12345
    probe = (
        "import flask, pathlib, sys; print(flask.__name__)\n"
        "try:\n"
        f"    pathlib.Path({str(venv)!r}, 'lib', 'pwned').write_text('x')\n"
        "except PermissionError:\n"
        "    print('read-only')\n"
    )
    command = sandbox.command(
        [str(venv / "bin" / "python"), "-c", probe],
        uid=reader,
        cwd=Path("/"),
        tmp=_private_tmp(tmp_path, reader),
        mounts=[Mount(venv, writable=True), *_interpreter_mounts(venv)],
        hide=[home],
    )
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["flask", "read-only"]


def _private_tmp(tmp_path: Path, uid: int) -> Path:
    tmp = tmp_path / f"tmp-{uid}"
    tmp.mkdir()
    os.chown(tmp, uid, uid)
    return tmp


def _interpreter_mounts(venv: Path) -> list[Mount]:
    home = next(
        line.split("=", 1)[1].strip()
        for line in (venv / "pyvenv.cfg").read_text().splitlines()
        if line.startswith("home")
    )
    return [Mount(Path(home).parent)]


@AS_ROOT
def test_seal_gives_everything_to_root_readable_by_all(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "tool").write_text("#!/bin/sh\n")
    (venv / "bin" / "tool").chmod(0o4777)  # set-uid, writable by all
    (venv / "private").mkdir(mode=0o000)
    (venv / "lib.py").write_text("x = 1\n")
    (venv / "lib.py").chmod(0o600)
    os.mkfifo(venv / "pipe")
    outside = tmp_path / "outside"
    outside.write_text("secret")
    outside.chmod(0o600)
    (venv / "link").symlink_to(outside)
    for path in [venv, *venv.rglob("*")]:
        os.lchown(path, 1_790_000_001, 1_790_000_001)
    seal(venv)
    assert _owned_by_root_and_read_only(venv) == []
    assert stat.S_IMODE((venv / "bin" / "tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((venv / "private").stat().st_mode) == 0o755
    assert stat.S_IMODE((venv / "lib.py").stat().st_mode) == 0o644
    assert not (venv / "pipe").exists()
    assert os.readlink(venv / "link") == str(outside)
    assert stat.S_IMODE(outside.stat().st_mode) == 0o600  # the link was not followed


def test_processes_of_a_user_nobody_is() -> None:
    assert processes_of(FIRST_UID + UID_RANGE - 1) == []
    assert os.getpid() in processes_of(os.getuid())
