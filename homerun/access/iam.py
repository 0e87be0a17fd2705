"""Invoker IAM as Cloud Run has it: members, the one role, ingress values; no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable

from homerun.access.project import Project
from homerun.errors import InvalidSpec
from homerun.model.views import Binding, IamPolicy

INVOKER_ROLE = "roles/run.invoker"
ALL_USERS = "allUsers"  # anyone, with or without a token: a public service
ALL_AUTHENTICATED_USERS = "allAuthenticatedUsers"  # anyone with a valid token of this platform
USER_PREFIX = "user:"
SERVICE_ACCOUNT_PREFIX = "serviceAccount:"

INGRESS_ALL = "all"
INGRESS_INTERNAL = "internal"
INGRESS_VALUES = (INGRESS_ALL, INGRESS_INTERNAL)

# An OS user name or an e-mail address; a service account is a service name or an e-mail.
_PRINCIPAL = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._%+@-]{0,253}$")


def parse_member(text: str, flag: str = "--member") -> str:
    """`user:NAME`, `serviceAccount:NAME`, `allUsers` or `allAuthenticatedUsers`."""
    if text in (ALL_USERS, ALL_AUTHENTICATED_USERS):
        return text
    for prefix in (USER_PREFIX, SERVICE_ACCOUNT_PREFIX):
        if text.startswith(prefix):
            name = text[len(prefix) :]
            if not _PRINCIPAL.match(name):
                raise InvalidSpec(
                    f"{flag}: {text!r}: the name after {prefix!r} must be a user name or an "
                    "e-mail address (letters, digits and . _ % + @ -)"
                )
            return text
    raise InvalidSpec(
        f"{flag}: {text!r} is not a member; write user:NAME (e.g. user:alice), "
        "serviceAccount:SERVICE or serviceAccount:NAME@PROJECT.iam.gserviceaccount.com (the "
        "identity of a service's instances), allUsers or allAuthenticatedUsers"
    )


def check_role(text: str, flag: str = "--role") -> str:
    if text != INVOKER_ROLE:
        raise InvalidSpec(
            f"{flag}: {text!r} is not supported; homerun services have one role, "
            f"{INVOKER_ROLE} (who may call the service)"
        )
    return text


def check_ingress(text: str, flag: str = "--ingress") -> str:
    if text not in INGRESS_VALUES:
        raise InvalidSpec(
            f"{flag}: {text!r} is not supported; use 'all' (anyone who reaches the router) "
            "or 'internal' (only instances of this homerun)"
        )
    return text


def user_member(name: str) -> str:
    return parse_member(USER_PREFIX + name, "user")


def instance_member(service: str, service_account: str | None) -> str:
    """The identity a service's instances call with: its service account when set
    (`--service-account`, serviceAccountName: as on Cloud Run, a revision runs as it), else the
    service's own account, `serviceAccount:SERVICE`, whose e-mail is
    SERVICE@PROJECT.iam.gserviceaccount.com. (Cloud Run's default is one account for every
    service, PROJECT_NUMBER-compute@developer.gserviceaccount.com; one per service lets a
    binding admit one caller without creating accounts first.)"""
    return SERVICE_ACCOUNT_PREFIX + (service_account or service)


def canonical_member(member: str, project: Project) -> str:
    """The member as IAM compares it: a service account by its e-mail address, so that a binding
    of `serviceAccount:api` (a service's own account, by the name homerun gave it first) and one
    of `serviceAccount:api@PROJECT.iam.gserviceaccount.com` name the same account."""
    if member.startswith(SERVICE_ACCOUNT_PREFIX):
        name = member[len(SERVICE_ACCOUNT_PREFIX) :]
        return SERVICE_ACCOUNT_PREFIX + project.account_email(name)
    return member


def may_invoke(invokers: frozenset[str], member: str) -> bool:
    """Whether a member holding a valid token may call a service granting `invokers`."""
    return member in invokers or ALL_AUTHENTICATED_USERS in invokers or ALL_USERS in invokers


def policy_document(members: Iterable[str]) -> IamPolicy:
    """The IAM policy as gcloud prints it (no etag: one writer, the daemon)."""
    ordered = sorted(members)
    bindings = [Binding(role=INVOKER_ROLE, members=ordered)] if ordered else []
    return IamPolicy(bindings=bindings)
