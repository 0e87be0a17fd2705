"""The container runtime's pure parts: limits as podman takes them, exit statuses, and the
runtime each instance goes to."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fakes import FakeRuntime

from homerun.model.engine import ContainerSpec, Engine
from homerun.runtime.base import InstanceSpec
from homerun.runtime.container import ContainerRuntime, _limits, _status, cpu_count, memory_bytes


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
