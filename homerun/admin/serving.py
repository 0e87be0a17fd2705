"""The daemon's HTTP servers (the admin API, the dashboard, the metadata server) on uvicorn
inside the daemon's own event loop, and the Unix socket the admin API listens on."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import uvicorn
from starlette.types import ASGIApp


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside our loop: the daemon, not uvicorn, owns the signal handlers."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def embedded(app: ASGIApp) -> EmbeddedServer:
    """A server for `app` that stops within a second of being told to."""
    return EmbeddedServer(
        uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    )


def listening(sock: socket.socket) -> socket.socket:
    """`sock`, which a server here serves on, as the event loop needs it: non-blocking."""
    sock.setblocking(False)
    return sock


def unix_socket(path: Path) -> socket.socket:
    """A listening socket at `path` that only its owner may connect to."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    # The socket is the admin API's only door: only the owner may connect (mode 0600).
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock
