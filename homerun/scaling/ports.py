"""Ports of instances on loopback: a free one for each, whether one can be bound or reached, and
what to tell an app that listens on a port of its own."""

from __future__ import annotations

import asyncio
import socket

from homerun.runtime.netns import NetNamespace, open_connection


def wrong_port(port: int, ports: set[int]) -> str:
    """Why an app that listens elsewhere is not ready, and how each server reads PORT."""
    listed = ", ".join(str(p) for p in sorted(ports))
    return (
        f"the app listens on port {listed}, not on $PORT={port}; it must take the port from "
        "the PORT environment variable, e.g.\n"
        '  Flask:    app.run(port=int(os.environ.get("PORT", 8080)))\n'
        "  uvicorn:  uvicorn main:app --port $PORT\n"
        "  gunicorn: gunicorn --bind :$PORT main:app\n"
        "  Django:   python manage.py runserver $PORT (or gunicorn on PKG.wsgi)"
    )


def free_port(taken: set[int]) -> int:
    """A port free now and given to no instance of ours (one that is starting does not listen
    yet, so the kernel may offer its port again)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        if port not in taken:
            return port


def lowest_unprivileged_port() -> int:
    """The lowest port a process that is not root may listen on, on this machine's network
    (1024 unless its ip_unprivileged_port_start says otherwise)."""
    try:
        with open("/proc/sys/net/ipv4/ip_unprivileged_port_start") as setting:
            return int(setting.read())
    except (OSError, ValueError):
        return 1024


def port_is_free(port: int) -> bool:
    """Whether a server could bind the port on loopback now (with SO_REUSEADDR, as servers
    bind: a port whose last connections linger in TIME_WAIT is free)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def can_connect(port: int, network: NetNamespace | None = None) -> bool:
    """Whether something listens on 127.0.0.1:`port` (in `network`, the revision's own network
    namespace, when it has one)."""
    try:
        _, writer = await asyncio.wait_for(open_connection("127.0.0.1", port, network), 1.0)
    except (OSError, TimeoutError):
        return False
    writer.close()
    return True
