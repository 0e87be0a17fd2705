"""Members, the role and ingress values, as gcloud spells them."""

from __future__ import annotations

import pytest

from homerun.access.iam import (
    check_ingress,
    check_role,
    instance_member,
    may_invoke,
    parse_member,
    policy_document,
)
from homerun.errors import InvalidSpec


@pytest.mark.parametrize(
    "member",
    [
        "allUsers",
        "allAuthenticatedUsers",
        "user:alice",
        "user:alice@example.com",
        "serviceAccount:caller",
        "serviceAccount:run@project.iam.gserviceaccount.com",
    ],
)
def test_members_accepted(member: str) -> None:
    assert parse_member(member) == member


@pytest.mark.parametrize(
    ("member", "says"),
    [
        ("alice", "not a member"),
        ("user:", "the name after"),
        ("group:devs", "not a member"),
        ("user:a b", "the name after"),
        ("serviceAccount:../x", "the name after"),
        ("allusers", "not a member"),
    ],
)
def test_members_refused_with_the_forms_that_work(member: str, says: str) -> None:
    with pytest.raises(InvalidSpec, match=says) as raised:
        parse_member(member)
    assert "--member" in str(raised.value)


def test_one_role_and_two_ingress_values() -> None:
    assert check_role("roles/run.invoker") == "roles/run.invoker"
    with pytest.raises(InvalidSpec, match="roles/run.invoker"):
        check_role("roles/run.admin")
    assert [check_ingress(value) for value in ("all", "internal")] == ["all", "internal"]
    with pytest.raises(InvalidSpec, match="'all'"):
        check_ingress("internal-and-cloud-load-balancing")


def test_who_may_invoke() -> None:
    assert may_invoke(frozenset({"user:alice"}), "user:alice")
    assert not may_invoke(frozenset({"user:alice"}), "user:bob")
    assert may_invoke(frozenset({"allAuthenticatedUsers"}), "user:bob")
    assert may_invoke(frozenset({"allUsers"}), "serviceAccount:x")
    assert instance_member("svc", None) == "serviceAccount:svc"
    assert instance_member("svc", "runner") == "serviceAccount:runner"


def test_the_policy_as_gcloud_prints_it() -> None:
    assert policy_document([]).model_dump() == {"bindings": [], "version": 1}
    assert policy_document(["user:b", "allUsers"]).model_dump() == {
        "bindings": [{"members": ["allUsers", "user:b"], "role": "roles/run.invoker"}],
        "version": 1,
    }
