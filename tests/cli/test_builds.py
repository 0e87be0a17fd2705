"""`homerun builds submit|list` and `homerun images list|delete` over a fake client."""

from __future__ import annotations

from pathlib import Path

import pytest

from homerun.model.events import Failed, Phase

from .conftest import FakeClient, Run


def test_submit_with_tag_equals_builds_the_current_folder(
    run: Run, fake: FakeClient, app: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(app)
    result = run("builds", "submit", "--tag=gcr.io/my-project/hello")
    assert result.code == 0, result.err
    (request,) = fake.called("submit_build")[0]
    assert request.source == str(app) and request.tag == "gcr.io/my-project/hello"
    lines = result.out.splitlines()
    assert lines[0] == "Building gcr.io/my-project/hello:latest from /srv/hello"
    assert "  Successfully installed flask" in lines
    assert "DONE" in lines
    assert "Image: gcr.io/my-project/hello:latest" in lines
    assert lines[-1] == "Digest: sha256:" + "ab" * 32
    assert "SUCCESS" in result.out


def test_submit_takes_source_as_a_positional(run: Run, fake: FakeClient, app: Path) -> None:
    result = run("builds", "submit", str(app), "--tag", "localhost/hello:v2")
    assert result.code == 0, result.err
    assert fake.called("submit_build")[0][0].source == str(app)


def test_submit_needs_a_tag_and_a_valid_one(run: Run, fake: FakeClient, app: Path) -> None:
    assert run("builds", "submit", str(app)).code == 2
    result = run("builds", "submit", str(app), "--tag", "gcr.io/<project>/helloworld")
    assert result.code == 1
    assert "--tag: 'gcr.io/<project>/helloworld' is not an image name" in result.err
    assert not fake.called("submit_build")


def test_a_failed_build_exits_1_with_the_reason(run: Run, fake: FakeClient, app: Path) -> None:
    fake.build_events = [Phase(message="Building"), Failed(message="Dockerfile:3: no")]
    result = run("builds", "submit", str(app), "--tag", "localhost/hello")
    assert result.code == 1
    assert "the build failed: Dockerfile:3: no" in result.err


def test_builds_and_images_list(run: Run, fake: FakeClient) -> None:
    builds = run("builds", "list")
    assert builds.code == 0
    assert "0b6a3c4e-1111-2222-3333-444455556666" in builds.out and "SUCCESS" in builds.out
    images = run("images", "list")
    assert images.code == 0
    assert "gcr.io/my-project/hello:latest" in images.out


def test_images_delete(run: Run, fake: FakeClient) -> None:
    result = run("images", "delete", "gcr.io/my-project/hello", "-q")
    assert result.code == 0, result.err
    assert fake.called("delete_image") == [("gcr.io/my-project/hello",)]
    assert result.out == "Deleted [gcr.io/my-project/hello:latest].\n"


def test_images_push_prints_the_digest_and_the_pinned_name(run: Run, fake: FakeClient) -> None:
    result = run("images", "push", "localhost:5000/hello:v1")
    assert result.code == 0, result.err
    assert fake.called("push_image") == [("localhost:5000/hello:v1",)]
    digest = "sha256:" + "cd" * 32
    assert result.out.splitlines() == [
        f"Pushed [localhost:5000/hello:v1]: {digest}",
        f"localhost:5000/hello@{digest}",
    ]
