"""Instance output read from a real pipe: lines whole, in order, and nothing lost at the end."""

from __future__ import annotations

import asyncio
import gc
import io
import os
import subprocess
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import uvloop

from homerun.runtime import output
from homerun.runtime.output import MAX_LINE_BYTES, pump

Run = Callable[[Coroutine[Any, Any, None]], None]


@pytest.fixture(params=["uvloop", "asyncio"])
def run(request: pytest.FixtureRequest) -> Run:
    """The daemon runs on uvloop, whose pipe transports are its own; asyncio's too."""
    return uvloop.run if request.param == "uvloop" else asyncio.run


def collect(run: Run, program: str) -> list[tuple[str, str]]:
    """Run `program` with its stdout on a pipe read by pump(); the lines it handed on."""

    lines: list[tuple[str, str]] = []
    read_end, write_end = os.pipe()
    with subprocess.Popen([sys.executable, "-c", program], stdout=write_end) as process:
        os.close(write_end)
        hand_on = pump(read_end, "stdout", lambda *line: lines.append(line))
        run(asyncio.wait_for(hand_on, 30))
        assert process.wait(timeout=30) == 0
    return lines


def test_lines_arrive_whole_and_in_order_however_the_writes_cut_them(run: Run) -> None:
    program = (
        "import os, time\n"
        "for n in range(2000):\n"
        "    os.write(1, b'line %d' % n)\n"  # a line in two writes, the newline later
        "    os.write(1, b'\\r\\n' if n % 2 else b'\\n')\n"
        "    if n % 500 == 0: time.sleep(0.08)\n"  # a pause longer than a batch
    )
    assert collect(run, program) == [("stdout", f"line {n}") for n in range(2000)]


def test_a_last_line_without_newline_and_an_empty_line_are_kept(run: Run) -> None:
    program = "import sys; sys.stdout.write('first\\n\\nlast, no newline')"
    assert collect(run, program) == [
        ("stdout", "first"),
        ("stdout", ""),
        ("stdout", "last, no newline"),
    ]


def test_a_line_longer_than_the_limit_comes_in_pieces(run: Run) -> None:
    size = MAX_LINE_BYTES * 2 + 10
    lines = collect(run, f"import sys; sys.stdout.write('x' * {size} + '\\nafter\\n')")
    assert [len(text) for _, text in lines] == [MAX_LINE_BYTES, MAX_LINE_BYTES, 10, 5]
    assert lines[-1] == ("stdout", "after")


def test_invalid_utf8_is_replaced_not_fatal(run: Run) -> None:
    lines = collect(run, "import os; os.write(1, b'caf\\xe9\\nok\\n')")
    assert lines == [("stdout", "caf\ufffd"), ("stdout", "ok")]


def test_a_busy_writer_is_read_in_batches(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """5,000 lines written one by one, as an access log does: far fewer reads than lines."""
    reads = 0
    original = output._Lines.data_received

    def counting(self: output._Lines, data: bytes) -> None:
        nonlocal reads
        reads += 1
        original(self, data)

    monkeypatch.setattr(output._Lines, "data_received", counting)
    program = (
        "import os, time\n"
        "for n in range(5000):\n"
        "    os.write(1, b'GET / 200 %d\\n' % n)\n"
        "    if n % 50 == 0: time.sleep(0.001)\n"
    )
    lines = collect(run, program)
    assert lines == [("stdout", f"GET / 200 {n}") for n in range(5000)]
    assert reads < 1000, reads


def test_the_pipe_is_closed_once(run: Run, monkeypatch: pytest.MonkeyPatch) -> None:
    """A descriptor closed twice closes whatever another thread was given that number in
    between (under uvloop a builder's subprocess failed with EBADF at 700 services). Whoever
    closes the pipe last must find it still open, or must not close it at all."""
    closes: list[tuple[bool, bool]] = []  # (the file object owned the descriptor, it was open)

    class Probe(io.FileIO):
        def close(self) -> None:
            if not self.closed:
                try:
                    os.fstat(self.fileno())
                    closes.append((self.closefd, True))
                except OSError:
                    closes.append((self.closefd, False))
            super().close()

    def probed(fd: int, mode: str, buffering: int = -1, closefd: bool = True) -> Probe:
        assert (mode, buffering) == ("rb", 0)
        return Probe(fd, "rb", closefd=closefd)

    monkeypatch.setattr(output.os, "fdopen", probed)
    for _ in range(3):
        assert collect(run, "print('hello')") == [("stdout", "hello")]
    gc.collect()
    assert len(closes) == 3
    assert all(open_then or not owned for owned, open_then in closes), closes
