"""`homerun revisions ...` over a fake client."""

from __future__ import annotations

import json

from .conftest import FakeClient, Run, revision_summary


def test_list(run: Run, fake: FakeClient) -> None:
    result = run("revisions", "list", "--service", "hello")
    assert fake.called("revisions") == [("hello",)]
    header, line = result.out.splitlines()
    assert header.split() == ["REVISION", "ACTIVE", "SERVICE", "STATUS", "TRAFFIC", "INSTANCES"]
    assert line.split() == ["hello-00002-abc", "yes", "hello", "ready", "100%", "tag", "blue", "1"]
    listed = json.loads(run("revisions", "list", "--format", "summary-json").out)
    assert listed == [revision_summary().model_dump(mode="json")]
    knative = json.loads(run("revisions", "list", "--format", "json").out)
    assert [each["metadata"]["name"] for each in knative] == ["hello-00002-abc"]
    names = run("revisions", "list", "--format", "value(metadata.name)", "--region", "r").out
    assert names == "hello-00002-abc\n"


def test_describe(run: Run, fake: FakeClient) -> None:
    fake.revision_views = [
        revision_summary(mounts={"/secrets/key": "secret api-key:2 (read-only file)"})
    ]
    out = run("revisions", "describe", "hello-00002-abc").out
    assert out.splitlines()[:4] == [
        "Revision hello-00002-abc",
        "  Service:      hello",
        "  Status:       ready",
        "  Traffic:      100%",
    ]
    assert "  Tag:          blue: http://blue---hello.localhost:8080" in out
    assert "  Entrypoint:   gunicorn main:app (Procfile web:)" in out
    assert "  Env:          MODE=beta" in out
    assert "  Secret:       DB_URL from db-url:latest" in out
    assert "  Mount:        /secrets/key: secret api-key:2 (read-only file)" in out
    assert (
        "kind: Revision" in run("revisions", "describe", "hello-00002-abc", "--format", "yaml").out
    )


def test_delete_confirms_on_a_terminal_only(run: Run, fake: FakeClient) -> None:
    refused = run("revisions", "delete", "hello-00002-abc", typed="no\n")
    assert refused.code == 1 and fake.called("delete_revision") == []
    assert "Revision [hello-00002-abc] will be deleted." in refused.out
    assert run("revisions", "delete", "hello-00002-abc", typed="y\n").code == 0
    assert run("revisions", "delete", "hello-00002-abc").out == (
        "Deleted revision [hello-00002-abc].\n"
    )
    assert len(fake.called("delete_revision")) == 2
