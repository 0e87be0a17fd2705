"""Secrets through the control plane: values reach instances, never descriptions or errors."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from homerun.errors import InvalidSpec

from .conftest import Plane


def test_a_secret_reaches_the_instance_env_and_a_new_latest_version_later_starts(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        plane.control.secrets.create("db", "hunter22")
        done = await plane.deployed(
            "svc", source=str(plane.source), secrets={"update": {"DB": {"secret": "db"}}}
        )
        unit = plane.control.live.units[done.revision]
        assert unit.plan.env["DB"] == "hunter22"
        plane.control.secrets.add_version("db", "correct horse")
        assert unit.plan.env["DB"] == "correct horse"
        described = plane.control.views.revision(done.revision)
        assert described.secrets == {"DB": "db:latest"}
        assert "correct horse" not in described.model_dump_json()
        await plane.control.close()

    asyncio.run(scenario(make_plane()))


def test_a_secret_in_use_cannot_be_deleted_and_a_missing_one_fails_the_deploy(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        plane.control.secrets.create("db", "hunter22")
        await plane.deployed(
            "svc", source=str(plane.source), secrets={"update": {"DB": {"secret": "db"}}}
        )
        with pytest.raises(InvalidSpec, match="--remove-secrets"):
            plane.control.secrets.delete("db")
        failed = await plane.failed("other", source=str(plane.source),
                                    secrets={"update": {"X": {"secret": "nope"}}})  # fmt: skip
        assert failed.message.startswith("X=nope:latest")
        await plane.control.close()

    asyncio.run(scenario(make_plane()))


def test_error_messages_mask_secret_values(make_plane: Callable[..., Plane]) -> None:
    async def scenario(plane: Plane) -> None:
        plane.control.secrets.create("token", "flask")  # the fake app's error names "flask"
        plane.runtime.fail = True
        failed = await plane.failed(
            "svc", source=str(plane.source), secrets={"update": {"TOKEN": {"secret": "token"}}}
        )
        assert "[secret TOKEN]" in failed.message and "'flask'" not in failed.message
        await plane.control.close()

    asyncio.run(scenario(make_plane()))
