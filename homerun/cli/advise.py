"""`homerun services advise SERVICE`: the --concurrency to set and why, from what the runtime
inspector measured in the service's instances; and describe's capacity lines."""

from __future__ import annotations

import argparse
import textwrap
from pathlib import Path

from pydantic import ValidationError

from homerun.cli._chart import write_chart
from homerun.cli._commands import command, flag, positional
from homerun.cli._context import Context
from homerun.cli._output import print_json
from homerun.errors import HomerunError
from homerun.model.cost import CostEstimate
from homerun.model.inspection import Capacity, RampRequest, RevisionInspection
from homerun.model.views import RevisionSummary
from homerun.spec import validate_service_name


@command(
    "advise",
    "the --concurrency to set for a service and why, from what its instances measured "
    "(and, with --ramp, from a bounded load on a private instance)",
    positional("service", "SERVICE", "the service's name"),
    flag(
        "--ramp",
        action="store_true",
        help="load one private instance of the latest revision (never the ones serving "
        "traffic), level after level up to --max-concurrency, and find the knee",
    ),
    flag("--path", help="the path the ramp requests (default /); implies --ramp"),
    flag("--method", help="the ramp's HTTP method (default GET); implies --ramp"),
    flag(
        "--max-concurrency",
        type=int,
        help="the ramp's highest level (default: the revision's --concurrency); implies --ramp",
    ),
    flag(
        "--duration",
        type=float,
        help="seconds the whole ramp may load (default 30, at most 300); implies --ramp",
    ),
    flag(
        "--target-rps",
        type=float,
        help="requests/s to serve: the advice says how many instances that takes; implies --ramp",
    ),
    flag(
        "--chart",
        metavar="FILE.png",
        help="draw the ramp (requests/s and latency against requests in flight) to a PNG",
    ),
    flag("--format", choices=["text", "json"], default="text", help="json: the advice as data"),
    examples=[
        ("Ask after some traffic what limits hello's instances", "homerun services advise hello"),
        (
            "Ramp a private instance on GET /produtos for 20 s and size for 200 req/s",
            "homerun advise hello --path /produtos --duration 20 --target-rps 200",
        ),
    ],
)
def advise(arguments: argparse.Namespace, context: Context) -> int:
    service = validate_service_name(arguments.service)
    ramp = _ramp_request(arguments)
    if arguments.chart and ramp is None:
        ramp = RampRequest()  # a chart is of a ramp
    advice = context.client().advise(service, ramp)
    if arguments.chart:
        write_chart(advice, Path(arguments.chart))
    if arguments.format == "json":
        print_json(advice)
        return 0
    print(f"Service {advice.service}, revision {advice.revision}")
    print(f"  --concurrency now:  {advice.concurrency}")
    print(f"  Server capacity:    {capacity_text(advice.capacity)}")
    if advice.inspection is not None:
        for line in inspection_lines(advice.inspection):
            print(f"  {line}")
    if advice.ramp is not None:
        print(f"  Ramp ({advice.ramp.seconds:g} s, private instance {advice.ramp.instance}):")
        if arguments.chart:
            print(f"    chart: {arguments.chart}")
        print(f"    {'IN FLIGHT':>9} {'REQ/S':>9} {'P50 MS':>9} {'P99 MS':>9} {'ERRORS':>7}")
        for step in advice.ramp.steps:
            mark = "  <- knee" if step.concurrency == advice.ramp.knee else ""
            print(
                f"    {step.concurrency:>9} {step.requests_per_second:>9g} "
                f"{_ms(step.p50_ms):>9} {_ms(step.p99_ms):>9} {step.errors:>7}{mark}"
            )
    print("  Findings:")
    for finding in advice.findings:
        text = textwrap.fill(
            f"{finding.severity}: {finding.message}",
            width=96,
            initial_indent="    - ",
            subsequent_indent="      ",
        )
        print(text)
    change = (
        "keep it"
        if advice.recommended_concurrency == advice.concurrency
        else f"homerun services update {advice.service} "
        f"--concurrency {advice.recommended_concurrency}"
        + (f" --cpu {advice.recommended_cpu}" if advice.recommended_cpu else "")
    )
    print(f"  Recommended --concurrency: {advice.recommended_concurrency} ({change})")
    if advice.server_settings:
        print(f"  Or change the server: {advice.server_settings}")
    for line in cost_lines(advice.cost, "Cost so far"):
        print(f"  {line}")
    for line in cost_lines(advice.cost_per_million_at_knee, "A million requests at the knee"):
        print(f"  {line}")
    if advice.instances_for_target is not None:
        print(
            f"  For {advice.target_rps:g} req/s: {advice.instances_for_target} instance(s) at "
            f"the knee (--min-instances {advice.instances_for_target} keeps them warm)"
        )
    return 0


def cost_lines(estimate: CostEstimate | None, title: str) -> list[str]:
    """Both billing settings, in Cloud Run's units, with the price table's date."""
    if estimate is None:
        return []
    lines = [f"{title} on Cloud Run (prices of {estimate.prices_date}):"]
    for cost in estimate.costs:
        requests = f", {cost.requests:,} requests" if cost.requests else ""
        lines.append(
            f"  {cost.billing:<15} ${cost.usd:.6f} ({cost.vcpu_seconds:,.1f} vCPU-s, "
            f"{cost.gib_seconds:,.1f} GiB-s{requests}); after the free tier "
            f"${cost.usd_after_free_tier:.6f}"
        )
    return lines


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def _ramp_request(arguments: argparse.Namespace) -> RampRequest | None:
    given = {
        "path": arguments.path,
        "method": arguments.method.upper() if arguments.method else None,
        "max_concurrency": arguments.max_concurrency,
        "duration_seconds": arguments.duration,
        "target_rps": arguments.target_rps,
    }
    given = {key: value for key, value in given.items() if value is not None}
    if not given and not arguments.ramp:
        return None
    try:
        return RampRequest(**given)
    except ValidationError as error:
        flags = {
            "path": "--path",
            "method": "--method",
            "max_concurrency": "--max-concurrency",
            "duration_seconds": "--duration",
            "target_rps": "--target-rps",
        }
        problems = "; ".join(
            f"{flags.get(str(problem['loc'][0]), problem['loc'][0])}: {problem['msg']}"
            for problem in error.errors()
        )
        raise HomerunError(
            f"{problems}. The ramp takes --path /..., --method GET|POST|..., --max-concurrency "
            "1 to 1000, --duration 2 to 300 (seconds) and a positive --target-rps."
        ) from None


def capacity_text(capacity: Capacity | None) -> str:
    if capacity is None:
        return "unknown (not gunicorn or uvicorn, or no instance has reported)"
    how = "measured" if capacity.source == "measured" else "from the start command"
    if capacity.requests_at_once is not None:
        return (
            f"{capacity.server}: {capacity.workers} worker(s) x {capacity.threads} thread(s) = "
            f"{capacity.requests_at_once} request(s) at once ({how})"
        )
    pool = f", {capacity.sync_pool} threads each for def endpoints" if capacity.sync_pool else ""
    return f"{capacity.server}: {capacity.workers} event loop(s){pool} ({how})"


def inspection_lines(inspection: RevisionInspection) -> list[str]:
    lines = [f"Measured by:        {inspection.processes} process(es)"]
    if inspection.loop_lag_ms_mean is not None:
        lines.append(
            f"Event-loop lag:     mean {inspection.loop_lag_ms_mean:g} ms, max "
            f"{inspection.loop_lag_ms_max:g} ms, stalled {inspection.loop_stalled_seconds:g} s"
        )
    if inspection.pool_total:
        lines.append(
            f"Thread pool:        peak {inspection.pool_peak_borrowed} of "
            f"{inspection.pool_total} busy, up to {inspection.pool_peak_waiting} waiting, full "
            f"{inspection.pool_full_seconds:g} s"
        )
    if inspection.requests:
        lines.append(
            f"WSGI requests:      {inspection.requests}, at most {inspection.peak_busy} at once "
            f"in a worker, all threads busy {inspection.saturated_seconds:g} s"
        )
    for place in inspection.blocking[:5]:
        lines.append(
            f"Blocking call:      {place.place} in {place.function}: {place.count} stall(s), "
            f"worst {place.worst_ms:g} ms"
        )
    return lines


def print_capacity_lines(revision: RevisionSummary) -> None:
    """describe's lines: the server's capacity next to --concurrency, and the warnings."""
    if revision.capacity is not None:
        print(
            f"      capacity: {capacity_text(revision.capacity)}; --concurrency "
            f"{revision.concurrency}"
        )
    if revision.inspection is not None:
        for line in inspection_lines(revision.inspection)[1:]:
            print(f"      {line}")
    for line in cost_lines(revision.cost, "cost so far"):
        print(f"      {line}")
    for warning in revision.warnings:
        print(
            textwrap.fill(
                f"warning: {warning}",
                width=96,
                initial_indent="      ",
                subsequent_indent="        ",
            )
        )
