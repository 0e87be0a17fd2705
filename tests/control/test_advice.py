"""The runtime inspector's wiring through the control plane: the variables every instance of a
revision starts with, the advice read from its snapshots, and the folder going with the
revision."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

from homerun.runtime.names import SITE_FOLDER

from .conftest import Plane


def test_instances_load_the_inspector_and_the_advice_reads_what_they_wrote(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        done = await plane.deployed(
            "svc", source=str(plane.source), env={"update": {"PYTHONPATH": "/opt/lib"}}
        )
        env = plane.control.live.units[done.revision].plan.env
        folder = plane.control.revisions._paths.inspections / done.revision
        assert env["HOMERUN_INSPECT"] == str(folder)
        assert env["HOMERUN_INSPECT_BLOCK_MS"] == "250"
        # The user's PYTHONPATH is kept, after the inspector's folder.
        assert env["PYTHONPATH"] == f"{SITE_FOLDER}:/opt/lib"

        advice = plane.control.advisor.advise("svc")
        assert advice.inspection is None and advice.capacity is None
        folder.mkdir(parents=True)
        (folder / "9000.42.json").write_text(
            json.dumps(
                {
                    "version": 1,
                    "pid": 42,
                    "port": 9000,
                    "written_at": 1.0,
                    "server": "gunicorn",
                    "worker_class": "ThreadWorker",
                    "workers": 1,
                    "threads": 8,
                    "busy": 8,
                    "peak_busy": 8,
                    "requests": 100,
                    "saturated_seconds": 4.0,
                }  # fmt: skip
            )
        )
        advice = plane.control.advisor.advise("svc")
        assert advice.capacity is not None and advice.capacity.requests_at_once == 8
        assert advice.recommended_concurrency == 8
        described = plane.control.views.describe("svc").revisions[0]
        assert described.capacity == advice.capacity
        assert any("72 requests wait inside gunicorn" in w for w in described.warnings)
        # Its use so far, priced as Cloud Run would (the fake instance took no request).
        assert described.cost is not None
        assert [cost.billing for cost in described.cost.costs] == [
            "request-based",
            "instance-based",
        ]
        assert described.cost.prices_source.startswith("https://cloud.google.com/run/pricing")

        await plane.control.close()  # stops the instance first (the fake's socket with it)
        await plane.control.revisions.delete_service("svc")
        assert not folder.exists()

    asyncio.run(scenario(make_plane(inspector_block_ms=250.0)))


def test_the_inspector_off_sets_nothing(make_plane: Callable[..., Plane]) -> None:
    async def scenario(plane: Plane) -> None:
        done = await plane.deployed("svc", source=str(plane.source))
        env = plane.control.live.units[done.revision].plan.env
        assert "HOMERUN_INSPECT" not in env
        # The site folder stays (it resolves service hosts); its inspector hooks then idle.
        assert env["PYTHONPATH"] == str(SITE_FOLDER)
        assert plane.control.advisor.advise("svc").inspection is None
        await plane.control.close()

    asyncio.run(scenario(make_plane(inspector=False)))
