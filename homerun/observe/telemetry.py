"""Turns what the router and the revisions did each second into logs, metrics and charts.

The router only appends a tuple per finished request (see proxy.RequestRecord); once a second
`tick()` takes the batch and does the rest: request log entries, Prometheus counters, and a
row of the per-service time series the dashboard draws (one hour at one-second resolution).
"""

from __future__ import annotations

import asyncio
import re
import sys
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson

from homerun.model.states import InstanceState
from homerun.observe.logs import LogStore, entry_tail, iso_time_bytes
from homerun.observe.metrics import Metrics
from homerun.observe.processes import ProcessSampler
from homerun.observe.sources import RevisionSource
from homerun.routing.types import RequestRecord

HISTORY_SECONDS = 3600
SLICE = 200  # requests processed between two yields to the router's event loop
CODE_CLASSES = ("2xx", "3xx", "4xx", "5xx")
# status // 100 -> the metric's code_class label; 0 is a request that got no response.
_CODE_CLASSES = {0: "aborted", 1: "1xx", 2: "2xx", 3: "3xx", 4: "4xx", 5: "5xx"}
# A request log entry, as Cloud Run writes it (a LogEntry with an HttpRequest), up to its
# closing fields (entry_tail).
_REQUEST_ENTRY = (
    b'{"timestamp":"%s","severity":"%s","httpRequest":{"requestMethod":"%s",'
    b'"requestUrl":"http://%s%s","requestSize":"%d","responseSize":"%d","latency":"%.6fs",'
    b'"userAgent":%s,"remoteIp":"%s","protocol":"%s"%s},"message":"%s %s %s"%s%s'
)
# The traceparent the router forwarded (routing/trace.py): version-trace-span-flags, the
# fields' widths fixed (2, 32, 16 and 2 hex digits), perhaps more fields after.
_ODD_HEX = frozenset(b"%x" % digit for digit in range(1, 16, 2))
_TRACEPARENT = re.compile(rb"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}").match


@dataclass
class Row:
    """One second of one service."""

    t: float
    rps: dict[str, float]
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    starting: int
    ready: int
    draining: int
    in_flight: int
    capacity: int
    queue: int
    cold_starts: int
    instance_cpu_percent: dict[str, float] = field(default_factory=dict)
    instance_rss_mb: dict[str, float] = field(default_factory=dict)


@dataclass
class _Second:
    """The requests of one tick and what they add up to, while they are being processed."""

    batch: list[RequestRecord]
    wall: float
    elapsed: float
    offset: float
    # (service, revision, code class) -> requests; "" for a request with no service.
    counts: dict[tuple[str, str, str], int] = field(default_factory=dict)
    # (service, revision) -> latencies in seconds
    latencies: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    # (service, revision, grpc-status) -> gRPC calls
    grpc_calls: dict[tuple[str, str, str], int] = field(default_factory=dict)


@dataclass
class _Seen:
    """Counters of a revision as of the last tick, to turn totals into increments."""

    waits: int = 0
    startups: int = 0
    cold_starts: int = 0
    liveness_restarts: int = 0
    memory_exceeded: int = 0


class Telemetry:
    def __init__(
        self,
        *,
        logs: LogStore,
        metrics: Metrics,
        processes: ProcessSampler,
        units: Callable[[], Iterable[RevisionSource]],
        precise_clock: Callable[[], float],
        request_logs: bool = True,
        wall_clock: Callable[[], float] = time.time,
        project: str = "homerun-local",
    ) -> None:
        self._logs = logs
        self._metrics = metrics
        self._processes = processes
        self._units = units
        self._precise_clock = precise_clock
        self._wall_clock = wall_clock
        self._request_logs = request_logs
        # A request entry's trace is projects/PROJECT/traces/ID, as Cloud Run's.
        self._trace_prefix = b"projects/%s/traces/" % project.encode()
        # The router appends here (router.on_request = telemetry.records.append).
        self.records: list[RequestRecord] = []
        self.rows: dict[str, deque[Row]] = defaultdict(lambda: deque(maxlen=HISTORY_SECONDS))
        self._seen: dict[str, _Seen] = {}
        self._cpu_seen: dict[str, tuple[float, float]] = {}  # instance -> (wall, cpu seconds)
        self._last_tick = wall_clock()

    def tick(self) -> None:
        """One second's work in one go."""
        second = self._begin()
        self._requests(second, second.batch)
        self._finish(second)

    async def sample_every(self, seconds: float) -> None:
        """Tick every `seconds` until cancelled; a tick that fails is said on stderr, and the
        sampling goes on."""
        while True:
            await asyncio.sleep(seconds)
            try:
                await self.tick_in_slices()
            except Exception as error:  # a bug here must not stop the sampling
                print(f"homerun: telemetry failed: {error!r}", file=sys.stderr, flush=True)

    async def tick_in_slices(self) -> None:
        """The same, yielding to the event loop between slices of requests.

        A second of a busy router is thousands of records at some 15 µs each: done at once,
        that holds the router's loop for tens of milliseconds, which its clients see as p99.
        """
        second = self._begin()
        batch = second.batch
        for start in range(0, len(batch), SLICE):
            self._requests(second, batch[start : start + SLICE])
            await asyncio.sleep(0)
        self._finish(second)

    def _begin(self) -> _Second:
        wall = self._wall_clock()
        elapsed = max(wall - self._last_tick, 1e-3)
        self._last_tick = wall
        batch = self.records.copy()
        self.records.clear()
        # The router's clock -> wall time, for the timestamps of requests that ended.
        return _Second(batch, wall, elapsed, wall - self._precise_clock())

    def _requests(self, second: _Second, records: list[RequestRecord]) -> None:
        for record in records:
            self._request(record, second)

    def _finish(self, second: _Second) -> None:
        wall, elapsed = second.wall, second.elapsed
        # Metrics take the second's requests in one call per series, not one per request.
        counts: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(CODE_CLASSES, 0))
        for (service, revision, code_class), count in second.counts.items():
            self._metrics.requests.labels(service, revision, code_class).inc(count)
            if service and code_class in CODE_CLASSES:
                counts[service][code_class] += count
        for labels, count in second.grpc_calls.items():
            self._metrics.grpc_calls.labels(*labels).inc(count)
        latencies: dict[str, list[float]] = defaultdict(list)
        for (service, revision), values in second.latencies.items():
            self._metrics.latency.observe_many((service, revision), values)
            if service:
                latencies[service] += values
        by_service: dict[str, list[RevisionSource]] = defaultdict(list)
        live: set[str] = set()  # instance names
        for unit in list(self._units()):
            by_service[unit.service].append(unit)
            self._revision_counters(unit)
            live.update(instance.name for instance in unit.instances)
        for service in set(by_service) | set(counts):
            units = by_service.get(service, [])
            row = self._row(service, units, wall, elapsed, counts, latencies)
            self.rows[service].append(row)
        for name in [name for name in self._cpu_seen if name not in live]:
            del self._cpu_seen[name]  # an instance that is gone

    def forget(self, service: str) -> None:
        self.rows.pop(service, None)

    # -- per request ----------------------------------------------------------------------

    def _request(self, record: RequestRecord, second: _Second) -> None:
        (arrival, finished, method, url, host, status, request_bytes, response_bytes,
         user_agent, remote_ip, protocol, trace, service, revision, instance,
         grpc_status) = record  # fmt: skip
        latency = finished - arrival
        code_class = _CODE_CLASSES.get(status // 100) or f"{status // 100}xx"
        key = (service or "", revision or "")
        counted = (*key, code_class)
        second.counts[counted] = second.counts.get(counted, 0) + 1
        latencies = second.latencies.get(key)
        if latencies is None:
            latencies = second.latencies[key] = []
        latencies.append(latency)
        if grpc_status:
            call = (*key, grpc_status.decode("latin-1"))
            second.grpc_calls[call] = second.grpc_calls.get(call, 0) + 1
        if service is None or not self._request_logs:
            return  # a request with no service (an unknown host, a malformed request) has no log
        # The entry is built from bytes: the method is an HTTP token and the host matched the
        # router's pattern, so only the target and the user agent need JSON escaping.
        target = orjson.dumps(url.decode("latin-1"))[1:-1]
        status_field = b',"status":%d' % status if status else b""
        trace_field = b""
        if _TRACEPARENT(trace):
            # As Cloud Run's request log: the trace, the span the router sent, and the sampled
            # flag (the flags' lowest bit).
            trace_field = b',"trace":"%s%s","spanId":"%s","traceSampled":%s' % (
                self._trace_prefix,
                trace[3:35],
                trace[36:52],
                b"true" if trace[54:55] in _ODD_HEX else b"false",
            )
        if grpc_status.isdigit():
            # A gRPC call's outcome, from the instance's trailers: its HTTP status is 200.
            trace_field += b',"grpcStatus":%d' % int(grpc_status)
        self._logs.emit_serialized(
            service,
            _REQUEST_ENTRY
            % (
                iso_time_bytes(finished + second.offset),
                b"ERROR" if status >= 500 else b"WARNING" if status >= 400 else b"INFO",
                method,
                host,
                target,
                request_bytes,
                response_bytes,
                latency,
                orjson.dumps(user_agent.decode("latin-1")),
                remote_ip,
                protocol,
                status_field,
                method,
                b"%d" % status if status else b"-",
                target,
                trace_field,
                entry_tail(service, revision, instance, "requests"),
            ),
        )

    # -- per revision and service ----------------------------------------------------------

    def _revision_counters(self, unit: RevisionSource) -> None:
        seen = self._seen.setdefault(unit.name, _Seen())
        labels = (unit.service, unit.name)
        waits = unit.throttler.waits
        for seconds in list(waits)[
            len(waits) - min(unit.throttler.wait_count - seen.waits, len(waits)) :
        ]:
            self._metrics.queue_wait.labels(*labels).observe(seconds)
        seen.waits = unit.throttler.wait_count
        startups = unit.startup_seconds
        for seconds in list(startups)[
            len(startups) - min(unit.startups - seen.startups, len(startups)) :
        ]:
            self._metrics.startup.labels(*labels).observe(seconds)
        seen.startups = unit.startups
        if unit.cold_starts > seen.cold_starts:
            self._metrics.cold_starts.labels(*labels).inc(unit.cold_starts - seen.cold_starts)
        if unit.liveness_restarts > seen.liveness_restarts:
            restarts = unit.liveness_restarts - seen.liveness_restarts
            self._metrics.liveness_restarts.labels(*labels).inc(restarts)
            seen.liveness_restarts = unit.liveness_restarts
        if unit.memory_exceeded > seen.memory_exceeded:
            ended = unit.memory_exceeded - seen.memory_exceeded
            self._metrics.memory_exceeded.labels(*labels).inc(ended)
            seen.memory_exceeded = unit.memory_exceeded

    def _row(
        self,
        service: str,
        units: list[RevisionSource],
        wall: float,
        elapsed: float,
        counts: dict[str, dict[str, int]],
        latencies: dict[str, list[float]],
    ) -> Row:
        ordered = sorted(latencies.get(service, ()))
        p50, p95, p99 = (_percentile_ms(ordered, q) for q in (0.5, 0.95, 0.99))
        cold_starts = 0
        for unit in units:
            seen = self._seen.setdefault(unit.name, _Seen())
            cold_starts += unit.cold_starts - seen.cold_starts
            seen.cold_starts = unit.cold_starts
        row = Row(
            t=round(wall, 3),
            rps={code: count / elapsed for code, count in counts[service].items()},
            p50_ms=p50,
            p95_ms=p95,
            p99_ms=p99,
            starting=sum(unit.count(InstanceState.STARTING) for unit in units),
            ready=sum(unit.count(InstanceState.READY) for unit in units),
            draining=sum(unit.count(InstanceState.DRAINING) for unit in units),
            in_flight=sum(unit.throttler.in_flight for unit in units),
            capacity=sum(unit.count(InstanceState.READY) * unit.concurrency for unit in units),
            queue=sum(unit.throttler.queue_length for unit in units),
            cold_starts=cold_starts,
        )
        for unit in units:
            for instance in list(unit.instances):
                usage = self._processes.usage(instance.pid)
                if usage is None:
                    continue
                previous = self._cpu_seen.get(instance.name)
                self._cpu_seen[instance.name] = (wall, usage.cpu_seconds)
                if previous is not None and wall > previous[0]:
                    used = max(0.0, usage.cpu_seconds - previous[1]) / (wall - previous[0])
                    row.instance_cpu_percent[instance.name] = round(100 * used, 1)
                row.instance_rss_mb[instance.name] = round(usage.rss_bytes / 2**20, 1)
        return row

    # -- what the dashboard reads --------------------------------------------------------------

    def series(self, service: str, window: int) -> dict[str, Any]:
        """The last `window` seconds of a service; an hour is averaged into 10 s steps."""
        since = self._wall_clock() - window
        rows = [row for row in self.rows.get(service, ()) if row.t >= since]
        step = 1 if window <= 300 else 10
        groups = [rows[start : start + step] for start in range(0, len(rows), step)]
        names = sorted({name for row in rows for name in row.instance_rss_mb})
        series: dict[str, Any] = {"t": [group[-1].t for group in groups]}
        for code in CODE_CLASSES:
            series[f"rps_{code}"] = [_mean(r.rps.get(code, 0.0) for r in g) for g in groups]
        for name in ("p50_ms", "p95_ms", "p99_ms"):
            series[name] = [_max_or_none(getattr(r, name) for r in g) for g in groups]
        for name in ("starting", "ready", "draining", "in_flight", "capacity", "queue"):
            series[name] = [max(getattr(r, name) for r in g) for g in groups]
        series["cold_starts"] = [sum(r.cold_starts for r in g) for g in groups]
        series["instance_cpu_percent"] = {
            name: [_mean_or_none(r.instance_cpu_percent.get(name) for r in g) for g in groups]
            for name in names
        }
        series["instance_rss_mb"] = {
            name: [_max_or_none(r.instance_rss_mb.get(name) for r in g) for g in groups]
            for name in names
        }
        return series


def _percentile_ms(ordered: list[float], quantile: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, int(quantile * len(ordered)))
    return round(ordered[index] * 1000, 3)


def _mean(values: Iterable[float]) -> float:
    items = list(values)
    return round(sum(items) / len(items), 3) if items else 0.0


def _mean_or_none(values: Iterable[float | None]) -> float | None:
    items = [value for value in values if value is not None]
    return round(sum(items) / len(items), 3) if items else None


def _max_or_none(values: Iterable[float | None]) -> float | None:
    items = [value for value in values if value is not None]
    return max(items) if items else None
