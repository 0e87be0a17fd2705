"""ProcessSampler on real process trees: a parent and the workers it starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil
import pytest

from homerun.observe.processes import ProcessSampler

# A parent that starts one worker at once and a second on SIGUSR1; each worker holds 30 MiB.
PARENT = """
import signal, subprocess, sys, time
WORKER = [sys.executable, "-c", "b = bytearray(30 * 2**20); import time; time.sleep(60)"]
workers = [subprocess.Popen(WORKER)]
signal.signal(signal.SIGUSR1, lambda *_: workers.append(subprocess.Popen(WORKER)))
print("ready", flush=True)
time.sleep(60)
"""


@pytest.fixture
def parent() -> Iterator[subprocess.Popen[str]]:
    with subprocess.Popen(
        [sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, start_new_session=True
    ) as process:
        try:
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
            yield process
        finally:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def workers_of(pid: int, count: int) -> list[psutil.Process]:
    deadline = time.monotonic() + 10
    while (children := psutil.Process(pid).children()) and len(children) < count:
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.01)
    return children


def wait_rss(sampler: ProcessSampler, pid: int, above: int) -> int:
    deadline = time.monotonic() + 10
    while True:
        usage = sampler.usage(pid)
        assert usage is not None
        if usage.rss_bytes > above or time.monotonic() > deadline:
            return usage.rss_bytes
        time.sleep(0.05)


def test_usage_counts_the_workers_and_one_started_since_the_last_sample(
    parent: subprocess.Popen[str],
) -> None:
    sampler = ProcessSampler()
    workers_of(parent.pid, 1)
    one_worker = wait_rss(sampler, parent.pid, above=30 * 2**20)
    assert one_worker > 30 * 2**20  # the worker's 30 MiB are counted with the parent's

    parent.send_signal(signal.SIGUSR1)
    workers_of(parent.pid, 2)
    assert wait_rss(sampler, parent.pid, above=one_worker + 25 * 2**20) > one_worker + 25 * 2**20


def test_a_worker_that_exits_is_dropped_and_a_gone_parent_has_no_usage(
    parent: subprocess.Popen[str],
) -> None:
    sampler = ProcessSampler()
    (worker,) = workers_of(parent.pid, 1)
    wait_rss(sampler, parent.pid, above=30 * 2**20)
    worker.kill()  # a zombie until its parent reaps it, which this one does not
    deadline = time.monotonic() + 10
    while (usage := sampler.usage(parent.pid)) and usage.rss_bytes > 30 * 2**20:
        assert time.monotonic() < deadline, "the killed worker is still counted"
        time.sleep(0.05)
    assert usage is not None

    os.killpg(parent.pid, signal.SIGKILL)
    parent.wait()
    assert sampler.usage(parent.pid) is None


# A parent that, for each line on stdin, runs a child burning 0.3 s of CPU and reaps it.
RUNNER = """
import subprocess, sys
BUSY = "import time\\nend = time.process_time() + 0.3\\nwhile time.process_time() < end: pass"
print("ready", flush=True)
for line in sys.stdin:
    subprocess.run([sys.executable, "-c", BUSY], check=True)
    print("done", flush=True)
"""


def test_cpu_time_of_a_child_that_exited_stays_counted() -> None:
    with subprocess.Popen(
        [sys.executable, "-c", RUNNER], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        start_new_session=True,
    ) as runner:  # fmt: skip
        try:
            assert runner.stdin is not None and runner.stdout is not None
            assert runner.stdout.readline() == "ready\n"
            sampler = ProcessSampler()
            before = sampler.usage(runner.pid)
            assert before is not None
            runner.stdin.write("go\n")
            runner.stdin.flush()
            assert runner.stdout.readline() == "done\n"  # the child ran and was reaped
            after = sampler.usage(runner.pid)
            assert after is not None
            assert after.cpu_seconds - before.cpu_seconds >= 0.25, (before, after)
        finally:
            os.killpg(runner.pid, signal.SIGKILL)
            runner.wait()
