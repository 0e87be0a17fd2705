"""The live gauges, read at scrape time from revisions as observe sees them (no scaling)."""

from __future__ import annotations

import os

from fakes import FakeInstanceReading, FakeRequests, FakeRevision
from prometheus_client.parser import text_string_to_metric_families

from homerun.model.states import InstanceState
from homerun.observe.metrics import Metrics
from homerun.observe.processes import ProcessSampler


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, _ = metrics.exposition()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body.decode())
        for sample in family.samples
    }


def test_live_gauges_count_instances_by_state_and_read_the_router() -> None:
    revision = FakeRevision(
        concurrency=5,
        throttler=FakeRequests(in_flight=7, queue_length=2),
        instances=[
            FakeInstanceReading("a", pid=os.getpid(), state=InstanceState.READY),
            FakeInstanceReading("b", pid=os.getpid(), state=InstanceState.READY),
            FakeInstanceReading("c", pid=os.getpid(), state=InstanceState.STARTING),
        ],
        overloaded_requests=3,
    )
    found = samples(Metrics(lambda: [revision], ProcessSampler()))
    key = (("revision", "svc-00001-abc"), ("service", "svc"))

    def state(name: str) -> tuple[str, tuple[tuple[str, str], ...]]:
        return ("homerun_instances", tuple(sorted((*key, ("state", name)))))

    assert found[state("starting")] == 1
    assert found[state("ready")] == 2
    assert found[state("draining")] == 0
    assert found[("homerun_requests_in_flight", key)] == 7
    assert found[("homerun_queue_length", key)] == 2
    assert found[("homerun_container_concurrency", key)] == 5
    assert found[("homerun_overloaded_requests_total", key)] == 3


def test_instance_cpu_and_memory_are_read_by_pid() -> None:
    # This test's own process stands for the instance: it uses some memory, and CPU.
    revision = FakeRevision(instances=[FakeInstanceReading("a", pid=os.getpid())])
    found = samples(Metrics(lambda: [revision], ProcessSampler()))
    key = (("instance", "a"), ("revision", "svc-00001-abc"), ("service", "svc"))
    assert found[("homerun_instance_resident_memory_bytes", key)] > 0
    assert found[("homerun_instance_cpu_seconds_total", key)] > 0


def test_an_instance_whose_process_is_gone_has_no_usage() -> None:
    gone = FakeInstanceReading("gone", pid=2**22 + 1)  # above the default pid_max
    found = samples(Metrics(lambda: [FakeRevision(instances=[gone])], ProcessSampler()))
    assert not [name for name, labels in found if ("instance", "gone") in labels]
