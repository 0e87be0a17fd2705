"""The daemon's HTTP servers (the admin API, the dashboard, the metadata server) on uvicorn
inside the daemon's own event loop, and the Unix socket the admin API listens on."""

from __future__ import annotations

import asyncio
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

    async def serve_socket(self, sock: socket.socket) -> asyncio.Server:
        """Serve a listening socket too, once the server has started (one in a revision's
        network namespace, runtime/netns.py), as uvicorn serves those it started with: shut
        down with them, or by `close_socket` before."""
        for _ in range(_START_POLLS):
            if self.started:
                break
            await asyncio.sleep(_START_POLL_SECONDS)
        else:
            raise RuntimeError("the server did not start")
        config, state, app_state = self.config, self.server_state, self.lifespan.state

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=state, app_state=app_state, _loop=_loop
            )

        loop = asyncio.get_running_loop()
        server = await loop.create_server(create_protocol, sock=sock, backlog=config.backlog)
        self.servers.append(server)
        return server

    def close_socket(self, server: asyncio.Server) -> None:
        if server in self.servers:
            self.servers.remove(server)
        server.close()


_START_POLLS = 1000
_START_POLL_SECONDS = 0.01


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
