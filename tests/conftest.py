"""Suite-wide test settings: end-to-end tests run after the unit tests."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import uvicorn
from fakes import loopback_listener


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Unit tests take seconds and e2e tests minutes: report the fast failures first. The sort is
    # stable, so each group keeps its file order (and e2e its session fixtures stay shared).
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)


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
