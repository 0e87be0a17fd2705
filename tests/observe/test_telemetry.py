"""Request records -> log entries, Prometheus exposition and the dashboard's series."""

import os
from pathlib import Path

from fakes import Clock, FakeInstanceReading, FakeRequests, FakeRevision
from prometheus_client.parser import text_string_to_metric_families

from homerun.model.states import InstanceState
from homerun.observe.logs import LogStore
from homerun.observe.metrics import Metrics
from homerun.observe.processes import ProcessSampler
from homerun.observe.telemetry import Telemetry
from homerun.routing.types import RequestRecord


def record(
    status: int,
    latency: float,
    service: str | None = "svc",
    arrival: float = 10.0,
    *,
    target: bytes = b"/path?q=1",
    user_agent: bytes = b"curl/8",
    trace: bytes = b"0af7651916cd43dd8448eb211c80319c",
    protocol: bytes = b"HTTP/1.1",
    grpc_status: bytes = b"",
) -> RequestRecord:
    return (
        arrival, arrival + latency, b"GET", target, b"svc.localhost:8080", status, 56,
        144, user_agent, b"127.0.0.1", protocol, trace,
        service, "svc-00001-abc" if service else None, "svc-00001-abc-123456" if service else None,
        grpc_status,
    )  # fmt: skip


def make(tmp_path: Path) -> tuple[Telemetry, LogStore, Metrics, Clock]:
    logs = LogStore(tmp_path / "logs")
    processes = ProcessSampler()
    metrics = Metrics(lambda: [], processes)
    wall = Clock(1_800_000_000.0)
    telemetry = Telemetry(
        logs=logs,
        metrics=metrics,
        processes=processes,
        units=lambda: [],
        precise_clock=lambda: 20.0,
        wall_clock=wall,
        project="my-project",
    )
    return telemetry, logs, metrics, wall


def test_request_log_entries_are_shaped_like_cloud_run(tmp_path: Path) -> None:
    telemetry, logs, _, wall = make(tmp_path)
    telemetry.records += [record(200, 0.002), record(404, 0.001), record(503, 0.5)]
    wall.now += 1
    telemetry.tick()
    entries = logs.read("svc", limit=10)
    assert [entry["severity"] for entry in entries] == ["INFO", "WARNING", "ERROR"]
    first = entries[0]
    assert first["httpRequest"] == {
        "requestMethod": "GET",
        "requestUrl": "http://svc.localhost:8080/path?q=1",
        "status": 200,
        "requestSize": "56",
        "responseSize": "144",
        "latency": "0.002000s",
        "userAgent": "curl/8",
        "remoteIp": "127.0.0.1",
        "protocol": "HTTP/1.1",
    }
    assert first["trace"] == "projects/my-project/traces/0af7651916cd43dd8448eb211c80319c"
    assert (first["service"], first["revision"], first["instance"]) == (
        "svc", "svc-00001-abc", "svc-00001-abc-123456",
    )  # fmt: skip
    # It ended at 10.002 on the router's clock, which read 20 when the wall read 1.8e9 + 1.
    assert first["timestamp"] == "2027-01-15T07:59:51.002000Z"


def test_grpc_calls_log_their_protocol_and_grpc_status(tmp_path: Path) -> None:
    telemetry, logs, metrics, wall = make(tmp_path)
    telemetry.records += [
        record(200, 0.002, protocol=b"HTTP/2", grpc_status=b"5"),
        record(200, 0.002, protocol=b"HTTP/2"),
    ]
    wall.now += 1
    telemetry.tick()
    failed, plain = logs.read("svc", limit=10)
    assert failed["httpRequest"]["protocol"] == "HTTP/2" and failed["grpcStatus"] == 5
    assert "grpcStatus" not in plain
    exposition = metrics.exposition()[0].decode()
    assert (
        'homerun_grpc_calls_total{grpc_status="5",revision="svc-00001-abc",service="svc"} 1.0'
        in exposition
    )


def test_request_log_entries_escape_what_the_client_sent(tmp_path: Path) -> None:
    telemetry, logs, _, wall = make(tmp_path)
    odd = record(
        200,
        0.002,
        target=b'/say?q="hi"\\\xe9',  # a quote, a backslash and a byte above ASCII
        user_agent=b'agent "quoted"\t\\',  # a quote, a tab and a backslash
        trace=b"",  # an answer of the router's own, before any trace
    )
    telemetry.records.append(odd)
    wall.now += 1
    telemetry.tick()
    (entry,) = logs.read("svc")
    assert entry["httpRequest"]["requestUrl"] == 'http://svc.localhost:8080/say?q="hi"\\\xe9'
    assert entry["httpRequest"]["userAgent"] == 'agent "quoted"\t\\'
    assert entry["message"] == 'GET 200 /say?q="hi"\\\xe9'
    assert "trace" not in entry


def test_metrics_parse_with_prometheus_parser(tmp_path: Path) -> None:
    telemetry, _, metrics, wall = make(tmp_path)
    telemetry.records += [record(200, 0.002)] * 3 + [record(500, 0.2), record(404, 0.001, None)]
    wall.now += 1
    telemetry.tick()
    body, content_type = metrics.exposition()
    assert content_type.startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(body.decode())}
    requests = {
        (sample.labels["service"], sample.labels["code_class"]): sample.value
        for sample in families["homerun_requests"].samples
        if sample.name == "homerun_requests_total"
    }
    assert requests == {("svc", "2xx"): 3, ("svc", "5xx"): 1, ("", "4xx"): 1}
    latency_count = [
        sample.value
        for sample in families["homerun_request_latency_seconds"].samples
        if sample.name.endswith("_count") and sample.labels["service"] == "svc"
    ]
    assert latency_count == [4]


def test_series_has_one_row_per_second_with_rates_and_percentiles(tmp_path: Path) -> None:
    telemetry, _, _, wall = make(tmp_path)
    for _ in range(5):
        telemetry.records += [record(200, 0.001 * (n + 1)) for n in range(10)]
        wall.now += 1
        telemetry.tick()
    series = telemetry.series("svc", 300)
    assert len(series["t"]) == 5
    assert series["rps_2xx"] == [10.0] * 5
    assert series["p50_ms"][-1] == 6.0 and series["p99_ms"][-1] == 10.0


def test_request_logs_can_be_turned_off_and_metrics_still_count(tmp_path: Path) -> None:
    telemetry, logs, metrics, wall = make(tmp_path)
    telemetry._request_logs = False
    telemetry.records.append(record(200, 0.001))
    wall.now += 1
    telemetry.tick()
    assert logs.read("svc") == []
    assert b'homerun_requests_total{code_class="2xx"' in metrics.exposition()[0]


def test_slices_add_up_to_the_same_second(tmp_path: Path) -> None:
    import asyncio

    telemetry, logs, _, wall = make(tmp_path)
    telemetry.records += [record(200, 0.001)] * 450 + [record(503, 0.002)] * 50
    wall.now += 1
    asyncio.run(telemetry.tick_in_slices())
    series = telemetry.series("svc", 300)
    assert series["rps_2xx"] == [450.0] and series["rps_5xx"] == [50.0]
    assert len(logs.read("svc", limit=1000)) == 500


def test_rows_and_counters_read_the_live_revisions(tmp_path: Path) -> None:
    state = InstanceState
    revision = FakeRevision(
        concurrency=5,
        throttler=FakeRequests(in_flight=3, queue_length=1, waits=[0.25], wait_count=1),
        instances=[
            FakeInstanceReading("a", pid=os.getpid(), state=state.STARTING),
            FakeInstanceReading("b", pid=os.getpid(), state=state.READY),
            FakeInstanceReading("c", pid=os.getpid(), state=state.READY),
            FakeInstanceReading("d", pid=os.getpid(), state=state.DRAINING),
        ],
        startup_seconds=[0.5, 1.5],
        startups=2,
        cold_starts=1,
        liveness_restarts=1,
        memory_exceeded=1,
    )
    processes = ProcessSampler()
    metrics = Metrics(lambda: [revision], processes)
    wall = Clock(1_800_000_000.0)
    telemetry = Telemetry(
        logs=LogStore(tmp_path / "logs"),
        metrics=metrics,
        processes=processes,
        units=lambda: [revision],
        precise_clock=lambda: 20.0,
        wall_clock=wall,
    )
    wall.now += 1
    telemetry.tick()
    (row,) = telemetry.rows["svc"]
    assert (row.starting, row.ready, row.draining) == (1, 2, 1)
    assert (row.in_flight, row.queue, row.capacity, row.cold_starts) == (3, 1, 10, 1)
    assert set(row.instance_rss_mb) == {"a", "b", "c", "d"}
    # Totals become increments: only what is new since the last tick is observed again.
    revision.startup_seconds.append(2.5)
    revision.startups += 1
    revision.liveness_restarts += 1
    wall.now += 1
    telemetry.tick()
    assert telemetry.rows["svc"][-1].cold_starts == 0
    labels = {"service": "svc", "revision": "svc-00001-abc"}
    startup_count = metrics.registry.get_sample_value(
        "homerun_instance_startup_seconds_count", labels
    )
    startup_sum = metrics.registry.get_sample_value("homerun_instance_startup_seconds_sum", labels)
    assert (startup_count, startup_sum) == (3, 4.5)
    assert metrics.registry.get_sample_value("homerun_queue_wait_seconds_count", labels) == 1
    assert metrics.registry.get_sample_value("homerun_cold_starts_total", labels) == 1
    assert metrics.registry.get_sample_value("homerun_liveness_restarts_total", labels) == 2
    revision.memory_exceeded += 1
    wall.now += 1
    telemetry.tick()
    memory_ends = metrics.registry.get_sample_value("homerun_memory_limit_exceeded_total", labels)
    assert memory_ends == 2
