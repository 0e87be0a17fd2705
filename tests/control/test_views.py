"""What list and describe report: a service's readiness is its Knative Ready condition."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from homerun.model.events import Done
from homerun.model.views import Readiness, ServiceSummary

from .conftest import Plane, run


def knative_ready(plane: Plane, service: str) -> dict[str, Any]:
    """The Ready condition `services describe --format yaml` shows."""
    conditions = plane.control.views.knative_service(service)["status"]["conditions"]
    return next(condition for condition in conditions if condition["type"] == "Ready")


def assert_same_readiness(summary: ServiceSummary, condition: dict[str, Any]) -> None:
    assert summary.readiness == Readiness(
        status=condition["status"], reason=condition.get("reason"), message=condition.get("message")
    )
    assert summary.ready is (condition["status"] == "True")


def test_a_serving_service_is_ready(make_plane: Callable[..., Plane]) -> None:
    async def scenario(plane: Plane) -> None:
        await plane.deployed("svc", source=str(plane.source))
        summary = plane.control.views.service("svc")
        assert summary.ready and summary.readiness == Readiness(status="True")
        assert_same_readiness(summary, knative_ready(plane, "svc"))

    run(make_plane, scenario)


def test_a_failed_deploy_is_not_ready_though_the_previous_revision_serves(
    make_plane: Callable[..., Plane],
) -> None:
    async def scenario(plane: Plane) -> None:
        first = await plane.deployed("svc", source=str(plane.source))
        plane.runtime.fail = True
        await plane.failed("svc", env={"update": {"A": "1"}})
        failed = plane.store.latest_created("svc")
        assert failed is not None and failed.name != first.revision

        summary = plane.control.views.service("svc")
        assert [route.revision for route in summary.traffic] == [first.revision]
        assert not summary.ready
        assert summary.readiness.status == "False"
        assert summary.readiness.reason == "RevisionFailed"
        assert summary.readiness.message is not None
        assert summary.readiness.message.startswith(f'Revision "{failed.name}" failed')
        assert_same_readiness(summary, knative_ready(plane, "svc"))
        # list and describe carry the same.
        assert [each.readiness for each in plane.control.views.services()] == [summary.readiness]
        assert plane.control.views.describe("svc").readiness == summary.readiness

    run(make_plane, scenario)


def test_a_deploy_in_progress_leaves_readiness_unknown(make_plane: Callable[..., Plane]) -> None:
    async def scenario(plane: Plane) -> None:
        first = await plane.deployed("svc", source=str(plane.source))
        hold = plane.runtime.hold = asyncio.Event()
        plane.runtime.a_start.clear()
        starting = asyncio.ensure_future(plane.deploy("svc", env={"update": {"A": "1"}}))
        try:
            await plane.runtime.a_start.wait()
            summary = plane.control.views.service("svc")
            condition = knative_ready(plane, "svc")
        finally:
            hold.set()  # the deploy ends, whatever the asserts say
            done = (await starting)[-1]
        assert [route.revision for route in summary.traffic] == [first.revision]
        assert not summary.ready
        assert summary.readiness == Readiness(status="Unknown", reason="Deploying")
        assert_same_readiness(summary, condition)
        assert isinstance(done, Done) and plane.control.views.service("svc").ready

    run(make_plane, scenario)
