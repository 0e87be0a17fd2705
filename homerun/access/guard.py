"""The check the router runs on each request to a private or internal service.

A public service with ingress `all` has no guard at all (`Route.guard is None`): its requests
pay one attribute test. A guarded request pays a dict lookup for a token seen before.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from homerun.access.iam import INVOKER_ROLE, canonical_member, may_invoke
from homerun.access.tokens import TokenAuthority, TokenRejected
from homerun.routing.types import RouteError


class AccessPolicy(NamedTuple):
    service: str
    public: bool  # allUsers holds roles/run.invoker
    internal: bool  # ingress `internal`: only instances of this platform may call
    invokers: frozenset[str]
    # Accepted `aud` claims: the service's URL (with and without a final slash), its tag URLs,
    # and the platform's own audience (tokens of `homerun auth print-identity-token` without
    # --audiences, as Cloud Run takes gcloud's tokens).
    audiences: frozenset[str]


class Guard:
    """Called by the router as guard(authorization header or None, caller); returns the
    refusal, or None to let the request through. `caller()` names the homerun instance that
    opened the connection (its member), or None for anyone else; it looks in /proc, so it is
    called only for internal services, and the router keeps its answer per connection."""

    __slots__ = ("policy", "_authority", "_invokers", "_fix_public", "_fix_invoker")

    def __init__(self, policy: AccessPolicy, authority: TokenAuthority) -> None:
        self.policy = policy
        self._authority = authority
        # Service accounts by e-mail, as Claims.principal names the caller.
        self._invokers = frozenset(
            canonical_member(member, authority.project) for member in policy.invokers
        )
        service = policy.service
        self._fix_public = (
            f"send `Authorization: Bearer $(homerun auth print-identity-token)`, or make the "
            f"service public: `homerun services add-iam-policy-binding {service} "
            f"--member=allUsers --role={INVOKER_ROLE}`"
        )
        self._fix_invoker = (
            f"`homerun services add-iam-policy-binding {service} --member=MEMBER "
            f"--role={INVOKER_ROLE}` grants it"
        )

    def __call__(
        self, authorization: bytes | None, caller: Callable[[], str | None]
    ) -> RouteError | None:
        policy = self.policy
        if policy.internal and caller() is None:
            return RouteError(
                403,
                f"{policy.service} accepts requests from homerun instances only "
                "(ingress: internal)",
            )
        if policy.public:
            return None
        if authorization is None:
            return RouteError(401, f"{policy.service} is private: {self._fix_public}")
        scheme, _, token = authorization.strip().partition(b" ")
        token = token.strip()
        if scheme.lower() != b"bearer" or not token:
            return RouteError(401, "the Authorization header must be `Bearer TOKEN`")
        try:
            claims = self._authority.verify(token)
        except TokenRejected as rejected:
            return RouteError(401, str(rejected))
        if claims.audience not in policy.audiences:
            return RouteError(
                401,
                f"the token's audience {claims.audience!r} is not {policy.service}'s URL; "
                "mint one with --audiences URL",
            )
        if not may_invoke(self._invokers, claims.principal):
            return RouteError(
                403,
                f"{claims.member} may not invoke {policy.service}: it does not hold "
                f"{INVOKER_ROLE} ({self._fix_invoker.replace('MEMBER', claims.member)})",
            )
        return None


def guard_for(policy: AccessPolicy, authority: TokenAuthority) -> Guard | None:
    """None for a public service with ingress all: the router then checks nothing."""
    if policy.public and not policy.internal:
        return None
    return Guard(policy, authority)
