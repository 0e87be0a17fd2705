"""`homerun logs read` and `logs tail`: a service's request logs, app output and platform
events."""

from __future__ import annotations

import argparse
import json
import re
from datetime import UTC, datetime, timedelta

from homerun.cli._commands import Group, command, flag, positional
from homerun.cli._context import Context
from homerun.errors import HomerunError
from homerun.model.durations import parse_duration
from homerun.model.logs import LogEntry
from homerun.observe.logs import SEVERITIES
from homerun.spec import validate_service_name

TAIL_POLL_SECONDS = 0.5
TAIL_BACKLOG = 20  # entries shown before new ones, as `tail` shows the last lines first
TAIL_BATCH = 1000

SERVICE = positional("service", "SERVICE", "the service's name")
REVISION = flag("--revision", help="only this revision's entries")
SEVERITY = flag("--severity", help=f"the lowest severity shown: {', '.join(SEVERITIES)}")
TRACE = flag(
    "--trace",
    metavar="ID",
    help="only the entries of one trace: its id (a request's X-Cloud-Trace-Context or "
    "traceparent names it), or projects/PROJECT/traces/ID",
)
FORMAT = flag("--format", choices=["text", "json"], default="text", help="json: one entry per line")


@command(
    "read",
    "the newest log entries of a service",
    SERVICE,
    flag("--limit", type=int, default=50, metavar="N", help="how many entries, the newest"),
    REVISION,
    SEVERITY,
    flag(
        "--since",
        metavar="DURATION|TIME",
        help="a duration back from now (10m) or a time (ISO 8601)",
    ),
    TRACE,
    FORMAT,
    examples=[
        (
            "Read hello's warnings and errors of the last hour",
            "homerun logs read hello --severity WARNING --since 1h",
        ),
        (
            "Read one request's entries: its request log and the app's lines of its trace",
            "homerun logs read hello --trace 4bf92f3577b34da6a3ce929d0e0e4736",
        ),
    ],
)
def read(arguments: argparse.Namespace, context: Context) -> int:
    if arguments.limit < 1:
        raise HomerunError(f"--limit: must be at least 1, got {arguments.limit}")
    service = validate_service_name(arguments.service)
    entries = context.client().logs(service, arguments.limit, **_filters(arguments))
    for entry in entries:
        _print_entry(entry, arguments.format)
    return 0


@command(
    "tail",
    "follow a service's logs as they come, until Ctrl-C",
    SERVICE,
    REVISION,
    SEVERITY,
    TRACE,
    FORMAT,
    examples=[("Follow hello's logs", "homerun logs tail hello")],
)
def tail(arguments: argparse.Namespace, context: Context) -> int:
    service = validate_service_name(arguments.service)
    client = context.client()
    filters = _filters(arguments)
    last: str | None = None
    for entry in client.logs(service, TAIL_BACKLOG, **filters):
        _print_entry(entry, arguments.format)
        last = entry["timestamp"]
    while True:
        context.sleep(TAIL_POLL_SECONDS)
        for entry in client.logs(service, TAIL_BATCH, **dict(filters, after=last)):
            _print_entry(entry, arguments.format)
            last = entry["timestamp"]


def _filters(arguments: argparse.Namespace) -> dict[str, str | None]:
    severity = arguments.severity.upper() if arguments.severity else None
    if severity is not None and severity not in SEVERITIES:
        raise HomerunError(f"--severity: use one of {', '.join(SEVERITIES)}, got {severity!r}")
    since = getattr(arguments, "since", None)  # `tail` has no --since
    return {
        "revision": arguments.revision,
        "min_severity": severity,
        "since": _since(since) if since else None,
        "trace": _trace(arguments.trace) if arguments.trace else None,
    }


def _trace(text: str) -> str:
    trace_id = text.strip().rpartition("/")[2]
    if not re.fullmatch(r"[0-9a-fA-F]{32}", trace_id):
        raise HomerunError(
            f"--trace: {text!r} is not a trace id: give its 32 hex digits (the part of "
            "X-Cloud-Trace-Context before '/', or of traceparent after '00-'), or "
            "projects/PROJECT/traces/ID"
        )
    return trace_id.lower()


def _since(text: str) -> str:
    """`--since 10m` (a duration back from now) or `--since 2026-11-25T10:00:00Z` (a time)."""
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        seconds = parse_duration(text, "--since")
        moment = datetime.now(UTC) - timedelta(seconds=seconds)
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a time without zone is local time
    return moment.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _print_entry(entry: LogEntry, format: str) -> None:
    if format == "json":
        print(json.dumps(entry), flush=True)
        return
    where = entry.get("instance") or entry.get("revision") or entry.get("service")
    print(f"{entry['timestamp']} {entry['severity']:<8} {where}: {entry['message']}", flush=True)


GROUP = Group("logs", "read a service's logs, or follow them", (read, tail))
