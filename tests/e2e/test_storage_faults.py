"""Storage faults against a real daemon: a full disk during a build and while logs are written
(a small tmpfs mounted for the test, unmounted after it), and a damaged or locked store at
start. Each gets a clear error; nothing on disk is left corrupt; the service keeps serving."""

from __future__ import annotations

import contextlib
import os
import shutil
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import (
    APPS,
    HOMERUN,
    Platform,
    describe,
    free_port,
    json_lines_whole,
    running_platform,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WHOAMI = APPS / "whoami"
MiB = 1024 * 1024


@contextlib.contextmanager
def tmpfs(path: Path, size: int) -> Iterator[Path]:
    """A tmpfs of `size` bytes mounted on `path` for the block; unmounted whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        if subprocess.run(["umount", str(path)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(path)], check=False)


def fill(folder: Path, leave: int) -> Path:
    """A file that takes the filesystem's free space but `leave` bytes."""
    filler = folder / "filler"
    stat = os.statvfs(folder)
    size = max(stat.f_bavail * stat.f_frsize - leave, 0)
    with open(filler, "wb") as file:
        chunk = b"\0" * MiB
        with contextlib.suppress(OSError):
            while size > 0:
                size -= file.write(chunk[: min(size, MiB)])
                file.flush()
    return filler


def until(condition: object, what: str, within: float = 30.0) -> None:
    assert callable(condition)
    deadline = time.monotonic() + within
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


# -- a full disk --------------------------------------------------------------------------


def test_a_full_disk_during_a_build_fails_the_deploy_clearly(
    tmp_path: Path, venv_cache: Path
) -> None:
    with (
        tmpfs(tmp_path / "home", 48 * MiB) as home,
        running_platform(home, venv_cache, {"stop-grace-seconds": 3}) as platform,
    ):
        platform.deploy_ok("roomy", WHOAMI)
        ready = platform.request("roomy", "GET", "/").json()["K_REVISION"]
        big = tmp_path / "big"
        shutil.copytree(WHOAMI, big)
        (big / "data.bin").write_bytes(os.urandom(8 * MiB))
        filler = fill(home, leave=2 * MiB)  # room for the store and logs, not for the build

        failed = platform.deploy("roomy", big)
        assert failed.returncode != 0, describe(failed)
        assert "No space left on device" in failed.stderr, describe(failed)
        assert "internal error" not in failed.stderr, describe(failed)
        assert str(home) in failed.stderr, describe(failed)  # where it ran out
        # Nothing half built is left, the store is whole, the service serves as before.
        until(
            lambda: sorted(p.name for p in (home / "revisions").iterdir()) == [ready],
            "the half-built artifact to go",
        )
        assert platform.request("roomy", "GET", "/").json()["K_REVISION"] == ready
        with contextlib.closing(sqlite3.connect(f"file:{home}/homerun.db?mode=ro", uri=True)) as db:
            assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert json_lines_whole(home / "logs") == []

        filler.unlink()  # room again: the same deploy works
        platform.deploy_ok("roomy", big)
        assert platform.request("roomy", "GET", "/").json()["K_REVISION"] != ready


def test_a_full_disk_while_writing_logs_loses_entries_not_lines(
    tmp_path: Path, venv_cache: Path
) -> None:
    home = tmp_path / "home"
    with tmpfs(home / "logs", 1 * MiB) as logs:
        with running_platform(home, venv_cache, {"stop-grace-seconds": 3}) as platform:
            platform.deploy_ok("chatty", WHOAMI)
            filler = fill(logs, leave=0)

            def burst() -> None:
                with platform.client("chatty", timeout=10) as client:
                    for _ in range(50):  # request log entries: ~25 KB a second
                        assert client.get("/").status_code == 200

            def told() -> bool:
                burst()
                return "cannot write the log of chatty" in platform.log_path.read_text()

            until(told, "the daemon to say it cannot write the log")
            said = platform.log_path.read_text()
            assert "No space left on device" in said and "free some space" in said, said
            assert json_lines_whole(logs) == []  # a cut write leaves no half line
            assert platform.run("status").returncode == 0

            filler.unlink()

            def lost_said() -> bool:
                burst()
                read = platform.run("logs", "read", "chatty", "--limit", "500", "--format", "json")
                return "log entries were lost" in read.stdout

            until(lost_said, "the log to say entries were lost")
            read = platform.run("logs", "read", "chatty", "--limit", "500", "--format", "json")
            assert "No space left on device" in read.stdout
            assert "is written again" in platform.log_path.read_text()
            assert json_lines_whole(logs) == []


# -- the store at start ---------------------------------------------------------------------


def up(platform: Platform) -> subprocess.CompletedProcess[str]:
    """`homerun up` expected to fail at start (killed after 60 s if it serves instead)."""
    return subprocess.run(
        [*HOMERUN, "up", "--port", str(free_port())],
        env=platform.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_damaged_store_stops_the_start_with_a_clear_error(own_platform: Platform) -> None:
    platform = own_platform
    platform.deploy_ok("kept", WHOAMI)
    assert platform.down().returncode == 0
    database = platform.home / "homerun.db"
    # Once `down` says stopped, the file alone is the store: no write-ahead log is left whose
    # pages would stand in for the damaged ones below.
    assert not Path(f"{database}-wal").exists()
    good = database.read_bytes()

    for damage in (b"not a database at all" * 100, good[:8192] + b"\xff" * 4096 + good[12288:]):
        database.write_bytes(damage)
        started = up(platform)
        assert started.returncode == 1, describe(started)
        message = started.stderr
        assert f"the store {database} is damaged" in message, describe(started)
        assert "Restore it from a backup" in message and "move it" in message, message
        assert "Traceback" not in message, message
        assert database.read_bytes() == damage  # left as it was, for whoever repairs it

    database.write_bytes(good)  # restored: everything is back
    platform.start()
    assert platform.request("kept", "GET", "/").status_code == 200


def test_a_locked_store_stops_the_start_with_a_clear_error(own_platform: Platform) -> None:
    platform = own_platform
    platform.deploy_ok("waiting", WHOAMI)
    assert platform.down().returncode == 0
    holder = sqlite3.connect(platform.home / "homerun.db", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")  # as an sqlite3 shell in a transaction would
        started = up(platform)
    finally:
        holder.close()
    assert started.returncode == 1, describe(started)
    assert f"the store {platform.home / 'homerun.db'} is locked" in started.stderr
    assert f"pid {os.getpid()} " in started.stderr, started.stderr  # who holds it
    assert "start homerun again" in started.stderr and "Traceback" not in started.stderr

    platform.start()  # the lock is gone: it starts
    assert platform.request("waiting", "GET", "/").status_code == 200


def test_a_store_locked_while_serving_fails_changes_clearly_and_not_the_router(
    own_platform: Platform,
) -> None:
    """Another program holds the store's write lock (an sqlite3 shell in a transaction): a
    change says so (503 from the admin API, the deploy's error), the router keeps answering
    (a write waits 0.5 s for the lock, not 5 s, on the event loop), and once the lock is given
    back the same change works."""
    platform = own_platform
    platform.deploy_ok("busy", WHOAMI, "--min-instances", "1")
    latencies: list[float] = []
    stop = threading.Event()

    def load() -> None:
        with platform.client("busy", timeout=10) as client:
            deadline = time.monotonic() + 60  # bounded whatever happens
            for _ in range(20_000):
                if stop.is_set() or time.monotonic() > deadline:
                    return
                started = time.monotonic()
                assert client.get("/").status_code == 200
                latencies.append(time.monotonic() - started)
                time.sleep(0.01)

    loader = threading.Thread(target=load)
    loader.start()
    holder = sqlite3.connect(platform.home / "homerun.db", isolation_level=None)
    try:
        time.sleep(0.5)
        holder.execute("BEGIN EXCLUSIVE")
        update = platform.run("services", "update", "busy", "--update-env-vars", "V=2")
        current = platform.describe_service("busy")["revisions"][0]["name"]
        traffic = platform.run(
            "services", "update-traffic", "busy", "--update-tags", f"x={current}"
        )
        holder.execute("ROLLBACK")
        time.sleep(0.5)
    finally:
        holder.close()
        stop.set()
        loader.join(timeout=60)
    recorded = {r["name"] for r in platform.describe_service("busy")["revisions"]}
    until(
        lambda: {p.name for p in (platform.home / "revisions").iterdir()} == recorded,
        "the artifact of the revision that could not be recorded to go",
    )
    for failed in (update, traffic):
        assert failed.returncode != 0, describe(failed)
        assert "is locked by another program" in failed.stderr, describe(failed)
        assert "internal error" not in failed.stderr, describe(failed)
    assert len(latencies) > 20
    assert max(latencies) < 1.0, f"max {max(latencies):.3f}s over {len(latencies)} requests"
    assert platform.request("busy", "GET", "/").status_code == 200
    platform.run("services", "update", "busy", "--update-env-vars", "V=2", check=True)
    assert platform.request("busy", "GET", "/").json()["K_REVISION"].startswith("busy-00002-")


def test_a_full_disk_while_making_a_virtualenv_says_so_not_fix_the_requirement(
    tmp_path: Path,
) -> None:
    """The virtualenv cache on a full disk: `python -m venv` (ensurepip says nothing of the
    space) and pip fail; the error says the disk is full, not that the interpreter or the
    requirement is to blame."""
    with (
        tmpfs(tmp_path / "venvs", 4 * MiB) as venvs,
        running_platform(tmp_path / "home", venvs, {"stop-grace-seconds": 3}) as platform,
    ):
        failed = platform.deploy("cramped", APPS / "flask_seed")
        assert failed.returncode != 0, describe(failed)
        assert f"The disk that holds {venvs}/" in failed.stderr, describe(failed)
        assert "is full" in failed.stderr and "free some space there" in failed.stderr
        assert "has the venv module" not in failed.stderr, describe(failed)
        assert "Fix the requirement" not in failed.stderr, describe(failed)
        assert [p.name for p in venvs.iterdir() if not p.name.endswith(".lock")] == []
        assert platform.run("status").returncode == 0
