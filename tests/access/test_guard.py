"""The router's check for private and internal services: 401 without a valid token for the
service, 403 for a valid token of a member who is not an invoker or a caller from outside."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from homerun.access.guard import AccessPolicy, Guard, guard_for
from homerun.access.tokens import TokenAuthority

URL = "http://svc.localhost:8080"
PLATFORM = "http://localhost:8080"
authority = TokenAuthority(b"k" * 32, PLATFORM)


def policy(**changes: Any) -> AccessPolicy:
    base = AccessPolicy(
        service="svc",
        public=False,
        internal=False,
        invokers=frozenset({"user:alice", "serviceAccount:caller"}),
        audiences=frozenset({URL, URL + "/", PLATFORM}),
    )
    return base._replace(**changes)


def bearer(member: str, audience: str = URL) -> bytes:
    return b"Bearer " + authority.mint(member, audience).encode()


def nobody() -> str | None:
    return None


def instance(member: str) -> Callable[[], str | None]:
    return lambda: member


def status(
    guard: Guard | None,
    authorization: bytes | None,
    caller: Callable[[], str | None] = nobody,
) -> int:
    assert guard is not None
    denial = guard(authorization, caller)
    return 200 if denial is None else denial.status


def test_a_public_service_with_ingress_all_has_no_guard() -> None:
    assert guard_for(policy(public=True), authority) is None


def test_a_private_service_wants_a_token_of_an_invoker() -> None:
    guard = guard_for(policy(), authority)
    assert status(guard, None) == 401
    assert status(guard, b"Basic YWxpY2U6cHc=") == 401
    assert status(guard, b"Bearer") == 401
    assert status(guard, b"Bearer not-a-token") == 401
    assert status(guard, bearer("user:alice")) == 200
    assert status(guard, bearer("user:alice", URL + "/")) == 200
    assert status(guard, bearer("user:alice", PLATFORM)) == 200
    assert status(guard, b"bearer  " + bearer("user:alice")[7:]) == 200
    assert status(guard, bearer("user:alice", "http://other.localhost:8080")) == 401
    assert status(guard, bearer("user:bob")) == 403
    assert status(guard, bearer("serviceAccount:caller")) == 200


def test_the_refusals_say_what_to_do() -> None:
    guard = guard_for(policy(), authority)
    assert guard is not None
    missing = guard(None, nobody)
    assert missing is not None and "print-identity-token" in missing.message
    assert "--member=allUsers" in missing.message
    denied = guard(bearer("user:bob"), nobody)
    assert denied is not None and "--member=user:bob --role=roles/run.invoker" in denied.message
    wrong = guard(bearer("user:alice", "http://x"), nobody)
    assert wrong is not None and "--audiences" in wrong.message


@pytest.mark.parametrize("invoker", ["allAuthenticatedUsers"])
def test_any_valid_token_for_all_authenticated_users(invoker: str) -> None:
    guard = guard_for(policy(invokers=frozenset({invoker})), authority)
    assert status(guard, bearer("user:anyone")) == 200
    assert status(guard, None) == 401


def test_internal_ingress_admits_instances_only_and_asks_once() -> None:
    asked = []

    def caller() -> str | None:
        asked.append(1)
        return "serviceAccount:caller"

    public_internal = guard_for(policy(public=True, internal=True), authority)
    assert status(public_internal, None) == 403
    assert status(public_internal, None, caller) == 200
    private_internal = guard_for(policy(internal=True), authority)
    assert status(private_internal, None, caller) == 401  # an instance still needs a token
    assert status(private_internal, bearer("serviceAccount:caller"), caller) == 200
    assert status(private_internal, bearer("serviceAccount:caller")) == 403
    assert len(asked) == 3
    # A public service with ingress all never looks at the caller.
    assert guard_for(policy(public=True), authority) is None
