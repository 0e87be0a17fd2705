"""Image names as Cloud Run takes them: what parses, what it means, and what is refused."""

from __future__ import annotations

import pytest

from homerun.model.images import ImageName, InvalidImageName, parse_image_name

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("gcr.io/my-project/helloworld", ImageName("gcr.io", "my-project/helloworld")),
        ("gcr.io/my-project/helloworld:v1", ImageName("gcr.io", "my-project/helloworld", "v1")),
        (
            "us-central1-docker.pkg.dev/my-project/my-repo/api:2.0",
            ImageName("us-central1-docker.pkg.dev", "my-project/my-repo/api", "2.0"),
        ),
        ("localhost/hello", ImageName("localhost", "hello")),
        ("localhost:5000/team/hello:latest", ImageName("localhost:5000", "team/hello", "latest")),
        ("helloworld", ImageName("", "helloworld")),
        ("library/python:3.12-slim", ImageName("", "library/python", "3.12-slim")),
        (f"gcr.io/p/hello@{DIGEST}", ImageName("gcr.io", "p/hello", None, DIGEST)),
        (f"gcr.io/p/hello:v1@{DIGEST}", ImageName("gcr.io", "p/hello", "v1", DIGEST)),
    ],
)
def test_cloud_run_style_names_parse(text: str, expected: ImageName) -> None:
    assert parse_image_name(text) == expected
    assert str(parse_image_name(text)) == text


def test_a_name_without_tag_is_stored_as_latest_and_pinned_by_digest() -> None:
    name = parse_image_name("gcr.io/my-project/helloworld")
    assert name.tagged == "gcr.io/my-project/helloworld:latest"
    assert name.pinned("ab" * 32) == "gcr.io/my-project/helloworld@sha256:" + "ab" * 32
    assert parse_image_name("localhost/x:v2").tagged == "localhost/x:v2"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        (" gcr.io/p/x", "spaces"),
        ("gcr.io/My-Project/hello", "lowercase"),
        ("gcr.io/p/hello:", "tag"),
        ("gcr.io/p/hello:-v1", "tag"),
        ("gcr.io/p/hello@sha256:abc", "64 hex"),
        ("https://gcr.io/p/hello", "scheme"),
        ("gcr.io/p//hello", "repository path"),
        ("gcr.io/p/hello world", "repository path"),
        ("gcr.io/<project>/helloworld", "repository path"),
    ],
)
def test_names_that_do_not_parse_say_why_and_what_to_write(text: str, reason: str) -> None:
    with pytest.raises(InvalidImageName) as caught:
        parse_image_name(text, "--tag")
    message = str(caught.value)
    assert message.startswith("--tag: ")
    assert reason in message
    assert "gcr.io/PROJECT/NAME" in message
