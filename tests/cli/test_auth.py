"""`homerun auth print-identity-token` over a fake client."""

from __future__ import annotations

from .conftest import FakeClient, Run


def test_the_token_alone_on_the_last_line(run: Run, fake: FakeClient) -> None:
    result = run(
        "auth",
        "print-identity-token",
        "--account",
        "bob",
        "--audiences",
        "http://hello.localhost:8080",
    )
    assert result.out == "aaa.bbb.ccc\n"
    assert fake.called("identity_token") == [("user:bob", "http://hello.localhost:8080")]


def test_as_a_services_instances(run: Run, fake: FakeClient) -> None:
    run("auth", "print-identity-token", "--impersonate-service-account", "frontend")
    assert fake.called("identity_token") == [("serviceAccount:frontend", None)]


def test_account_and_impersonation_exclude_each_other(run: Run) -> None:
    result = run(
        "auth", "print-identity-token", "--account", "a", "--impersonate-service-account", "b"
    )
    assert result.code == 2 and "not allowed with argument" in result.err


def test_impersonating_a_service_account_by_its_email(run: Run, fake: FakeClient) -> None:
    account = "editor@homerun-local.iam.gserviceaccount.com"
    result = run(
        "auth", "print-identity-token", "--impersonate-service-account", account,
        "--include-email", "--audiences", "http://hello.localhost:8080",
    )  # fmt: skip
    assert result.code == 0, result.err
    assert fake.called("identity_token") == [
        (f"serviceAccount:{account}", "http://hello.localhost:8080")
    ]
    refused = run("auth", "print-identity-token", "--impersonate-service-account", "a@b.com")
    assert refused.code != 0 and "--impersonate-service-account" in refused.err
