"""`homerun services advise --ramp`: a bounded load on one private instance of the latest
revision (the router never sends it live traffic), concurrency level after level, then the
advice with the knee (observe/ramp.py decides the levels and the knee)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import httpx

from homerun.control._namespace_transport import NamespaceTransport
from homerun.control.advice import Advisor
from homerun.control.live import LiveRevisions
from homerun.errors import InvalidSpec, NotFound
from homerun.model.inspection import Advice, RampRequest, RampResult, RampStep
from homerun.observe.ramp import knee, percentile_ms, ramp_levels, step_seconds
from homerun.runtime.netns import NetNamespace
from homerun.scaling.supervisor import Supervisor
from homerun.store import Store

# A request still running this long after its level's time is up counts as an error.
_OVERTIME_SECONDS = 30.0
# The inspector writes its snapshot every second: wait for the one after the load.
_SNAPSHOT_SECONDS = 1.2


class Ramp:
    def __init__(
        self,
        *,
        store: Store,
        live: LiveRevisions,
        supervisor: Supervisor,
        advisor: Advisor,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._live = live
        self._supervisor = supervisor
        self._advisor = advisor
        self._clock = clock
        self._running: set[str] = set()  # services being ramped: one ramp each at a time

    async def run(self, service: str, request: RampRequest) -> Advice:
        revision = self._store.latest_ready(service)
        if revision is None:
            self._store.service(service)  # NotFound for an unknown service
            raise NotFound(f"service {service!r} has no ready revision to ramp; deploy it first")
        if service in self._running:
            raise InvalidSpec(f"a ramp of {service} is running already; wait for its advice")
        self._running.add(service)
        try:
            return await self._run(revision.name, service, request)
        finally:
            self._running.discard(service)

    async def _run(self, name: str, service: str, request: RampRequest) -> Advice:
        revision = self._store.revision(name)
        unit = self._live.unit(revision)
        before = self._advisor.for_revision(revision)
        capacity = before.capacity
        capacities = []
        if capacity is not None and capacity.requests_at_once:
            capacities.append(capacity.requests_at_once)
        if capacity is not None and capacity.sync_pool:
            capacities.append(capacity.sync_pool * capacity.workers)
        levels = ramp_levels(
            request.max_concurrency or revision.spec.container_concurrency, capacities
        )
        seconds = step_seconds(request.duration_seconds, levels)
        timeout = min(float(revision.spec.timeout_seconds), seconds + _OVERTIME_SECONDS)
        began = self._clock()
        async with self._supervisor.private_instance(unit) as instance:
            # In a thread with its own event loop: the router's loop keeps serving live
            # traffic at its usual latency while the ramp loads the private instance.
            steps = await asyncio.to_thread(
                asyncio.run,
                _load(
                    port=instance.port,
                    network=instance.network,
                    host=f"{service}.localhost",
                    request=request,
                    levels=levels,
                    seconds=seconds,
                    request_timeout=timeout,
                ),
            )
            await asyncio.sleep(_SNAPSHOT_SECONDS)
            port = instance.port
            name_of_instance = instance.name
        best = knee(steps)
        ramp = RampResult(
            steps=steps,
            knee=best.concurrency if best else None,
            knee_rps=best.requests_per_second if best else None,
            instance=name_of_instance,
            seconds=round(self._clock() - began, 2),
        )
        self._advisor.remember(revision.name, ramp)
        # What the private instance measured inside (its snapshots are those of its port).
        return await asyncio.to_thread(
            self._advisor.for_revision,
            revision,
            port=port,
            ramp=ramp,
            target_rps=request.target_rps,
        )


async def _load(
    *,
    port: int,
    network: NetNamespace | None,
    host: str,
    request: RampRequest,
    levels: list[int],
    seconds: float,
    request_timeout: float,
) -> list[RampStep]:
    """Each level in turn: `level` workers, each sending its next request when the last one
    is answered, for `seconds`; all levels together send at most request.max_requests. In the
    revision's network namespace when it has one (its own thread enters it for each new
    connection: this load runs in a thread of its own)."""
    budget = [request.max_requests]
    steps = []
    limits = httpx.Limits(max_connections=max(levels) + 1, max_keepalive_connections=max(levels))
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}",
        headers={"Host": host, "User-Agent": "homerun-advise"},
        limits=limits,
        timeout=request_timeout,
        trust_env=False,
        transport=NamespaceTransport(network, limits) if network is not None else None,
    ) as client:
        for level in levels:
            if budget[0] <= 0:
                break
            steps.append(await _step(client, request, level, seconds, budget))
    return steps


async def _step(
    client: httpx.AsyncClient, request: RampRequest, level: int, seconds: float, budget: list[int]
) -> RampStep:
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + seconds
    latencies: list[float] = []
    errors = [0]  # no answer, or a 5xx
    sent_count = [0]

    async def worker() -> None:
        while loop.time() < deadline and budget[0] > 0:
            budget[0] -= 1
            sent_count[0] += 1
            sent = loop.time()
            try:
                response = await client.request(request.method, request.path)
                await response.aclose()
            except httpx.HTTPError:
                errors[0] += 1
                continue
            if response.status_code >= 500:
                errors[0] += 1
            else:
                latencies.append(loop.time() - sent)

    await asyncio.gather(*(worker() for _ in range(level)))
    elapsed = max(loop.time() - started, 1e-6)
    return RampStep(
        concurrency=level,
        seconds=round(elapsed, 3),
        requests=sent_count[0],
        errors=errors[0],
        requests_per_second=_throughput(level, latencies),
        p50_ms=percentile_ms(latencies, 0.5),
        p99_ms=percentile_ms(latencies, 0.99),
    )


def _throughput(level: int, latencies: list[float]) -> float:
    """Requests/s at this level, by Little's law: `level` requests always in flight, each
    taking the mean latency. A step holds only a few rounds of a slow endpoint's requests
    (2 s of 1 s requests), so counting those finished in its time would swing by a round;
    the mean latency of every answered request does not."""
    if not latencies:
        return 0.0
    return round(level / (sum(latencies) / len(latencies)), 2)
