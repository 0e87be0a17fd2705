"""`homerun domain-mappings ...` over the fake client: what each command sends and prints."""

from __future__ import annotations

import yaml

from .conftest import FakeClient, Run


def test_create_sends_the_domain_and_service_and_prints_how_to_reach_it(
    run: Run, fake: FakeClient
) -> None:
    result = run("domain-mappings", "create", "--service", "hello", "--domain", "app.example.com",
                 "--force-override")  # fmt: skip
    assert result.code == 0, result.err
    assert fake.called("create_domain_mapping") == [("app.example.com", "hello", True)]
    assert "Mapped domain [app.example.com] to service [hello]." in result.out
    assert "URL:          http://app.example.com:8080" in result.out
    assert "Certificate:  none: no HTTPS listener" in result.out


def test_create_needs_both_flags(run: Run, fake: FakeClient) -> None:
    result = run("domain-mappings", "create", "--domain", "app.example.com")
    assert result.code == 2 and "--service" in result.err
    assert not fake.called("create_domain_mapping")


def test_describe_as_text_and_as_a_knative_document(run: Run, fake: FakeClient) -> None:
    text = run("run", "domain-mappings", "describe", "--domain", "app.example.com")
    assert text.code == 0, text.err
    assert "Status:       ready" in text.out
    document = yaml.safe_load(
        run("domain-mappings", "describe", "--domain", "app.example.com", "--format", "yaml").out
    )
    assert document == {
        "apiVersion": "serving.knative.dev/v1beta1",
        "kind": "DomainMapping",
        "metadata": {"name": "app.example.com"},
        "spec": {
            "ref": {"apiVersion": "serving.knative.dev/v1", "kind": "Service", "name": "hello"}
        },
    }
    missing = run("domain-mappings", "describe", "--domain", "nope.example.com")
    assert missing.code == 1 and "not found" in missing.err


def test_list_and_delete(run: Run, fake: FakeClient) -> None:
    listed = run("domain-mappings", "list", "--service", "hello")
    assert listed.code == 0, listed.err
    assert fake.called("domain_mappings") == [("hello",)]
    assert listed.out.splitlines()[1].split()[:3] == ["app.example.com", "hello", "True"]
    deleted = run("domain-mappings", "delete", "--domain", "app.example.com", "-q")
    assert deleted.code == 0 and "Deleted domain mapping [app.example.com]." in deleted.out
    assert fake.called("delete_domain_mapping") == [("app.example.com",)]
