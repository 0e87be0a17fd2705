"""Invoker bindings and ID tokens through the control plane, checked by the router's guard."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from homerun.errors import InvalidSpec
from homerun.routing.types import Route

from .conftest import Plane


def guard_answer(plane: Plane, host: str, token: str | None) -> int:
    route = plane.control.live.resolve(host)
    assert isinstance(route, Route)
    if route.guard is None:
        return 200
    header = f"Bearer {token}".encode() if token else None
    refusal = route.guard(header, lambda: None)
    return 200 if refusal is None else refusal.status


def test_bindings_change_who_may_call_at_the_next_request(make_plane: Callable[..., Plane]) -> None:
    async def scenario(plane: Plane) -> None:
        await plane.deployed("svc", source=str(plane.source))  # deployed public
        iam = plane.control.iam
        host = "svc.localhost:8080"
        assert guard_answer(plane, host, None) == 200
        iam.remove_binding("svc", "allUsers", "roles/run.invoker")
        assert guard_answer(plane, host, None) == 401
        bob = iam.mint_identity_token("user:bob", "http://svc.localhost:8080").token
        assert guard_answer(plane, host, bob) == 403
        policy = iam.add_binding("svc", "user:bob", "roles/run.invoker")
        assert [binding.members for binding in policy.bindings] == [["user:bob"]]
        assert guard_answer(plane, host, bob) == 200
        elsewhere = iam.mint_identity_token("user:bob", "http://other.localhost:8080").token
        assert guard_answer(plane, host, elsewhere) == 401
        await plane.control.close()

    asyncio.run(scenario(make_plane()))


def test_iam_errors_say_what_to_do(make_plane: Callable[..., Plane]) -> None:
    async def scenario(plane: Plane) -> None:
        await plane.deployed("svc", source=str(plane.source))
        with pytest.raises(InvalidSpec, match="get-iam-policy svc"):
            plane.control.iam.remove_binding("svc", "user:carol", "roles/run.invoker")
        with pytest.raises(InvalidSpec, match="one user or service account"):
            plane.control.iam.mint_identity_token("allUsers", None)
        changes = plane.control.iam.set_access("svc", False, "internal")
        assert changes == [
            "unauthenticated invocations no longer allowed",
            "ingress set to internal",
        ]
        await plane.control.close()

    asyncio.run(scenario(make_plane()))
