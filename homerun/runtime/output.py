"""An instance's stdout and stderr, read from a pipe and handed on a line at a time.

Many servers print a line per request (uvicorn's access log): read as it comes, that is one
wakeup and one read system call of the daemon per request, the event loop the router runs
on. After each read the pipe rests for `BATCH_SECONDS`, so that a busy instance's lines
are taken a batch at a time; a quiet one's first line still arrives at once. A pipe that
fills faster than that (a burst over the pipe's 64 KiB) is read again without a rest.
"""

from __future__ import annotations

import asyncio
import os
from typing import cast

from homerun.runtime.base import OutputSink

BATCH_SECONDS = 0.05
DRAIN_SECONDS = 1.0
# A line longer than this (in characters) is handed on in pieces of this size.
MAX_LINE_BYTES = 64 * 1024
# A read this large means output comes faster than it is read: no rest before the next.
_BUSY_READ_BYTES = 32 * 1024


async def drain(readers: list[asyncio.Task[None]]) -> None:
    """Let the pumps of an instance that exited take its last lines (a traceback printed right
    before exit), for `DRAIN_SECONDS` at most: a worker left in its group may hold the pipe."""
    if readers:
        await asyncio.wait(readers, timeout=DRAIN_SECONDS)


async def pump(fd: int, name: str, output: OutputSink) -> None:
    """Hand on the lines written to the pipe `fd` (closed here) until its writers are gone."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    # uvloop hands the descriptor itself to libuv, which closes it; a file object owning it
    # would close the same number again later (uvloop issue 763), by then perhaps another
    # thread's new file or socket. asyncio's pipe transport closes it through the file object.
    owned_by_loop = type(loop).__module__.startswith("uvloop")
    pipe = os.fdopen(fd, "rb", buffering=0, closefd=not owned_by_loop)
    transport, _ = await loop.connect_read_pipe(lambda: _Lines(name, output, done), pipe)
    try:
        await done
    finally:
        transport.close()


class _Lines(asyncio.Protocol):
    def __init__(self, name: str, output: OutputSink, done: asyncio.Future[None]) -> None:
        self._name = name
        self._output = output
        self._done = done
        self._buffer = bytearray()
        self._transport: asyncio.ReadTransport | None = None
        self._rest: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's pipe transports have the ReadTransport methods without being subclasses.
        self._transport = cast(asyncio.ReadTransport, transport)

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        self._hand_on(final=False)
        if len(data) < _BUSY_READ_BYTES and self._transport is not None:
            self._transport.pause_reading()
            self._rest = asyncio.get_running_loop().call_later(BATCH_SECONDS, self._resume)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._rest is not None:
            self._rest.cancel()
        self._hand_on(final=True)
        if not self._done.done():
            self._done.set_result(None)

    def _resume(self) -> None:
        self._rest = None
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()

    def _hand_on(self, *, final: bool) -> None:
        buffer = self._buffer
        end = buffer.rfind(b"\n") + 1
        if end:
            # Decoded a batch at a time; a character cut by the read ends after the newline.
            for line in buffer[: end - 1].decode("utf-8", "replace").split("\n"):
                self._line(line)
            del buffer[:end]
        if len(buffer) > MAX_LINE_BYTES or (final and buffer):
            # A line this long without its end yet, or the last one without a newline.
            self._line(buffer.decode("utf-8", "replace"))
            buffer.clear()

    def _line(self, line: str) -> None:
        for start in range(0, max(len(line), 1), MAX_LINE_BYTES):
            self._output(self._name, line[start : start + MAX_LINE_BYTES].rstrip("\r"))
