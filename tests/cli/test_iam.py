"""`homerun services *-iam-policy*` over a fake client."""

from __future__ import annotations

import json

from .conftest import FakeClient, Run


def test_add_and_remove_a_binding(run: Run, fake: FakeClient) -> None:
    added = run(
        "services",
        "add-iam-policy-binding",
        "hello",
        "--member=user:bob",
        "--role=roles/run.invoker",
    )
    assert added.out == (
        "Updated IAM policy for service [hello].\n"
        "bindings:\n- members:\n  - user:bob\n  role: roles/run.invoker\nversion: 1\n"
    )
    assert fake.called("add_iam_binding") == [("hello", "user:bob", "roles/run.invoker")]
    run(
        "services",
        "remove-iam-policy-binding",
        "hello",
        "--member",
        "user:bob",
        "--role",
        "roles/run.invoker",
    )
    assert fake.called("remove_iam_binding") == [("hello", "user:bob", "roles/run.invoker")]


def test_get_policy(run: Run) -> None:
    assert json.loads(run("services", "get-iam-policy", "hello", "--format", "json").out) == {
        "bindings": [],
        "version": 1,
    }
