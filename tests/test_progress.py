"""Progress output: plain lines off a terminal, a spinner with elapsed time on one."""

import io
import os
import pty
import time

from homerun.progress import Progress


def test_plain_lines_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with Progress(stream) as progress:
        progress.step("Building revision svc-00001-abc")
        progress.line("  Collecting flask")
        progress.step("Starting revision svc-00001-abc")
    assert stream.getvalue() == (
        "Building revision svc-00001-abc\n  Collecting flask\nStarting revision svc-00001-abc\n"
    )


def test_spinner_and_ticks_on_a_terminal() -> None:
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w", encoding="utf-8") as terminal:
        with Progress(terminal) as progress:
            progress.step("Starting revision svc-00001-abc")
            time.sleep(0.35)  # a few spinner frames (this is the behaviour under test)
            progress.line("  listening")
        output = b""
        while chunk := _read_available(leader):
            output += chunk
    os.close(leader)
    text = output.decode("utf-8")
    assert "⠋ Starting revision svc-00001-abc (0." in text
    assert "\x1b[K  listening" in text
    assert "✓ Starting revision svc-00001-abc (" in text


def _read_available(fd: int) -> bytes:
    import select

    ready, _, _ = select.select([fd], [], [], 0.2)
    return os.read(fd, 65536) if ready else b""


def test_a_detail_is_a_line_of_its_own_once_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with Progress(stream) as progress:
        progress.step("Starting revision svc-00001-abc")
        for line in ("booting", "booting", "loading model"):
            progress.detail(line)
    assert stream.getvalue() == ("Starting revision svc-00001-abc\n  booting\n  loading model\n")


def test_a_detail_sits_beside_the_spinner_on_a_terminal() -> None:
    leader, follower = pty.openpty()
    with os.fdopen(follower, "w", encoding="utf-8") as terminal:
        with Progress(terminal) as progress:
            progress.step("Starting revision svc-00001-abc")
            progress.detail("loading model")
            time.sleep(0.25)  # a spinner frame or two (this is the behaviour under test)
        output = b""
        while chunk := _read_available(leader):
            output += chunk
    os.close(leader)
    text = output.decode("utf-8")
    assert "Starting revision svc-00001-abc (0." in text and "s): loading model" in text
    assert "✓ Starting revision svc-00001-abc (" in text
