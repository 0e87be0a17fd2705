"""The data plane: an HTTP/1.1 reverse proxy on asyncio + httptools.

CONTRACT (to be implemented):

    resolve(host: str) -> Route | RouteError   # called once per request with the Host header

    router = Router(resolve, max_body_bytes=32 * 1024 * 1024)
    await router.start("127.0.0.1", 8080)      # binds and listens
    ...
    await router.close()                       # stops listening, closes client and upstream conns
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from homerun.routing.throttler import Throttler


class Route(NamedTuple):
    service: str
    revision: str
    throttler: Throttler
    timeout_seconds: float


class RouteError(NamedTuple):
    status: int
    message: str


Resolver = Callable[[str], Route | RouteError]
