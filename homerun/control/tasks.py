"""The control plane's background work: tasks it owns, and deploys streamed to their caller."""

from __future__ import annotations

import asyncio
import secrets
import shutil
from collections.abc import AsyncIterator, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from homerun.errors import HomerunError
from homerun.model.events import DeployEvent, Failed

Emit = Callable[[DeployEvent], None]
Event = TypeVar("Event")  # a stream's events: deploys', builds', jobs' or worker pools'
TRASH_PREFIX = ".trash-"  # folders being deleted; a restart finishes their deletion


class Tasks:
    """Every task the control plane starts, so that closing it cancels them all."""

    def __init__(self) -> None:
        self._running: set[asyncio.Task[Any]] = set()

    def spawn(self, coroutine: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coroutine)
        self._running.add(task)
        task.add_done_callback(self._running.discard)
        return task

    def discard(self, path: Path) -> None:
        """Remove a folder without blocking the loop: moved out of the way at once (renamed
        `.trash-NAME-xyz` beside it), deleted in a thread (a virtualenv is many files)."""
        if not path.exists():
            return
        trash = path.with_name(f"{TRASH_PREFIX}{path.name}-{secrets.token_hex(3)}")
        try:
            path.rename(trash)
        except OSError:
            trash = path
        self.spawn(asyncio.to_thread(shutil.rmtree, trash, True))

    def stream(
        self, work: Callable[[Callable[[Event], None]], Coroutine[Any, Any, None]]
    ) -> AsyncIterator[Event | Failed]:
        """Run `work` as a task and stream what it emits until it ends; an error ends the
        stream with a `Failed` event. The caller may go away without stopping the work."""
        events: asyncio.Queue[Event | Failed | None] = asyncio.Queue()
        emit = events.put_nowait

        async def run() -> None:
            try:
                await work(emit)
            except HomerunError as error:
                emit(Failed(message=str(error)))
            except Exception as error:  # a bug: report it rather than leave the client hanging
                emit(Failed(message=f"internal error: {error!r}"))
                raise

        task = self.spawn(run())
        task.add_done_callback(lambda _: events.put_nowait(None))
        return _drain(events)

    async def close(self) -> None:
        for task in list(self._running):
            task.cancel()
        await asyncio.gather(*self._running, return_exceptions=True)


async def _drain(events: asyncio.Queue[Event | None]) -> AsyncIterator[Event]:
    while (event := await events.get()) is not None:
        yield event
