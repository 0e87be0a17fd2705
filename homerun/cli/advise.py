"""`homerun services advise SERVICE`: the --concurrency to set and why, from what the runtime
inspector measured in the service's instances; and describe's capacity lines."""

from __future__ import annotations

import argparse
import textwrap

from homerun.cli._commands import command, flag, positional
from homerun.cli._context import Context
from homerun.cli._output import print_json
from homerun.model.inspection import Capacity, RevisionInspection
from homerun.model.views import RevisionSummary
from homerun.spec import validate_service_name


@command(
    "advise",
    "the --concurrency to set for a service and why, from what its instances measured",
    positional("service", "SERVICE", "the service's name"),
    flag("--format", choices=["text", "json"], default="text", help="json: the advice as data"),
    examples=[
        ("Ask after some traffic what limits hello's instances", "homerun services advise hello")
    ],
)
def advise(arguments: argparse.Namespace, context: Context) -> int:
    service = validate_service_name(arguments.service)
    advice = context.client().advise(service)
    if arguments.format == "json":
        print_json(advice)
        return 0
    print(f"Service {advice.service}, revision {advice.revision}")
    print(f"  --concurrency now:  {advice.concurrency}")
    print(f"  Server capacity:    {capacity_text(advice.capacity)}")
    if advice.inspection is not None:
        for line in inspection_lines(advice.inspection):
            print(f"  {line}")
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
    )
    print(f"  Recommended --concurrency: {advice.recommended_concurrency} ({change})")
    if advice.server_settings:
        print(f"  Or change the server: {advice.server_settings}")
    return 0


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
    for warning in revision.warnings:
        print(
            textwrap.fill(
                f"warning: {warning}",
                width=96,
                initial_indent="      ",
                subsequent_indent="        ",
            )
        )
