"""What every benchmark needs to start, reach, stop and label what it measures."""

from __future__ import annotations

import contextlib
import datetime
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

REPO_ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
