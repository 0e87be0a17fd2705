"""The dashboard's document: each service as the control plane summarizes it."""

from __future__ import annotations

from pathlib import Path

from homerun.model.views import Readiness, Route, ServiceDescription, ServiceSummary
from homerun.observe.logs import LogStore
from homerun.observe.metrics import Metrics
from homerun.observe.overview import overview
from homerun.observe.processes import ProcessSampler
from homerun.observe.telemetry import Telemetry

# After hello-00003-xyz failed to start: hello-00002-abc serves all, the service is not ready.
FAILED = Readiness(
    status="False",
    reason="RevisionFailed",
    message='Revision "hello-00003-xyz" failed with message: no answer on $PORT',
)
SUMMARY = ServiceSummary(
    name="hello",
    url="http://hello.localhost:8080",
    ready=False,
    readiness=FAILED,
    latest_ready_revision="hello-00002-abc",
    latest_created_revision="hello-00003-xyz",
    traffic=[Route(revision="hello-00002-abc", percent=100)],
    traffic_spec=[],
    allow_unauthenticated=False,
    ingress="all",
    invokers=[],
    owner="user:me",
    created_at=1_700_000_000.0,
    generation=3,
)


class Services:
    def services(self) -> list[ServiceSummary]:
        return [SUMMARY]

    def describe(self, service: str) -> ServiceDescription:
        return ServiceDescription(**dict(SUMMARY), revisions=[])


def test_a_service_carries_its_ready_condition(tmp_path: Path) -> None:
    logs = LogStore(tmp_path)
    processes = ProcessSampler()
    telemetry = Telemetry(
        logs=logs,
        metrics=Metrics(lambda: [], processes),
        processes=processes,
        units=lambda: [],
        precise_clock=lambda: 0.0,
        wall_clock=lambda: 1_700_000_000.0,
    )
    (service,) = overview(Services(), telemetry, logs, processes, window=300)["services"]
    assert service["ready"] is False
    assert service["readiness"] == {
        "status": "False",
        "reason": "RevisionFailed",
        "message": 'Revision "hello-00003-xyz" failed with message: no answer on $PORT',
    }
    assert [route["revision"] for route in service["traffic"]] == ["hello-00002-abc"]
