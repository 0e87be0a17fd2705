"""Builds into the local image store and deploys of its images (`deploy --image`), over the
whole control plane with a fake runtime."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from homerun.errors import HomerunError, NotFound
from homerun.knative import parse_service
from homerun.model.events import Done, Phase
from homerun.model.images import BuildEvent, BuildRequest, Built, InvalidImageName
from homerun.routing.types import Route

from .conftest import Plane, run


async def submit(plane: Plane, source: Path, tag: str) -> list[BuildEvent]:
    request = BuildRequest(source=str(source), tag=tag)
    return [event async for event in plane.control.images.submit(request)]


async def built(plane: Plane, source: Path, tag: str) -> Built:
    events = await submit(plane, source, tag)
    assert isinstance(events[-1], Built), events
    return events[-1]


def other_source(plane: Plane, name: str) -> Path:
    folder = plane.source.parent / name
    folder.mkdir(exist_ok=True)
    return folder


def routed(plane: Plane, host: str) -> str | None:
    route = plane.control.live.resolve(host)
    return route.revision if isinstance(route, Route) else None


def test_a_build_stores_the_image_under_its_digest_and_lists_it(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        image = await built(plane, plane.source, "gcr.io/my-project/helloworld")
        assert image.image == "gcr.io/my-project/helloworld:latest"
        assert image.digest.startswith("sha256:") and len(image.digest) == 71
        (listed,) = plane.control.images.images()
        assert listed.name == image.image and listed.digest == image.digest
        assert listed.source == str(plane.source) and listed.build == image.build
        (build,) = plane.control.images.builds()
        assert build.id == image.build and build.status == "SUCCESS"
        assert build.images == ["gcr.io/my-project/helloworld:latest"]
        stored = plane.control.images.images()[0].digest.removeprefix("sha256:")
        home = plane.source.parent / "home"
        assert (home / "images" / "blobs" / stored / "app.py").is_file()
        assert not [p for p in (home / "images" / "blobs").iterdir() if p.name.startswith(".")]

    run(make_plane, scenario)


def test_deploy_image_pins_the_digest_and_serves(make_plane: Callable[..., Plane]) -> None:
    async def scenario(plane: Plane) -> None:
        image = await built(plane, plane.source, "gcr.io/my-project/helloworld")
        events = await plane.deploy("helloworld", image="gcr.io/my-project/helloworld")
        done = events[-1]
        assert isinstance(done, Done), events
        pinned = f"gcr.io/my-project/helloworld@{image.digest}"
        phases = [event.message for event in events if isinstance(event, Phase)]
        assert phases[0] == f"Image gcr.io/my-project/helloworld is {pinned}"
        assert phases[1] == f"Creating revision {done.revision} from the image {pinned}"
        revision = plane.store.revision(done.revision)
        assert revision.spec.image == pinned and revision.spec.source == str(plane.source)
        assert revision.artifact is not None
        assert revision.artifact.digest == image.digest.removeprefix("sha256:")
        assert routed(plane, "helloworld.localhost:8080") == done.revision
        assert plane.control.views.revision(done.revision).image == pinned
        # The same image again changes nothing: the template is the same.
        again = await plane.deployed("helloworld", image="gcr.io/my-project/helloworld:latest")
        assert again.unchanged and again.revision == done.revision

    run(make_plane, scenario)


def test_a_new_build_to_the_tag_needs_a_deploy_to_be_served(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        first_image = await built(plane, plane.source, "localhost/hello:v1")
        first = await plane.deployed("hello", image="localhost/hello:v1")
        second_image = await built(plane, other_source(plane, "v2"), "localhost/hello:v1")
        assert second_image.digest != first_image.digest
        assert routed(plane, "hello.localhost:8080") == first.revision  # pinned, not moved
        second = await plane.deployed("hello", image="localhost/hello:v1")
        assert second.revision != first.revision
        assert plane.store.revision(second.revision).spec.image == (
            f"localhost/hello@{second_image.digest}"
        )
        # By digest too, as Cloud Run takes it.
        third = await plane.deployed("hello", image=f"localhost/hello@{first_image.digest}")
        assert plane.store.revision(third.revision).spec.image == (
            f"localhost/hello@{first_image.digest}"
        )

    run(make_plane, scenario)


def test_a_missing_image_fails_the_deploy_and_the_service_keeps_serving(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        await built(plane, plane.source, "gcr.io/my-project/helloworld")
        first = await plane.deployed("helloworld", image="gcr.io/my-project/helloworld")
        failed = await plane.failed("helloworld", image="gcr.io/my-project/helloword")
        assert "there is no image gcr.io/my-project/helloword:latest" in failed.message
        assert "Did you mean gcr.io/my-project/helloworld:latest?" in failed.message
        assert "homerun builds submit SOURCE --tag gcr.io/my-project/helloword" in failed.message
        assert routed(plane, "helloworld.localhost:8080") == first.revision
        assert len(plane.store.revisions("helloworld")) == 1

    run(make_plane, scenario)


def test_a_bad_name_and_command_with_an_image_are_refused(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        with pytest.raises(InvalidImageName, match="--tag: 'gcr.io/P/x' is not an image name"):
            plane.control.images.submit(BuildRequest(source=str(plane.source), tag="gcr.io/P/x"))
        await built(plane, plane.source, "localhost/hello")
        failed = await plane.failed("hello", image="localhost/hello", command=["python", "x.py"])
        assert "--command and --args cannot change" in failed.message
        first = await plane.deployed("hello", image="localhost/hello")
        failed = await plane.failed("hello", args=["--debug"])
        assert "--command and --args cannot change" in failed.message
        assert routed(plane, "hello.localhost:8080") == first.revision

    run(make_plane, scenario)


def test_settings_changes_keep_the_image_and_a_source_deploy_replaces_it(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        await built(plane, plane.source, "localhost/hello")
        first = await plane.deployed("hello", image="localhost/hello")
        updated = await plane.deployed("hello", env={"update": {"MODE": "beta"}})
        assert updated.revision != first.revision
        pinned = plane.store.revision(first.revision).spec.image
        assert plane.store.revision(updated.revision).spec.image == pinned
        from_source = await plane.deployed("hello", source=str(plane.source))
        assert plane.store.revision(from_source.revision).spec.image is None

    run(make_plane, scenario)


def test_deleting_an_image_keeps_its_revisions_running(make_plane: Callable[..., Plane]) -> None:
    async def scenario(plane: Plane) -> None:
        image = await built(plane, plane.source, "localhost/hello")
        first = await plane.deployed("hello", image="localhost/hello")
        assert plane.control.images.delete("localhost/hello") == ["localhost/hello:latest"]
        assert plane.control.images.images() == []
        blobs = plane.source.parent / "home" / "images" / "blobs"
        assert not (blobs / image.digest.removeprefix("sha256:")).exists()
        assert routed(plane, "hello.localhost:8080") == first.revision
        failed = await plane.failed("hello", image="localhost/hello")
        assert "there is no image localhost/hello:latest" in failed.message

    run(make_plane, scenario)


def test_the_knative_document_names_the_image_and_applies_unchanged(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        image = await built(plane, plane.source, "gcr.io/my-project/helloworld:v1")
        first = await plane.deployed("helloworld", image="gcr.io/my-project/helloworld:v1")
        document = plane.control.views.knative_service("helloworld")
        container = document["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == f"gcr.io/my-project/helloworld@{image.digest}"
        manifest = parse_service(json.loads(json.dumps(document)))
        events = [event async for event in plane.control.deploys.replace(manifest)]
        done = events[-1]
        assert isinstance(done, Done) and done.unchanged and done.revision == first.revision

    run(make_plane, scenario)


def test_an_artifact_image_is_not_pushed(make_plane: Callable[..., Plane]) -> None:
    async def scenario(plane: Plane) -> None:
        await built(plane, plane.source, "localhost:5000/hello:v1")
        with pytest.raises(HomerunError, match="built without a container engine"):
            plane.control.images.push("localhost:5000/hello:v1")
        with pytest.raises(NotFound, match="there is no image localhost:5000/other:latest"):
            plane.control.images.push("localhost:5000/other")

    run(make_plane, scenario)
