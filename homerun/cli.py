"""The `homerun` command: parses arguments, calls the client, prints. The only sys.exit."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from homerun.client import Client
from homerun.config import Paths, default_home, load_settings
from homerun.errors import DaemonUnavailable, HomerunError
from homerun.observe.logs import SEVERITIES
from homerun.progress import Progress
from homerun.scaling.policy import ANNOTATION_PREFIX
from homerun.spec import (
    DEFAULT_CONCURRENCY,
    DEFAULT_STARTUP_TIMEOUT_SECONDS,
    DEFAULT_TIMEOUT_SECONDS,
    MAX_CONCURRENCY,
    MAX_TIMEOUT_SECONDS,
    DeployRequest,
    RevisionSpec,
    check_range,
    parse_duration,
    parse_env_vars,
    parse_list,
    validate_service_name,
)

DAEMON_START_SECONDS = 30.0
LOG_TAIL_POLL_SECONDS = 0.5


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    arguments = parser.parse_args(argv)
    if not getattr(arguments, "handler", None):
        parser.print_help()
        return 2
    try:
        return int(arguments.handler(arguments) or 0)
    except HomerunError as error:
        print(f"ERROR: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


# -- commands ---------------------------------------------------------------------------


def cmd_up(arguments: argparse.Namespace) -> int:
    home = default_home()
    settings = load_settings(home, port=arguments.port, listen=arguments.listen)
    if _running(settings.paths(home)):
        raise HomerunError(
            f"homerun already runs with HOMERUN_HOME={home}; `homerun status` shows it"
        )
    from homerun.daemon import run  # the entry point, not its internals

    run(home, settings)
    return 0


def cmd_down(arguments: argparse.Namespace) -> int:
    paths = _paths()
    client = Client(paths.admin_socket)
    try:
        client.shutdown()
    except DaemonUnavailable:
        print(f"homerun is not running (HOMERUN_HOME={paths.home})")
        return 0
    # The daemon drains and stops its instances (up to their stop grace) before it exits.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and paths.admin_socket.exists() and _running(paths):
        time.sleep(0.1)
    print("homerun stopped")
    return 0


def cmd_status(arguments: argparse.Namespace) -> int:
    paths = _paths()
    client = Client(paths.admin_socket)
    try:
        status = client.status()
        services = client.services()
    except DaemonUnavailable:
        print(f"homerun is not running (HOMERUN_HOME={paths.home})")
        return 1
    print(f"homerun is running (pid {status['pid']}), HOMERUN_HOME={paths.home}")
    print(f"  router:    {status['router']}")
    if status.get("dashboard"):
        print(f"  dashboard: {status['dashboard']}")
    print(
        f"  services:  {status['services']}, revisions: {status['revisions']}, "
        f"instances: {status['instances']}"
    )
    for service in services:
        print(f"  {service['name']:<24} {service['url']}")
    return 0


def cmd_deploy(arguments: argparse.Namespace) -> int:
    service = validate_service_name(arguments.service)
    if arguments.image:
        raise HomerunError(
            "--image needs a container engine, which this homerun does not use yet; "
            "deploy from source with --source DIR"
        )
    source = Path(arguments.source or ".").expanduser().resolve()
    if not source.exists():
        raise HomerunError(f"--source: {source} does not exist; give the folder of your app")
    if not source.is_dir():
        raise HomerunError(f"--source: {source} is not a folder; give the folder of your app")
    if not any(source.iterdir()):
        raise HomerunError(f"--source: {source} is empty; put your app (e.g. main.py) there")
    command = _command(arguments.command)
    spec = RevisionSpec(
        source=str(source),
        command=command,
        args=parse_list(arguments.args) if arguments.args is not None else None,
        env=parse_env_vars(arguments.set_env_vars) if arguments.set_env_vars else {},
        container_concurrency=_concurrency(arguments.concurrency),
        timeout_seconds=check_range(
            "--timeout", parse_duration(arguments.timeout, "--timeout"), 1, MAX_TIMEOUT_SECONDS
        ),
        annotations=_scaling_annotations(arguments),
        startup_timeout_seconds=check_range(
            "--startup-timeout",
            parse_duration(arguments.startup_timeout, "--startup-timeout"),
            1,
            3600,
        ),
    )
    request = DeployRequest(
        service=service, spec=spec, allow_unauthenticated=arguments.allow_unauthenticated
    )
    client = _client_starting_daemon()
    done: dict[str, Any] | None = None
    with Progress() as progress:
        for event in client.deploy(request.model_dump()):
            kind = event.get("event")
            if kind == "build":
                progress.line(f"  {event['line']}")
            elif kind == "phase":
                progress.step(event["message"])
            elif kind == "error":
                raise HomerunError(event["message"])
            elif kind == "done":
                done = event
    if done is None:
        raise HomerunError("the daemon ended the deploy without a result; see its log")
    print(
        f"Service [{done['service']}] revision [{done['revision']}] has been deployed "
        "and is serving 100 percent of traffic."
    )
    print(f"Service URL: {done['url']}")
    return 0


def cmd_services_list(arguments: argparse.Namespace) -> int:
    services = _client().services()
    if arguments.format == "json":
        print(json.dumps(services, indent=2))
        return 0
    if not services:
        print("No services. Deploy one with `homerun deploy NAME --source DIR`.")
        return 0
    print(f"{'SERVICE':<24} {'READY':<6} {'LATEST REVISION':<32} URL")
    for service in services:
        print(
            f"{service['name']:<24} {'yes' if service['ready'] else 'no':<6} "
            f"{service['latest_ready_revision'] or '-':<32} {service['url']}"
        )
    return 0


def cmd_services_describe(arguments: argparse.Namespace) -> int:
    described = _client().describe(validate_service_name(arguments.service))
    if arguments.format == "json":
        print(json.dumps(described, indent=2))
        return 0
    print(f"Service {described['name']}")
    print(f"  URL:      {described['url']}")
    print(f"  Ready:    {'yes' if described['ready'] else 'no'}")
    print("  Traffic:")
    for target in described["traffic"] or [{"revision": "-", "percent": 0, "tag": None}]:
        tag = f" (tag {target['tag']})" if target.get("tag") else ""
        print(f"    {target['percent']:>3}% {target['revision']}{tag}")
    print("  Revisions:")
    for revision in described["revisions"]:
        print(
            f"    {revision['name']}  {revision['status']}  concurrency "
            f"{revision['concurrency']}, timeout {revision['timeout_seconds']}s, "
            f"in flight {revision['in_flight']}, queue {revision['queue_length']}"
        )
        scaling = revision.get("scaling")
        if scaling:
            states = Counter(instance["state"] for instance in revision["instances"])
            print(
                f"      instances: {states['starting']} starting, {states['ready']} ready, "
                f"{states['draining']} draining (min {scaling['min_instances']}, "
                f"max {scaling['max_instances']}, target {scaling['target_per_instance']:g} "
                "per instance)"
            )
            for decision in scaling["decisions"][:1]:
                print(
                    f"      last decision ({decision['seconds_ago']:g}s ago): "
                    f"{decision['desired']} instance(s), {decision['mode']}: "
                    f"{decision['reason']}"
                )
            if scaling["waited_requests"]:
                print(
                    f"      {scaling['waited_requests']} request(s) waited for an instance "
                    f"(median arrival to first byte {scaling['median_wait_ms']} ms)"
                )
            if scaling["overloaded_requests"]:
                print(f"      {scaling['overloaded_requests']} request(s) got 429 at max-instances")
        if revision.get("entrypoint"):
            print(
                f"      entrypoint ({revision['entrypoint_origin']}): "
                f"{' '.join(revision['entrypoint'])}"
            )
        for instance in revision["instances"]:
            print(
                f"      instance {instance['name']}  {instance['state']}  pid {instance['pid']}"
                f"  port {instance['port']}  in flight {instance['in_flight']}"
            )
        if revision["status"] == "failed" and revision["message"]:
            print("      " + revision["message"].replace("\n", "\n      "))
    return 0


def cmd_services_delete(arguments: argparse.Namespace) -> int:
    service = validate_service_name(arguments.service)
    _client().delete(service)
    print(f"Deleted service [{service}].")
    return 0


def cmd_revisions_list(arguments: argparse.Namespace) -> int:
    revisions = _client().revisions(arguments.service)
    if arguments.format == "json":
        print(json.dumps(revisions, indent=2))
        return 0
    print(f"{'REVISION':<36} {'SERVICE':<24} {'STATUS':<9} INSTANCES")
    for revision in revisions:
        print(
            f"{revision['name']:<36} {revision['service']:<24} {revision['status']:<9} "
            f"{len(revision['instances'])}"
        )
    return 0


def cmd_logs_read(arguments: argparse.Namespace) -> int:
    if arguments.limit < 1:
        raise HomerunError(f"--limit: must be at least 1, got {arguments.limit}")
    service = validate_service_name(arguments.service)
    entries = _client().logs(service, arguments.limit, **_log_filters(arguments))
    for entry in entries:
        _print_entry(entry, arguments.format)
    return 0


def cmd_logs_tail(arguments: argparse.Namespace) -> int:
    """Print new entries as they come, until interrupted (Ctrl-C)."""
    service = validate_service_name(arguments.service)
    client = _client()
    filters = _log_filters(arguments)
    last: str | None = None
    for entry in client.logs(service, 20, **filters):
        _print_entry(entry, arguments.format)
        last = entry["timestamp"]
    while True:
        time.sleep(LOG_TAIL_POLL_SECONDS)
        for entry in client.logs(service, 1000, **dict(filters, after=last)):
            _print_entry(entry, arguments.format)
            last = entry["timestamp"]


def _log_filters(arguments: argparse.Namespace) -> dict[str, str | None]:
    severity = arguments.severity.upper() if arguments.severity else None
    if severity is not None and severity not in SEVERITIES:
        raise HomerunError(f"--severity: use one of {', '.join(SEVERITIES)}, got {severity!r}")
    return {
        "revision": arguments.revision,
        "min_severity": severity,
        "since": _since(arguments.since) if getattr(arguments, "since", None) else None,
    }


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


def _print_entry(entry: dict[str, Any], format: str) -> None:
    if format == "json":
        print(json.dumps(entry), flush=True)
        return
    where = entry.get("instance") or entry.get("revision") or entry.get("service")
    print(f"{entry['timestamp']} {entry['severity']:<8} {where}: {entry['message']}", flush=True)


# -- helpers ----------------------------------------------------------------------------


def _paths() -> Paths:
    home = default_home()
    return load_settings(home).paths(home)


def _client() -> Client:
    return Client(_paths().admin_socket)


def _running(paths: Paths) -> bool:
    client = Client(paths.admin_socket)
    try:
        client.status()
    except HomerunError:
        return False
    finally:
        client.close()
    return True


def _client_starting_daemon() -> Client:
    """The client of the running daemon; start one in the background when none runs."""
    home = default_home()
    paths = load_settings(home).paths(home)
    if _running(paths):
        return Client(paths.admin_socket)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(paths.daemon_log, "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "homerun", "up"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(os.environ, HOMERUN_HOME=str(home)),
        )
    deadline = time.monotonic() + DAEMON_START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = paths.daemon_log.read_text(errors="replace").splitlines()[-10:]
            raise HomerunError(
                "homerun was not running and could not be started in the background:\n"
                + "\n".join("  " + line for line in tail)
            )
        if _running(paths):
            print(
                f"homerun was not running: started it in the background (pid {process.pid}); "
                f"its log is {paths.daemon_log}; stop it with `homerun down`",
                file=sys.stderr,
            )
            return Client(paths.admin_socket)
        time.sleep(0.05)
    raise HomerunError(
        f"homerun did not start within {DAEMON_START_SECONDS:g}s; see {paths.daemon_log}"
    )


def _command(text: str | None) -> list[str] | None:
    if text is None:
        return None
    parts = parse_list(text)
    # `--command "gunicorn -b :$PORT main:app"` is one shell command, not a program name
    # with spaces in it: run it with /bin/sh so that $PORT expands.
    if len(parts) == 1 and any(char.isspace() for char in parts[0]):
        return ["/bin/sh", "-c", parts[0]]
    return parts


def _scaling_annotations(arguments: argparse.Namespace) -> dict[str, str]:
    """--min-instances / --max-instances are Knative's min-scale / max-scale annotations."""
    annotations = {}
    for flag, value, key in (
        ("--min-instances", arguments.min_instances, "min-scale"),
        ("--max-instances", arguments.max_instances, "max-scale"),
    ):
        if value is None or value == "default":
            continue
        try:
            number = int(value)
        except ValueError:
            raise HomerunError(
                f"{flag}: expected a whole number or 'default', got {value!r}"
            ) from None
        low = 0 if key == "min-scale" else 1
        check_range(flag, number, low, 1000)
        annotations[ANNOTATION_PREFIX + key] = str(number)
    return annotations


def _concurrency(text: str) -> int:
    if text == "default":
        return DEFAULT_CONCURRENCY
    try:
        value = int(text)
    except ValueError:
        raise HomerunError(
            f"--concurrency: expected a number from 1 to {MAX_CONCURRENCY} or 'default', "
            f"got {text!r}"
        ) from None
    return check_range("--concurrency", value, 1, MAX_CONCURRENCY)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        self.exit(2, f"ERROR: {self.prog}: {message}\nRun `{self.prog} --help` for the flags.\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="homerun", description="Cloud Run on your own machine.")
    commands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_Parser)

    up = commands.add_parser("up", help="run the platform in the foreground")
    up.add_argument("--port", type=int, help="router port (default 8080)")
    up.add_argument("--listen", help="router address (default 127.0.0.1)")
    up.set_defaults(handler=cmd_up)

    commands.add_parser("down", help="stop the platform and its instances").set_defaults(
        handler=cmd_down
    )
    commands.add_parser("status", help="whether the platform runs, and what it holds").set_defaults(
        handler=cmd_status
    )

    deploy = commands.add_parser("deploy", help="build and deploy a service from source")
    deploy.add_argument("service", metavar="SERVICE")
    deploy.add_argument("--source", help="folder of the app (default: the current folder)")
    deploy.add_argument("--image", help=argparse.SUPPRESS)
    deploy.add_argument("--set-env-vars", metavar="K=V,...")
    deploy.add_argument("--command", help="entrypoint, comma-separated (or one shell command)")
    deploy.add_argument("--args", help="arguments, comma-separated")
    deploy.add_argument(
        "--concurrency",
        default=str(DEFAULT_CONCURRENCY),
        help="max requests in flight per instance (1-1000, default 80)",
    )
    deploy.add_argument("--min-instances", help="instances kept warm when idle (default 0)")
    deploy.add_argument("--max-instances", help="most instances (1-1000, default 100)")
    deploy.add_argument(
        "--timeout",
        default=str(DEFAULT_TIMEOUT_SECONDS),
        help="request timeout (default 300s, max 3600s)",
    )
    deploy.add_argument(
        "--startup-timeout",
        default=str(DEFAULT_STARTUP_TIMEOUT_SECONDS),
        help="time an instance has to listen on $PORT (default 240s)",
    )
    access = deploy.add_mutually_exclusive_group()
    access.add_argument(
        "--allow-unauthenticated",
        dest="allow_unauthenticated",
        action="store_const",
        const=True,
        default=None,
    )
    access.add_argument(
        "--no-allow-unauthenticated",
        dest="allow_unauthenticated",
        action="store_const",
        const=False,
    )
    deploy.set_defaults(handler=cmd_deploy)

    services = commands.add_parser("services", help="list, describe and delete services")
    service_commands = services.add_subparsers(metavar="COMMAND", parser_class=_Parser)
    listing = service_commands.add_parser("list")
    listing.add_argument("--format", choices=["text", "json"], default="text")
    listing.set_defaults(handler=cmd_services_list)
    describe = service_commands.add_parser("describe")
    describe.add_argument("service", metavar="SERVICE")
    describe.add_argument("--format", choices=["text", "json"], default="text")
    describe.set_defaults(handler=cmd_services_describe)
    delete = service_commands.add_parser("delete")
    delete.add_argument("service", metavar="SERVICE")
    delete.set_defaults(handler=cmd_services_delete)

    revisions = commands.add_parser("revisions", help="list revisions")
    revision_commands = revisions.add_subparsers(metavar="COMMAND", parser_class=_Parser)
    revision_list = revision_commands.add_parser("list")
    revision_list.add_argument("--service")
    revision_list.add_argument("--format", choices=["text", "json"], default="text")
    revision_list.set_defaults(handler=cmd_revisions_list)

    logs = commands.add_parser("logs", help="read a service's logs")
    log_commands = logs.add_subparsers(metavar="COMMAND", parser_class=_Parser)
    read = log_commands.add_parser("read")
    read.add_argument("service", metavar="SERVICE")
    read.add_argument("--limit", type=int, default=50)
    read.add_argument("--revision")
    read.add_argument("--severity", help="the lowest severity shown (e.g. WARNING)")
    read.add_argument("--since", help="a duration back from now (10m) or a time (ISO 8601)")
    read.add_argument("--format", choices=["text", "json"], default="text")
    read.set_defaults(handler=cmd_logs_read)
    tail = log_commands.add_parser("tail")
    tail.add_argument("service", metavar="SERVICE")
    tail.add_argument("--revision")
    tail.add_argument("--severity", help="the lowest severity shown (e.g. WARNING)")
    tail.add_argument("--format", choices=["text", "json"], default="text")
    tail.set_defaults(handler=cmd_logs_tail)
    return parser
