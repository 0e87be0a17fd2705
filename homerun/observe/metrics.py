"""Prometheus metrics per service and revision, from request records and the live state."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from homerun.observe.processes import ProcessSampler
from homerun.scaling.supervisor import DRAINING, READY, STARTING, RevisionUnit

# Latency buckets from 1 ms (a proxied hello world) to the 300 s default request timeout.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
)  # fmt: skip
STARTUP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 240)


class Metrics:
    def __init__(
        self, units: Callable[[], Iterable[RevisionUnit]], processes: ProcessSampler
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        labels = ("service", "revision")
        self.requests = Counter(
            "homerun_requests",
            "Requests answered, by class of response code (2xx, 3xx, 4xx, 5xx).",
            (*labels, "code_class"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "homerun_request_latency_seconds",
            "Time from a request's arrival at the router to the end of its response.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.queue_wait = Histogram(
            "homerun_queue_wait_seconds",
            "Arrival to first response byte of requests that waited for an instance slot.",
            labels,
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.startup = Histogram(
            "homerun_instance_startup_seconds",
            "Time from starting an instance to it listening on $PORT.",
            labels,
            buckets=STARTUP_BUCKETS,
            registry=self.registry,
        )
        self.cold_starts = Counter(
            "homerun_cold_starts",
            "Instances started while their revision had none ready (scale from zero).",
            labels,
            registry=self.registry,
        )
        self.registry.register(_LiveState(units, processes))

    def exposition(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


class _LiveState:
    """Gauges read from the running revisions at scrape time."""

    def __init__(
        self, units: Callable[[], Iterable[RevisionUnit]], processes: ProcessSampler
    ) -> None:
        self._units = units
        self._processes = processes

    def describe(self) -> Iterator[Metric]:
        return iter(())  # families vary with the revisions present; collect() tells

    def collect(self) -> Iterator[Metric]:
        labels = ["service", "revision"]
        in_flight = GaugeMetricFamily(
            "homerun_requests_in_flight", "Requests being served by an instance.", labels=labels
        )
        queued = GaugeMetricFamily(
            "homerun_queue_length", "Requests waiting for an instance slot.", labels=labels
        )
        instances = GaugeMetricFamily(
            "homerun_instances", "Instances by state.", labels=[*labels, "state"]
        )
        concurrency = GaugeMetricFamily(
            "homerun_container_concurrency",
            "The most requests an instance is given at once (--concurrency).",
            labels=labels,
        )
        overloaded = CounterMetricFamily(
            "homerun_overloaded_requests",
            "Requests answered 429 after waiting at max-instances.",
            labels=labels,
        )
        instance_labels = [*labels, "instance"]
        cpu = CounterMetricFamily(
            "homerun_instance_cpu_seconds",
            "CPU time of an instance's processes (user + system).",
            labels=instance_labels,
        )
        memory = GaugeMetricFamily(
            "homerun_instance_resident_memory_bytes",
            "Resident memory of an instance's processes.",
            labels=instance_labels,
        )
        for unit in list(self._units()):
            key = [unit.service, unit.name]
            in_flight.add_metric(key, unit.throttler.in_flight)
            queued.add_metric(key, unit.throttler.queue_length)
            for state in (STARTING, READY, DRAINING):
                instances.add_metric([*key, state], unit.count(state))
            concurrency.add_metric(key, unit.concurrency)
            overloaded.add_metric(key, unit.overloaded_requests)
            for instance in list(unit.instances):
                usage = self._processes.usage(instance.process.pid)
                if usage is None:
                    continue
                cpu.add_metric([*key, instance.name], usage.cpu_seconds)
                memory.add_metric([*key, instance.name], usage.rss_bytes)
        yield from (in_flight, queued, instances, concurrency, overloaded, cpu, memory)
