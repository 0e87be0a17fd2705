"""`services export` over the whole control plane with a fake runtime: which revision is
exported, the image a push recorded, the refusals that say how to push, and `services
replace` of the exported document."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from homerun.build import Artifact
from homerun.build.images import ImageStore
from homerun.config import Settings
from homerun.control.exports import NotExportable
from homerun.knative import parse_service
from homerun.model.events import Done
from homerun.model.images import BuildRequest, Built, PushedImage

from .conftest import Plane, fake_build

ENGINE_IMAGE = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
REGISTRY_DIGEST = "sha256:" + "c" * 64


def engine_build(source: Path, dest: Path, **options: Any) -> Artifact:
    """A build podman made: the artifact names the engine's image."""
    return dataclasses.replace(fake_build(source, dest, **options), engine_image=ENGINE_IMAGE)


def run(
    make_plane: Callable[..., Plane],
    scenario: Callable[[Plane], Awaitable[None]],
    build: Callable[..., Artifact] = fake_build,
) -> None:
    async def main() -> None:
        plane = make_plane(build=build)
        try:
            await scenario(plane)
        finally:
            await plane.control.close()

    asyncio.run(main())


def image_store(plane: Plane) -> ImageStore:
    """The daemon's image store, read and written through its files as the daemon's is."""
    return ImageStore(Settings().paths(plane.source.parent / "home").images, clock=lambda: 1.0)


async def build_image(plane: Plane, tag: str) -> Built:
    events = [
        e
        async for e in plane.control.images.submit(BuildRequest(source=str(plane.source), tag=tag))
    ]
    assert isinstance(events[-1], Built), events
    return events[-1]


def test_an_engine_less_revision_names_what_to_do(make_plane: Callable[..., Plane]) -> None:
    async def scenario(plane: Plane) -> None:
        await plane.deployed("hello", source=str(plane.source))
        with pytest.raises(NotExportable) as raised:
            plane.control.exports.export("hello", cloud_run=False)
        message = str(raised.value)
        assert "runs homerun's own artifact (built without a container engine" in message
        assert "homerun services export hello --image REGISTRY/PATH@sha256:" in message
        given = f"registry.example.com/team/hello@{REGISTRY_DIGEST}"
        document = plane.control.exports.export("hello", cloud_run=False, image=given)
        assert document["spec"]["template"]["spec"]["containers"][0]["image"] == given
        with pytest.raises(NotExportable, match="pinned to its digest"):
            plane.control.exports.export("hello", cloud_run=False, image="localhost/hello:v1")

    run(make_plane, scenario)


def test_an_image_never_pushed_says_how_and_a_pushed_one_is_referenced_by_its_digest(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        tagged = "127.0.0.1:5000/team/hello:v1"
        await build_image(plane, tagged)
        await plane.deployed("hello", image=tagged, container_concurrency=9)
        with pytest.raises(NotExportable) as raised:
            plane.control.exports.export("hello", cloud_run=False)
        assert "never pushed to a registry" in str(raised.value)
        assert f"`homerun images push {tagged}`" in str(raised.value)

        store = image_store(plane)
        local = store.resolve(tagged).pinned
        pinned = f"127.0.0.1:5000/team/hello@{REGISTRY_DIGEST}"
        store.record_push(
            ENGINE_IMAGE, PushedImage(name=tagged, digest=REGISTRY_DIGEST, pinned=pinned), local
        )
        document = plane.control.exports.export("hello", cloud_run=False)
        spec = document["spec"]["template"]["spec"]
        assert spec["containers"][0]["image"] == pinned
        assert spec["containerConcurrency"] == 9
        # Given back to homerun, the document is the revision it came from.
        events = [e async for e in plane.control.deploys.replace(parse_service(document))]
        done = events[-1]
        assert isinstance(done, Done) and done.unchanged, events
        assert done.revision == plane.store.latest_ready("hello").name  # type: ignore[union-attr]

    run(make_plane, scenario, build=engine_build)


def test_the_revision_with_the_traffic_is_exported(make_plane: Callable[..., Plane]) -> None:
    async def scenario(plane: Plane) -> None:
        image = f"registry.example.com/hello@{REGISTRY_DIGEST}"
        await plane.deployed("hello", source=str(plane.source), container_concurrency=5)
        await plane.deployed("hello", container_concurrency=6, no_traffic=True)
        document = plane.control.exports.export("hello", cloud_run=True, image=image)
        assert document["spec"]["template"]["spec"]["containerConcurrency"] == 5

    run(make_plane, scenario)
