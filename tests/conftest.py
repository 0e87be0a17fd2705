"""Suite-wide test settings: end-to-end tests run after the unit tests, and the run ends with
where its time went (by file, and marked slow or not)."""

from __future__ import annotations

import socket
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from fakes import loopback_listener


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Unit tests take seconds and e2e tests minutes: report the fast failures first. The sort is
    # stable, so each group keeps its file order (and e2e its session fixtures stay shared).
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)


# Seconds of each test file and of the tests marked slow or not (setup, call and teardown).
_seconds_by_file: defaultdict[str, float] = defaultdict(float)
_seconds_by_speed: defaultdict[str, float] = defaultdict(float)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _seconds_by_file[report.nodeid.split("::")[0]] += report.duration
    _seconds_by_speed["slow" if "slow" in report.keywords else "not slow"] += report.duration


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _seconds_by_file:
        return
    write = terminalreporter.write_line
    terminalreporter.section("where the time went")
    speeds = ", ".join(f"{speed} {seconds:.0f} s" for speed, seconds in _seconds_by_speed.items())
    write(f"tests marked: {speeds} (`-m 'not slow'` is the local loop)")
    ranked = sorted(_seconds_by_file.items(), key=lambda pair: -pair[1])
    for path, seconds in ranked[:25]:
        write(f"{seconds:8.1f} s  {path}")


Serve = Callable[[Any], str]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """`serve(asgi_app)` runs the app on a real uvicorn on a loopback port (in a thread) and
    returns its base URL; every server started is stopped after the test."""
    started: list[tuple[uvicorn.Server, threading.Thread, socket.socket]] = []

    def start(app: Any) -> str:
        listener = loopback_listener()
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
        thread.start()
        started.append((server, thread, listener))
        return f"http://127.0.0.1:{listener.getsockname()[1]}"

    try:
        yield start
    finally:
        for server, thread, listener in started:
            server.should_exit = True
            thread.join(timeout=10)
            listener.close()
