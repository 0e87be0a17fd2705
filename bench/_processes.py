"""What every benchmark needs to start, reach, stop and label what it measures."""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx

from homerun.runtime.nat import read_nat_rules, redirected_ports

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parent
RESULTS = BENCH / "results"
# Virtualenvs, logs and daemon homes live here between runs (git-ignored).
WORK = RESULTS / "tmp"
VENV_CACHE = WORK / "venv-cache"  # the revisions' virtualenvs, shared by every benchmark
READY_SECONDS = 30.0

_script = Path(sys.executable).with_name("homerun")
HOMERUN = [str(_script)] if _script.exists() else [sys.executable, "-m", "homerun"]


def free_port() -> int:
    """A free loopback port that no NAT rule sends elsewhere (homerun/runtime/nat.py)."""
    redirected = redirected_ports(read_nat_rules())
    while True:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in redirected:
            return port


def wait_for(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise RuntimeError(f"{what} not ready within {timeout:.0f}s")


def answers(url: str, host: str | None = None, timeout: float = 5.0) -> bool:
    headers = {"Host": host} if host else {}
    try:
        response = httpx.get(url, headers=headers, timeout=timeout, trust_env=False)
    except httpx.HTTPError:
        return False
    return response.status_code == 200


@contextlib.contextmanager
def serving(
    command: list[str],
    url: str,
    what: str,
    log: Path | None,
    *,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    grace: float = 10.0,
) -> Iterator[subprocess.Popen[bytes]]:
    """`command` started in a session of its own, its output in `log` (None: dropped); yields
    the process once `url` answers (within READY_SECONDS), and stops its group on the way out
    (SIGKILL `grace` seconds after SIGTERM)."""
    with contextlib.ExitStack() as files:
        output = files.enter_context(log.open("wb")) if log else subprocess.DEVNULL
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(lambda: process.poll() is None and answers(url), READY_SECONDS, what)
        yield process
    finally:
        stop_group(process, grace=grace)


def stop_group(process: subprocess.Popen, grace: float = 10.0) -> None:
    """SIGTERM the process group we started, then SIGKILL it after `grace` seconds."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


def cached_venv(venv: Path, pip_args: list[str], key: str) -> Path:
    """A virtualenv made with `pip install *pip_args`, kept between runs: it is made again
    only when `key` (what was installed: the package list or requirements.txt's text) changes,
    so a re-run does not reinstall, and benchmarks that install the same key share it."""
    stamp = venv / ".installed"
    if stamp.exists() and stamp.read_text() == key:
        return venv
    print(f"# creating {venv} with pip install {' '.join(pip_args)}", flush=True)
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    installed = subprocess.run([*pip, *pip_args], capture_output=True, text=True, timeout=600)
    if installed.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(pip_args)} failed:\n{installed.stderr}")
    stamp.write_text(key)
    return venv


def core_count() -> int:
    """The cores this process may run on (a container's limit), which client, router and app
    share: what the figures depend on."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 0


def utc_stamp() -> str:
    """The run's time as in the result file names: 20261126T011703Z."""
    return datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")


def git_commit() -> str:
    result = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    return result.stdout.strip() or "unknown"


class Daemon:
    """A fresh homerun daemon (`homerun up` on a free port) with its own HOMERUN_HOME, made in
    `folder` and removed by stop(); `config` is written to its config.yaml."""

    def __init__(self, folder: Path, log: Path, config: dict[str, object] | None = None) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="home-", dir=folder))
        if config:
            (self.home / "config.yaml").write_text(
                "".join(f"{key}: {json.dumps(value)}\n" for key, value in config.items())
            )
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("HOMERUN_")}
        self.env.update(HOMERUN_HOME=str(self.home), HOMERUN_VENV_CACHE=str(VENV_CACHE))
        self.port = free_port()
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None, "start() first"
        return self.process.pid

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*HOMERUN, *args],
            env=self.env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def start(self) -> None:
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                [*HOMERUN, "up", "--port", str(self.port)],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = self.process
        wait_for(
            lambda: process.poll() is None and self.cli("status", timeout=10).returncode == 0,
            READY_SECONDS,
            f"homerun up (log: {self.log})",
        )

    def deploy(self, service: str, folder: Path, *flags: str, timeout: float) -> None:
        """`homerun deploy` of a folder, public (the load generators send no token)."""
        where = folder.relative_to(REPO_ROOT)
        print(f"# deploying {where} as {service} {' '.join(flags)}", flush=True)
        deployed = self.cli(
            "deploy", service, "--source", str(folder), "--allow-unauthenticated", *flags,
            timeout=timeout,
        )  # fmt: skip
        if deployed.returncode != 0:
            raise RuntimeError(f"homerun deploy failed:\n{deployed.stdout}\n{deployed.stderr}")

    def stop(self) -> None:
        """`homerun down`, then the group if anything is left; the home goes too."""
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.cli("down", timeout=60)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=30)
            stop_group(self.process, grace=5)
        shutil.rmtree(self.home, ignore_errors=True)
