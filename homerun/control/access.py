"""Who may call a service: invoker policies as router guards, IAM bindings, ID tokens."""

from __future__ import annotations

from collections.abc import Callable

from homerun.access.guard import AccessPolicy, guard_for
from homerun.access.iam import (
    ALL_USERS,
    INGRESS_INTERNAL,
    check_role,
    parse_member,
    policy_document,
)
from homerun.access.tokens import TokenAuthority
from homerun.control.urls import Urls
from homerun.errors import InvalidSpec
from homerun.model.views import IamPolicy, IdentityToken
from homerun.observe.logs import LogStore, platform_entry
from homerun.routing.types import Guard
from homerun.store import ServiceRecord, Store


def access_policy(
    service: str,
    record: ServiceRecord | None,
    invokers: frozenset[str],
    *,
    owner: str,
    urls: Urls,
) -> AccessPolicy:
    """A service's policy; a service not stored yet (deploying) is private until made."""
    addresses = {urls.service(service)}
    if record is not None:
        addresses |= {urls.tag(service, entry.tag) for entry in record.traffic if entry.tag}
    audiences = {urls.platform} | addresses | {f"{url}/" for url in addresses}
    return AccessPolicy(
        service=service,
        public=ALL_USERS in invokers,
        internal=record is not None and record.ingress == INGRESS_INTERNAL,
        invokers=invokers | {owner},
        audiences=frozenset(audiences),
    )


class Guards:
    """Each service's router guard, built from the store once and kept until `clear()`."""

    def __init__(self, store: Store, authority: TokenAuthority, urls: Urls, owner: str) -> None:
        self._store = store
        self._authority = authority
        self._urls = urls
        self.owner = owner  # the OS user running the daemon: may invoke every service
        self._guards: dict[str, Guard | None] = {}  # None: public, ingress all

    def guard(self, service: str) -> Guard | None:
        if service not in self._guards:
            record = self._store.service(service) if self._store.has_service(service) else None
            invokers = self._store.members(service) if record is not None else frozenset()
            policy = access_policy(service, record, invokers, owner=self.owner, urls=self._urls)
            self._guards[service] = guard_for(policy, self._authority)
        return self._guards[service]

    def clear(self) -> None:
        self._guards.clear()


class Iam:
    """`services add-iam-policy-binding` and friends, `--[no-]allow-unauthenticated` and
    `--ingress` on a service, and ID tokens. Changes take effect on the next request."""

    def __init__(
        self,
        store: Store,
        logs: LogStore,
        authority: TokenAuthority,
        *,
        access_changed: Callable[[], None],
    ) -> None:
        self._store = store
        self._logs = logs
        self._authority = authority
        self._access_changed = access_changed

    def policy(self, service: str) -> IamPolicy:
        self._store.service(service)  # NotFound for an unknown service
        return policy_document(self._store.members(service))

    def add_binding(self, service: str, member: str, role: str) -> IamPolicy:
        self._store.service(service)
        member, role = parse_member(member), check_role(role)
        if self._store.add_member(service, role, member):
            self._access_changed()
            self._logs.emit(platform_entry(service, f"IAM: {member} granted {role}"))
        return self.policy(service)

    def remove_binding(self, service: str, member: str, role: str) -> IamPolicy:
        self._store.service(service)
        member, role = parse_member(member), check_role(role)
        if not self._store.remove_member(service, role, member):
            raise InvalidSpec(
                f"{member} does not hold {role} on {service}; "
                f"`homerun services get-iam-policy {service}` shows who does"
            )
        self._access_changed()
        self._logs.emit(platform_entry(service, f"IAM: {member} no longer holds {role}"))
        return self.policy(service)

    def set_access(
        self, service: str, allow_unauthenticated: bool | None, ingress: str | None
    ) -> list[str]:
        """The service-level flags of a deploy that makes no revision; what they changed."""
        if allow_unauthenticated is None and ingress is None:
            return []
        before = self._store.service(service)
        self._store.set_access(service, allow_unauthenticated, ingress)
        after = self._store.service(service)
        changes = []
        if after.allow_unauthenticated != before.allow_unauthenticated:
            public = "allowed" if after.allow_unauthenticated else "no longer allowed"
            changes.append(f"unauthenticated invocations {public}")
        if after.ingress != before.ingress:
            changes.append(f"ingress set to {after.ingress}")
        self._access_changed()
        return changes

    def mint_identity_token(self, member: str, audience: str | None) -> IdentityToken:
        """An ID token for `member`; without an audience, one good for every service here."""
        member = parse_member(member, "member")
        if member.startswith("all"):
            raise InvalidSpec(f"member: a token is for one user or service account, not {member}")
        audience = audience or self._authority.issuer
        if len(audience) > 2048 or not audience.strip():
            raise InvalidSpec("audience: give a service URL (at most 2048 characters)")
        token = self._authority.mint(member, audience)
        return IdentityToken(token=token, member=member, audience=audience)
