"""Progress on long CLI work: a spinner with elapsed time on a terminal, plain lines elsewhere."""

from __future__ import annotations

import os
import sys
import threading
import time
from types import TracebackType
from typing import TextIO

FRAMES = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
FRAME_SECONDS = 0.1
DEFAULT_COLUMNS = 80


class Progress:
    """`step(text)` names what runs now; `detail(text)` says what it is doing at the moment
    (an app's last line while it starts); `line(text)` prints output above the spinner."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream or sys.stdout
        self._animate = self._stream.isatty()
        self._lock = threading.Lock()
        self._step: str | None = None
        self._step_started = 0.0
        self._detail: str | None = None
        self._done = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Progress:
        if self._animate:
            self._thread = threading.Thread(target=self._spin, daemon=True)
            self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
        with self._lock:
            self._finish_step_locked(ok=exc is None)

    def step(self, text: str) -> None:
        with self._lock:
            self._finish_step_locked()
            self._step = text
            self._step_started = time.monotonic()
            self._detail = None
            if not self._animate:
                self._stream.write(text + "\n")
                self._stream.flush()

    def detail(self, text: str) -> None:
        """Beside the spinner on a terminal; elsewhere a line of its own, once per change."""
        with self._lock:
            if text == self._detail:
                return
            self._detail = text
            if not self._animate:
                self._stream.write(f"  {text}\n")
                self._stream.flush()

    def line(self, text: str) -> None:
        with self._lock:
            if self._animate:
                self._stream.write("\r\033[K")
            self._stream.write(text + "\n")
            self._stream.flush()

    def _finish_step_locked(self, ok: bool = True) -> None:
        if self._step is not None and self._animate:
            elapsed = time.monotonic() - self._step_started
            mark = "✓" if ok else "✗"
            self._stream.write(f"\r\033[K{mark} {self._step} ({elapsed:.1f}s)\n")
            self._stream.flush()
        self._step = None

    def _columns(self) -> int:
        try:
            columns = os.get_terminal_size(self._stream.fileno()).columns
        except (OSError, ValueError):
            return DEFAULT_COLUMNS
        return columns if columns > 0 else DEFAULT_COLUMNS  # a new pty may say 0

    def _spin(self) -> None:
        frame = 0
        while not self._done.wait(FRAME_SECONDS):
            with self._lock:
                if self._step is None:
                    continue
                elapsed = time.monotonic() - self._step_started
                status = f"{FRAMES[frame % len(FRAMES)]} {self._step} ({elapsed:.1f}s)"
                if self._detail:
                    status += f": {self._detail}"
                # One screen line, or the next redraw (\r) would not erase what wrapped.
                self._stream.write(f"\r\033[K{status[: self._columns() - 1]}")
                self._stream.flush()
            frame += 1
