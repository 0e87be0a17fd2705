"""The routing types other packages use: a route and its refusal, resolvers, guards and the
record of a finished request."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from homerun.routing.throttler import Throttler


class Route(NamedTuple):
    service: str
    revision: str
    throttler: Throttler
    timeout_seconds: float
    # Who may call: None lets everyone through (a public service, ingress all) at the cost of
    # this one test; else guard(authorization, caller) returns a RouteError to refuse.
    guard: Guard | None = None


class RouteError(NamedTuple):
    status: int
    message: str


Resolver = Callable[[str], Route | RouteError]
Address = tuple[str, int]
# guard(the Authorization header's value or None, caller) -> None to let the request through.
# caller() names the homerun instance at the other end of the connection, or None.
Guard = Callable[[bytes | None, Callable[[], str | None]], RouteError | None]

# One finished request, as the router hands it to observers (logs, metrics). A plain tuple:
# building it is the only cost the router pays per request; the observer does the rest later.
#   (arrival, finished) perf_counter times, method, url, host, status, request bytes,
#   response bytes, user agent, client address, protocol (b"HTTP/1.1", b"HTTP/1.0",
#   b"HTTP/2"), trace id (32 hex digits, or b""), service, revision, instance, grpc-status
#   (b"": none)
RequestRecord = tuple[
    float, float, bytes, bytes, bytes, int, int, int, bytes, bytes, bytes, bytes,
    str | None, str | None, str | None, bytes,
]  # fmt: skip
