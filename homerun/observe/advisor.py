"""The concurrency advisor's decision: from a revision's settings, its server's capacity and
what the inspector measured, the --concurrency to set and why. Pure: no I/O, no clock."""

from __future__ import annotations

import math

from homerun.model.cost import (
    DEFAULT_PRICES,
    PriceTable,
    Usage,
    estimate,
    per_million_requests,
)
from homerun.model.inspection import (
    Advice,
    Capacity,
    Finding,
    RampResult,
    RevisionInspection,
)
from homerun.model.limits import below_one_cpu
from homerun.observe.ramp import instances_for

# Stalls at one place from this many requests make the loop, not --concurrency, the limit.
REPEATED_STALLS = 3


def advise(
    *,
    service: str,
    revision: str,
    concurrency: int,
    declared: Capacity | None,
    inspection: RevisionInspection | None,
    ramp: RampResult | None = None,
    target_rps: float | None = None,
    usage: Usage | None = None,
    prices: PriceTable = DEFAULT_PRICES,
    cpu: str | None = None,
) -> Advice:
    """The advice for one revision. `declared` is the capacity read from its start command;
    the inspector's measured capacity, when there is one, wins (gunicorn may read a config
    file or GUNICORN_CMD_ARGS that the command does not show)."""
    capacity = inspection.capacity if inspection and inspection.capacity else declared
    findings: list[Finding] = []
    recommended = concurrency
    server_settings = None

    if capacity is not None and capacity.requests_at_once is not None:
        at_once = capacity.requests_at_once
        if at_once < concurrency:
            threads = math.ceil(concurrency / capacity.workers)
            findings.append(
                Finding(
                    kind="capacity-below-concurrency",
                    severity="warning",
                    message=(
                        f"gunicorn runs {capacity.workers} worker(s) x {capacity.threads} "
                        f"thread(s) = {at_once} request(s) at once behind --concurrency "
                        f"{concurrency}: up to {concurrency - at_once} requests wait inside "
                        "gunicorn while the router and the autoscaler count them as served, so "
                        "no instance is added for them. Set --concurrency "
                        f"{at_once}, or give gunicorn --threads {threads} (with "
                        f"--workers {capacity.workers})."
                    ),
                )
            )
            recommended = at_once
            server_settings = f"gunicorn --workers {capacity.workers} --threads {threads}"
        elif capacity.source == "measured" and inspection and inspection.saturated_seconds > 0:
            findings.append(
                Finding(
                    kind="threads-saturated",
                    severity="info",
                    message=(
                        f"all {at_once} of gunicorn's threads were busy for "
                        f"{inspection.saturated_seconds:.1f} s in all: the router's "
                        f"--concurrency {concurrency} is what held the rest back."
                    ),
                )
            )

    if inspection is not None:
        findings.extend(_loop_findings(inspection))
        blocked = _loop_is_the_limit(inspection)
        if blocked:
            recommended = 1
        findings.extend(_pool_findings(inspection, capacity, concurrency))
        if (
            not blocked
            and capacity is not None
            and capacity.sync_pool
            and inspection.pool_peak_waiting
        ):
            pool_capacity = capacity.sync_pool * capacity.workers
            if pool_capacity < recommended:
                recommended = pool_capacity

    instances = None
    per_million = None
    if ramp is not None and ramp.knee is not None and ramp.knee_rps and usage is not None:
        per_million = per_million_requests(ramp.knee_rps, usage.vcpus, usage.gib, prices)
    if ramp is not None and ramp.knee is not None and ramp.knee_rps:
        findings.append(_ramp_finding(ramp))
        # What the instance did under load wins over what its settings imply.
        recommended = ramp.knee
        if target_rps:
            instances = instances_for(target_rps, ramp.knee_rps)
    elif ramp is not None:
        findings.append(
            Finding(
                kind="ramp-failed",
                severity="warning",
                message="the ramp got no level answered without errors (5xx or no answer) "
                "from the private instance: check the path and method, and the app's logs",
            )
        )

    if not findings:
        findings.append(
            Finding(
                kind="no-limit-seen",
                severity="info",
                message=(
                    "nothing measured so far limits an instance below --concurrency "
                    f"{concurrency}"
                    + (
                        ""
                        if inspection
                        else " (no instance has reported yet: send it some requests, then "
                        "ask again)"
                    )
                    + "."
                ),
            )
        )
    recommended = max(1, recommended)
    recommended_cpu = None
    if recommended > 1 and below_one_cpu(cpu):
        recommended_cpu = "1"
        findings.append(
            Finding(
                kind="cpu-below-one",
                severity="info",
                message=(
                    f"at --cpu {cpu}, below one CPU, an instance takes one request at a time, "
                    f"as on Cloud Run: --concurrency {recommended} needs --cpu 1 or more."
                ),
            )
        )
    return Advice(
        service=service,
        revision=revision,
        concurrency=concurrency,
        recommended_concurrency=recommended,
        recommended_cpu=recommended_cpu,
        capacity=capacity,
        server_settings=server_settings,
        findings=findings,
        inspection=inspection,
        ramp=ramp,
        target_rps=target_rps,
        instances_for_target=instances,
        cost=estimate(usage, prices) if usage is not None else None,
        cost_per_million_at_knee=per_million,
    )


def _ramp_finding(ramp: RampResult) -> Finding:
    at_knee = next(step for step in ramp.steps if step.concurrency == ramp.knee)
    last = ramp.steps[-1]
    beyond = (
        f"; at {last.concurrency} in flight it served {last.requests_per_second:g} req/s with "
        f"p99 {last.p99_ms} ms: past the knee, requests only wait"
        if last.concurrency > at_knee.concurrency
        else ""
    )
    return Finding(
        kind="ramp",
        severity="info",
        message=(
            f"a ramp on a private instance ({ramp.instance}): throughput grew to "
            f"{at_knee.requests_per_second:g} req/s at {at_knee.concurrency} request(s) in "
            f"flight (p50 {at_knee.p50_ms} ms, p99 {at_knee.p99_ms} ms){beyond}."
        ),
    )


def _loop_findings(inspection: RevisionInspection) -> list[Finding]:
    findings = []
    for place in inspection.blocking[:3]:
        per_second = 1000.0 / place.worst_ms if place.worst_ms else None
        ceiling = (
            f" While it runs nothing else does: at {place.worst_ms:.0f} ms a request, an "
            f"instance serves about {per_second:.0f} of them per second, whatever "
            "--concurrency says."
            if per_second
            else ""
        )
        findings.append(
            Finding(
                kind="blocking-call",
                severity="warning",
                message=(
                    f"the event loop was blocked {place.count} time(s), up to "
                    f"{place.worst_ms:.0f} ms, at {place.place} in {place.function}: a "
                    "blocking call inside a coroutine (async def)." + ceiling + " Await an "
                    "async version, run the call with asyncio.to_thread or starlette's "
                    "run_in_threadpool, or make the endpoint a plain def (Starlette then runs "
                    "it in its thread pool)."
                ),
            )
        )
    return findings


def _loop_is_the_limit(inspection: RevisionInspection) -> bool:
    """True when a place blocked the loop again and again (a code path requests take, not a
    one-off at startup): requests then queue in the loop one behind the other, and a
    --concurrency of 1 lets the autoscaler add instances for them instead."""
    return any(place.count >= REPEATED_STALLS for place in inspection.blocking)


def _pool_findings(
    inspection: RevisionInspection, capacity: Capacity | None, concurrency: int
) -> list[Finding]:
    if not inspection.pool_total or not (
        inspection.pool_peak_waiting or inspection.pool_full_seconds
    ):
        return []
    workers = capacity.workers if capacity else 1
    total = inspection.pool_total * workers
    return [
        Finding(
            kind="sync-pool-full",
            severity="warning",
            message=(
                f"the `def` endpoints run in anyio's thread pool of {inspection.pool_total} "
                f"threads per worker ({total} per instance): it was full for "
                f"{inspection.pool_full_seconds:.1f} s with up to {inspection.pool_peak_waiting} "
                f"request(s) waiting for a thread, behind --concurrency {concurrency}. At 1 s "
                f"a request that is about {total} requests/s per instance. Set --concurrency "
                f"{total} so the autoscaler adds instances instead, or make the endpoints "
                "async def with awaited I/O."
            ),
        )
    ]
