"""Service accounts as identities: a service's own account or `--service-account EMAIL`, one
account whether a binding names it `serviceAccount:NAME` or by its e-mail."""

from __future__ import annotations

import pytest

from homerun.access.guard import AccessPolicy, guard_for
from homerun.access.iam import canonical_member, instance_member
from homerun.access.project import Project
from homerun.access.tokens import TokenAuthority
from homerun.errors import InvalidSpec
from homerun.spec import RevisionChanges, RevisionSpec, check_service_account

URL = "http://renderer.localhost:8080"
PROJECT = Project("my-project")
EDITOR = "serviceAccount:editor"
EDITOR_EMAIL = "serviceAccount:editor@my-project.iam.gserviceaccount.com"
authority = TokenAuthority(b"k" * 32, "http://localhost:8080", project=PROJECT)


def test_a_bare_account_is_the_address_in_the_project() -> None:
    assert canonical_member(EDITOR, PROJECT) == EDITOR_EMAIL
    assert canonical_member(EDITOR_EMAIL, PROJECT) == EDITOR_EMAIL
    assert canonical_member("user:alice", PROJECT) == "user:alice"
    assert canonical_member("allUsers", PROJECT) == "allUsers"


@pytest.mark.parametrize("bound", [EDITOR, EDITOR_EMAIL])
@pytest.mark.parametrize("calling", [EDITOR, EDITOR_EMAIL])
def test_a_binding_admits_the_account_under_either_name(bound: str, calling: str) -> None:
    policy = AccessPolicy(
        service="renderer",
        public=False,
        internal=False,
        invokers=frozenset({bound}),
        audiences=frozenset({URL}),
    )
    guard = guard_for(policy, authority)
    assert guard is not None
    token = b"Bearer " + authority.mint(calling, URL).encode()
    assert guard(token, lambda: None) is None
    other = b"Bearer " + authority.mint("serviceAccount:other", URL).encode()
    refusal = guard(other, lambda: None)
    assert refusal is not None and refusal.status == 403


def test_an_access_token_is_refused_with_what_to_send_instead() -> None:
    policy = AccessPolicy("renderer", False, False, frozenset({EDITOR}), frozenset({URL}))
    guard = guard_for(policy, authority)
    assert guard is not None
    refusal = guard(b"Bearer ya29.homerun.xyz", lambda: None)
    assert refusal is not None and refusal.status == 401 and "ID token" in refusal.message


def test_instances_run_as_their_service_account_or_the_services_own() -> None:
    assert instance_member("editor", None) == EDITOR
    assert instance_member("editor", "runner@my-project.iam.gserviceaccount.com") == (
        "serviceAccount:runner@my-project.iam.gserviceaccount.com"
    )


@pytest.mark.parametrize(
    "account",
    ["editor", "runner@my-project.iam.gserviceaccount.com",
     "123456789012-compute@developer.gserviceaccount.com"],
)  # fmt: skip
def test_service_accounts_accepted(account: str) -> None:
    assert check_service_account(account, "--service-account") == account


@pytest.mark.parametrize(
    "account", ["Editor", "alice@example.com", "a@b", "-x", "x@.gserviceaccount.com", "a b"]
)
def test_service_accounts_refused_with_the_forms_that_work(account: str) -> None:
    with pytest.raises(InvalidSpec, match="--service-account: .*NAME@PROJECT"):
        check_service_account(account, "--service-account")


def test_the_flag_changes_the_next_revision_and_empty_goes_back() -> None:
    base = RevisionSpec(source="/src")
    email = "runner@my-project.iam.gserviceaccount.com"
    changed = RevisionChanges(service_account=email).apply(base)
    assert changed.service_account == email
    assert RevisionChanges().apply(changed).service_account == email  # kept when not given
    assert RevisionChanges(service_account="").apply(changed).service_account is None
    with pytest.raises(InvalidSpec, match="--service-account"):
        RevisionChanges(service_account="Nope").apply(base)
