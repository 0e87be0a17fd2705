"""Revision deletion and retention through the control plane."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from homerun.errors import InvalidSpec

from .conftest import Plane


def test_idle_revisions_past_the_retention_count_go_with_their_folders(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        names = [(await plane.deployed("svc", source=str(plane.source))).revision]
        for value in "123":
            names.append((await plane.deployed("svc", env={"update": {"A": value}})).revision)
        kept = [revision.name for revision in plane.store.revisions("svc")]
        # The serving revision and the newest idle one stay (revision-retention: 1).
        assert kept == [names[3], names[2]]
        await asyncio.sleep(0.05)  # folders are deleted in a thread
        assert sorted(p.name for p in plane.control.revisions._paths.revisions.iterdir()) == [
            names[2],
            names[3],
        ]
        await plane.control.close()

    asyncio.run(scenario(make_plane(revision_retention=1)))


def test_a_serving_revision_cannot_be_deleted_and_the_message_says_how(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        first = await plane.deployed("svc", source=str(plane.source))
        await plane.deployed("svc", env={"update": {"A": "1"}}, no_traffic=True)
        with pytest.raises(InvalidSpec, match="update-traffic svc --to-revisions OTHER=100"):
            await plane.control.revisions.delete(first.revision)
        await plane.control.close()

    asyncio.run(scenario(make_plane()))
