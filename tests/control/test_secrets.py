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


FILES = {
    "update": {
        "/secrets/api-key": {"secret": "api"},
        "/secrets/v1": {"secret": "api", "version": "1"},
    }
}
VOLUMES = {"update": {"cache": {"size_limit": "1Mi"}}}
MOUNTS = {"update": {"/cache": "cache"}}


def test_secret_files_reach_the_plan_and_a_new_latest_version_later_starts(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        plane.control.secrets.create("api", "first-key")
        done = await plane.deployed(
            "svc",
            source=str(plane.source),
            secrets=FILES,
            volumes=VOLUMES,
            volume_mounts=MOUNTS,
        )
        unit = plane.control.live.units[done.revision]
        files = {file.path: file.data for file in unit.plan.mounts.secret_files}
        assert files == {"/secrets/api-key": b"first-key", "/secrets/v1": b"first-key"}
        assert [(m.path, m.size_bytes) for m in unit.plan.mounts.memory] == [("/cache", 1 << 20)]
        # The instance was started with them.
        assert plane.runtime.specs[-1].mounts == unit.plan.mounts
        plane.control.secrets.add_version("api", "second-key")
        files = {file.path: file.data for file in unit.plan.mounts.secret_files}
        assert files == {"/secrets/api-key": b"second-key", "/secrets/v1": b"first-key"}
        described = plane.control.views.revision(done.revision)
        assert described.mounts == {
            "/cache": "in-memory volume cache, at most 1Mi",
            "/secrets/api-key": "secret api:latest (read-only file)",
            "/secrets/v1": "secret api:1 (read-only file)",
        }
        dumped = described.model_dump_json()
        assert "first-key" not in dumped and "second-key" not in dumped
        assert "first-key" not in repr(unit.plan.mounts)
        with pytest.raises(InvalidSpec, match="--remove-secrets"):
            plane.control.secrets.delete("api")
        await plane.control.close()

    asyncio.run(scenario(make_plane()))


def test_without_a_sandbox_secret_files_and_volumes_are_refused_with_what_to_do(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        plane.control.secrets.create("api", "first-key")
        failed = await plane.failed("svc", source=str(plane.source), secrets=FILES)
        assert "needs the sandbox, and sandbox: off here" in failed.message
        assert "`sandbox: on` in HOMERUN_HOME/config.yaml" in failed.message
        assert "--set-secrets ENV=SECRET:VERSION" in failed.message
        assert not plane.runtime.started
        missing = await plane.failed(
            "other", source=str(plane.source), secrets={"update": {"/s/k": {"secret": "nope"}}}
        )
        assert missing.message.startswith("/s/k=nope:latest")
        await plane.control.close()

    asyncio.run(scenario(make_plane(mounts_refused="sandbox: off here")))
