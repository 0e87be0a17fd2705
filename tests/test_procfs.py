"""What /proc says about processes: the marked processes of a command, real processes."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from homerun.procfs import marked_processes, process_tree

MARK = f"HOMERUN_EXEC={os.urandom(4).hex()}"


@contextmanager
def started(argv: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(argv, env=env, start_new_session=True)
    try:
        yield process
    finally:
        os.killpg(process.pid, 9)
        process.wait()


def children_of(pid: int, count: int) -> list[int]:
    deadline = time.monotonic() + 10
    while len(tree := [p for p in process_tree(pid) if p != pid]) < count:
        assert time.monotonic() < deadline, f"{pid} did not start {count} processes"
        time.sleep(0.02)
    return tree


def test_the_marked_command_and_what_it_started_are_found_and_nothing_else() -> None:
    path = {"PATH": os.environ["PATH"]}
    # The child clears its environment: it is found as the marked command's descendant.
    script = "env -i sleep 300 & wait"
    with (
        started(["sh", "-c", script], {**path, "HOMERUN_EXEC": MARK.split("=")[1]}) as marked,
        started(["sh", "-c", "sleep 300 & wait"], path) as other,
    ):
        (child,) = children_of(marked.pid, 1)
        children_of(other.pid, 1)
        found = {process.pid for process in marked_processes(os.getpid(), MARK.encode())}
        assert found == {marked.pid, child}


def test_a_marked_process_in_another_pid_namespace_is_not_found() -> None:
    env = {"PATH": os.environ["PATH"], "HOMERUN_EXEC": MARK.split("=")[1]}
    with (
        started(["sleep", "300"], env) as here,
        started(["unshare", "--pid", "--fork", "sleep", "300"], {"PATH": os.environ["PATH"]}) as ns,
    ):
        (inside,) = children_of(ns.pid, 1)
        assert {p.pid for p in marked_processes(inside, MARK.encode())} == set()
        assert {p.pid for p in marked_processes(os.getpid(), MARK.encode())} == {here.pid}


def test_a_member_that_is_gone_finds_nothing() -> None:
    process = subprocess.Popen(["true"])
    process.wait()
    assert marked_processes(process.pid, MARK.encode()) == []
