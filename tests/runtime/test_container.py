"""The container runtime's pure parts: limits as podman takes them, exit statuses, and the
runtime each instance goes to."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from e2e.containers import ensure_base_image
from fakes import FakeRuntime

from homerun.model.engine import ContainerSpec, Engine
from homerun.model.limits import MiB
from homerun.model.volumes import MemoryMount, Mounts, SecretFile
from homerun.runtime.base import InstanceSpec
from homerun.runtime.container import (
    ContainerInstance,
    ContainerRuntime,
    _limits,
    _mounts,
    _status,
    cpu_count,
    find_engine,
    memory_bytes,
)
from homerun.runtime.netns import Networks


@pytest.mark.parametrize(
    ("quantity", "expected"),
    [("512Mi", 512 * 1024**2), ("1Gi", 1024**3), ("100M", 100 * 1000**2), ("1024", 1024)],
)
def test_memory_quantities_in_bytes(quantity: str, expected: int) -> None:
    assert memory_bytes(quantity) == expected


def test_a_bad_memory_quantity_is_refused() -> None:
    with pytest.raises(ValueError, match="512Mi"):
        memory_bytes("lots")


def test_cpu_quantities_and_limits() -> None:
    assert cpu_count("500m") == 0.5 and cpu_count("2") == 2.0
    limits = _limits(ContainerSpec(image="sha256:x", memory="256Mi", cpu="500m"))
    assert limits == ["--memory", str(256 * 1024**2), "--cpus", "0.5"]
    assert _limits(ContainerSpec(image="sha256:x")) == []


def test_podman_exit_codes_read_as_the_process_runtime_reports_them() -> None:
    assert _status(0) == 0 and _status(3) == 3
    assert _status(137) == -9 and _status(143) == -15  # killed by SIGKILL, SIGTERM
    assert _status(125) == 125  # podman's own error


def test_specs_without_a_container_go_to_the_process_runtime() -> None:
    async def scenario() -> None:
        processes = FakeRuntime()
        engine = Engine(name="podman", program="/nonexistent/podman", version="4.3.1")
        runtime = ContainerRuntime(engine, processes, home=Path("/tmp/home"))
        lines: list[Any] = []
        instance = await runtime.start(
            InstanceSpec(name="a-1", argv=["x"], env={}, cwd=Path("/"), port=0, revision="a"),
            lambda stream, line: lines.append(line),
        )
        assert processes.started == [instance]
        assert runtime.mode("a") == processes.mode("a")
        instance.signal(9)
        await instance.wait()

    asyncio.run(scenario())


def test_status_says_how_images_instances_run() -> None:
    engine = Engine(name="podman", program="/nonexistent/podman", version="4.3.1")
    home = Path("/tmp/home")
    published = ContainerRuntime(engine, FakeRuntime(), home=home)
    assert published.describe() == (
        "each container on the engine's network, its port published on 127.0.0.1; no image "
        "forks its instances from a zygote (container-zygote: false in config.yaml)"
    )
    private = ContainerRuntime(engine, FakeRuntime(), home=home, unrooted=None, networks=Networks())
    assert private.describe() == (
        "each container in a network namespace of its own; an image that runs gunicorn or "
        "uvicorn on $PORT forks its instances from a zygote in its own root folder"
    )


# -- secret files and in-memory volumes as podman mounts -------------------------------------

MOUNTS = Mounts(
    secret_files=(
        SecretFile("/secrets/api-key", b"hunter2-value"),
        SecretFile("/secrets/v1", b"1"),
        SecretFile("/etc/tls/cert", b"PEM"),
    ),
    memory=(MemoryMount("/cache", MiB),),
)


def test_each_instance_gets_its_secret_files_in_a_private_folder(tmp_path: Path) -> None:
    # `true` as the engine: its `ps` lists no leftover container.
    engine = Engine(name="podman", program="/bin/true", version="4.3.1", global_args=())
    runtime = ContainerRuntime(engine, FakeRuntime(), home=tmp_path / "home")
    folder = runtime._write_secrets(MOUNTS)
    root = folder.parent
    assert root.stat().st_mode & 0o777 == 0o700 and root.stat().st_uid == os.getuid()
    assert (folder / "0" / "api-key").read_bytes() == b"hunter2-value"
    assert (folder / "1" / "cert").read_bytes() == b"PEM"
    assert (folder / "0" / "v1").stat().st_mode & 0o777 == 0o444
    assert (folder / "0").stat().st_mode & 0o777 == 0o555
    options = _mounts(MOUNTS, folder)
    assert options == [
        "--mount",
        f"type=bind,source={folder}/0,destination=/secrets,ro=true",
        "--mount",
        f"type=bind,source={folder}/1,destination=/etc/tls,ro=true",
        "--mount",
        f"type=tmpfs,destination=/cache,tmpfs-mode=0777,tmpfs-size={MiB}",
    ]
    assert "hunter2" not in " ".join(options)  # values in files only, never on a command line
    # A daemon killed with instances running leaves their folders: the next one removes them.
    asyncio.run(runtime.remove_leftovers(lambda line: None))
    assert not root.exists()


CONTAINER_SCRIPT = """
cat /secrets/api-key; echo
ls /secrets | tr '\\n' ' '; echo
echo changed > /secrets/api-key 2>/dev/null && echo SECRET-WRITABLE || echo secret-read-only
head -c 524288 /dev/zero > /cache/half && echo half-written
head -c 1048576 /dev/zero > /cache/more 2>/dev/null && echo OVER-LIMIT || echo over-limit-refused
"""


@pytest.mark.containers
@pytest.mark.slow
def test_a_container_sees_its_secret_files_read_only_and_its_volume_limited(
    tmp_path: Path,
) -> None:
    image = ensure_base_image()
    engine = find_engine("podman")
    assert engine is not None

    async def scenario() -> None:
        runtime = ContainerRuntime(engine, FakeRuntime(), home=tmp_path / "home")
        lines: list[tuple[str, str]] = []
        instance = await runtime.start(
            InstanceSpec(
                name=f"mounts-{os.getpid()}",
                argv=[],
                env={},
                cwd=Path("/"),
                port=0,
                revision="mounts-00001-abc",
                container=ContainerSpec(
                    image=image, command=("/bin/sh", "-c"), args=(CONTAINER_SCRIPT,)
                ),
                mounts=Mounts(secret_files=MOUNTS.secret_files[:2], memory=MOUNTS.memory),
            ),
            lambda stream, line: lines.append((stream, line)),
        )
        assert isinstance(instance, ContainerInstance)
        try:
            assert await asyncio.wait_for(instance.wait(), 120) == 0, lines
        finally:
            instance.signal(9)
            await instance.wait()
        said = [line for stream, line in lines if stream == "stdout"]
        assert said == [
            "hunter2-value",
            "api-key v1 ",
            "secret-read-only",
            "half-written",
            "over-limit-refused",
        ], lines
        assert instance.secrets_folder is not None and not instance.secrets_folder.exists()

    asyncio.run(scenario())
