"""Test fakes shared by the whole suite: simulated time and free loopback ports.

Tests import them as `from fakes import Clock, free_port` (tests/ is on sys.path through its
conftest.py).
"""

from __future__ import annotations

import socket


class Clock:
    """Simulated time: a callable that returns `now`, which tests move by hand."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's pick for an ephemeral bind)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])
