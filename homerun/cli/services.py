"""`homerun services ...`: list, describe, update, replace, split traffic and delete."""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from homerun.cli import advise, flags, iam, logs, proxy
from homerun.cli._commands import Group, command, flag, positional
from homerun.cli._context import Context
from homerun.cli._events import follow, print_deployed, print_tag_urls
from homerun.cli._output import print_json, said_on_stderr
from homerun.cli._projection import parse_format, render
from homerun.cli._traffic import as_gcloud, summary_lines, traffic_pairs
from homerun.errors import HomerunError
from homerun.knative import parse_service
from homerun.model.states import InstanceState, RevisionStatus
from homerun.model.views import RevisionSummary, ServiceDescription
from homerun.spec import DeployRequest, validate_service_name

SERVICE = positional("service", "SERVICE", "the service's name")
OWN_FORMATS = ("text", "summary-json")
# `gcloud run services describe --format export`: the Service without its status and
# server-set fields, to give to `services replace` elsewhere (here: Cloud Run's form of
# `homerun services export`).
DESCRIBE_FORMATS = (*OWN_FORMATS, "export")
LOGS_READ_EXAMPLE = (("Read hello's newest entries", "homerun services logs read hello --limit 9"),)
LOGS_TAIL_EXAMPLE = (("Follow hello's logs", "homerun services logs tail hello"),)


FORMAT_HELP = (
    "text (homerun's), summary-json (homerun's summary), or as gcloud: json, yaml (Knative "
    "Services), value(KEY,...), table(KEY,...), csv(KEY,...), none; e.g. value(status.url)"
)


@command(
    "list",
    "list services with their readiness, latest revision and URL",
    flag("--format", default="text", metavar="FORMAT", help=FORMAT_HELP),
    examples=[
        ("List the services", "homerun services list"),
        (
            "List each service's URL",
            "homerun services list --format 'value(metadata.name,status.url)'",
        ),
    ],
)
def list_services(arguments: argparse.Namespace, context: Context) -> int:
    format = parse_format(arguments.format, OWN_FORMATS)
    client = context.client()
    services = client.services()
    if format.name == "summary-json":
        print_json(services)
        return 0
    if format.name != "text":
        resources = [client.knative_service(service.name) for service in services]
        print(render(resources, format, listing=True), end="")
        return 0
    if not services:
        print("No services. Deploy one with `homerun deploy NAME --source DIR`.")
        return 0
    print(f"{'SERVICE':<24} {'READY':<6} {'LATEST REVISION':<32} URL")
    for service in services:
        print(
            f"{service.name:<24} {'yes' if service.ready else 'no':<6} "
            f"{service.latest_ready_revision or '-':<32} {service.url}"
        )
    return 0


def _print_readiness(described: ServiceDescription) -> None:
    """Ready's line, as the Ready condition says it (`describe --format yaml`): False when the
    latest revision failed, even while an earlier one serves; Unknown while it deploys. When
    not ready, why, what serves meanwhile and what to do."""
    ready = described.readiness
    if ready.status == "True":
        print("  Ready:    yes")
        return
    reason = f" ({ready.reason})" if ready.reason else ""
    message = f": {ready.message}" if ready.message else ""
    print(f"  Ready:    no{reason}{message}")
    shares: Counter[str] = Counter()
    for route in described.traffic:
        shares[route.revision] += route.percent
    serving = ", ".join(f"{percent}% {revision}" for revision, percent in shares.items() if percent)
    print(f"            {'still serving: ' + serving if serving else 'nothing serves its URL'}")
    if ready.reason == "RevisionFailed":
        print(
            f"            {described.latest_created_revision} failed: its last log lines are "
            "under Revisions below; fix the app and deploy again"
        )


@command(
    "describe",
    "a service's access, traffic, revisions, instances and scaling decisions",
    SERVICE,
    flag("--format", default="text", metavar="FORMAT", help=FORMAT_HELP),
    examples=[
        ("See what serves hello and how it scales", "homerun services describe hello"),
        (
            "Save hello as a Knative Service, to edit and apply with `services replace`",
            "homerun services describe hello --format yaml > hello.yaml",
        ),
        ("Print hello's URL alone", "homerun services describe hello --format 'value(status.url)'"),
        (
            "Write hello for Cloud Run, as gcloud's --format export does",
            "homerun services describe hello --format export > hello.yaml",
        ),
    ],
)
def describe(arguments: argparse.Namespace, context: Context) -> int:
    service = validate_service_name(arguments.service)
    format = parse_format(arguments.format, DESCRIBE_FORMATS)
    if format.name == "export":
        exported = context.client().export_service(service, cloud_run=True)
        print(yaml.safe_dump(exported, sort_keys=False), end="")
        return 0
    if format.name not in OWN_FORMATS:
        print(render([context.client().knative_service(service)], format, listing=False), end="")
        return 0
    described = context.client().describe(service)
    if format.name == "summary-json":
        print_json(described)
        return 0
    print(f"Service {described.name}")
    print(f"  URL:      {described.url}")
    _print_readiness(described)
    invokers = ", ".join(described.invokers) or "none bound (private)"
    print(f"  Ingress:  {described.ingress}")
    print(f"  Invokers: {invokers}; and {described.owner}, the platform's owner")
    print("  Traffic:")
    if not described.traffic:
        print("      0% -")
    for route in described.traffic:
        tag = f" (tag {route.tag}: {route.url})" if route.tag else ""
        print(f"    {route.percent:>3}% {route.revision}{tag}")
    print("  Revisions:")
    for revision in described.revisions:
        _print_revision_lines(revision)
    return 0


def _print_revision_lines(revision: RevisionSummary) -> None:
    concurrency = (
        f"auto (max {revision.concurrency})"
        if revision.adaptive_concurrency
        else revision.concurrency
    )
    print(
        f"    {revision.name}  {revision.status}  concurrency {concurrency}, "
        f"timeout {revision.timeout_seconds}s, in flight {revision.in_flight}, "
        f"queue {revision.queue_length}"
    )
    if revision.env or revision.secrets:
        names = [
            *revision.env,
            *(f"{name} (secret {ref})" for name, ref in revision.secrets.items()),
        ]
        print(f"      env: {', '.join(names)}")
    for path, mounted in revision.mounts.items():
        print(f"      mount: {path}: {mounted}")
    scaling = revision.scaling
    if scaling:
        states = Counter(instance.state for instance in revision.instances)
        print(
            f"      instances: {states[InstanceState.STARTING]} starting, "
            f"{states[InstanceState.READY]} ready, "
            + (
                f"{states[InstanceState.UNREADY]} unready (failing readiness), "
                if states[InstanceState.UNREADY]
                else ""
            )
            + f"{states[InstanceState.DRAINING]} draining "
            f"(min {scaling.min_instances}, "
            f"max {scaling.max_instances}, target {scaling.target_per_instance:g} per instance)"
        )
        for decision in scaling.decisions[:1]:
            print(
                f"      last decision ({decision.seconds_ago:g}s ago): {decision.desired} "
                f"instance(s), {decision.mode}: {decision.reason}"
            )
        if scaling.waited_requests:
            print(
                f"      {scaling.waited_requests} request(s) waited for an instance "
                f"(median arrival to first byte {scaling.median_wait_ms} ms)"
            )
        if scaling.overloaded_requests:
            print(f"      {scaling.overloaded_requests} request(s) got 429 at max-instances")
    if revision.entrypoint:
        print(f"      entrypoint ({revision.entrypoint_origin}): {' '.join(revision.entrypoint)}")
    if revision.start_mode:
        mode = revision.start_mode
        print(f"      instances start by {mode.mode}: {mode.reason}")
    advise.print_capacity_lines(revision)
    if revision.memory_limit_exceeded:
        print(
            f"      {revision.memory_limit_exceeded} instance(s) ended past the memory limit "
            "(a larger --memory may be needed)"
        )
    for instance in revision.instances:
        print(
            f"      instance {instance.name}  {instance.state}  pid {instance.pid}"
            f"  port {instance.port}  in flight {instance.in_flight}"
            + (f" (limit {instance.limit})" if instance.limit is not None else "")
        )
    if revision.status == RevisionStatus.FAILED and revision.message:
        print("      " + revision.message.replace("\n", "\n      "))


@command(
    "delete",
    "delete a service, its revisions, instances and logs",
    SERVICE,
    examples=[("Delete hello without being asked to confirm", "homerun services delete hello -q")],
)
def delete(arguments: argparse.Namespace, context: Context) -> int:
    service = validate_service_name(arguments.service)
    context.confirm(
        f"Service [{service}] will be deleted, with its revisions and logs.",
        quiet=arguments.quiet,
    )
    context.client().delete(service)
    print(f"Deleted service [{service}].")
    return 0


@command(
    "update",
    "change settings: a new revision from the latest one's artifact (no build), or --image",
    SERVICE,
    flags.IMAGE,
    *flags.REVISION_FLAGS,
    flags.RESULT_FORMAT,
    examples=[
        ("Add an env var to hello", "homerun services update hello --update-env-vars MODE=beta"),
        ("Make hello public", "homerun services update hello --allow-unauthenticated"),
        (
            "Deploy the image gcr.io/my-project/hello as hello's new revision, listening on 9000",
            "homerun services update hello --image gcr.io/my-project/hello --port 9000",
        ),
    ],
    description="Change settings of SERVICE as `gcloud run services update` does: a new "
    "revision from the latest one's artifact, without a build (unless --command or --args "
    "change the entrypoint), or from the image --image names, pinned to its digest. Access "
    "and ingress change without a new revision.",
)
def update(arguments: argparse.Namespace, context: Context) -> int:
    service = validate_service_name(arguments.service)
    request = DeployRequest(
        service=service,
        changes=flags.revision_changes(arguments, source=None),
        allow_unauthenticated=arguments.allow_unauthenticated,
        ingress=flags.ingress(arguments),
        no_traffic=arguments.no_traffic,
        tag=flags.new_revision_tag(arguments, service),
        **flags.metadata_changes(arguments),
    )
    format = flags.result_format(arguments)
    with said_on_stderr(format is not None):
        outcome = follow(context.client().deploy(request))
        done = outcome.done
        if done.service_changes:
            print(f"Service [{service}] updated: {'; '.join(done.service_changes)}.")
        if not done.unchanged:
            print_deployed(done)
        elif not done.service_changes and not outcome.announced:
            print(
                f"No change: revision [{done.revision}] of [{service}] already has this "
                "configuration; no revision was created."
            )
        print(f"Service URL: {done.url}")
    if format is not None:
        print(render([context.client().knative_service(service)], format, listing=False), end="")
    return 0


@command(
    "replace",
    "apply a Knative Service YAML, as `services describe --format yaml` prints it",
    positional("file", "FILE", "the Knative Service, YAML or JSON"),
    examples=[
        (
            "Edit a service as YAML and apply it",
            "homerun services describe hello --format yaml > hello.yaml && "
            "homerun services replace hello.yaml",
        )
    ],
)
def replace(arguments: argparse.Namespace, context: Context) -> int:
    path = Path(arguments.file)
    document = _read_service_file(path)
    manifest = parse_service(document, where=str(path))  # field errors without a daemon
    client = context.client_starting_daemon()
    outcome = follow(client.replace(manifest.name, document, str(path)))
    done = outcome.done
    if not done.unchanged:
        print(
            f"Service [{manifest.name}] replaced: revision [{done.revision}] has been "
            f"deployed and is serving {done.percent} percent of traffic."
        )
    elif outcome.announced:  # the daemon said the template is unchanged
        print(f"Service [{manifest.name}] replaced: traffic and metadata are applied.")
    else:
        print(
            f"Service [{manifest.name}] replaced: the template is unchanged, so revision "
            f"[{done.revision}] stays; traffic and metadata are applied."
        )
    print_tag_urls(done)
    print(f"Service URL: {done.url}")
    return 0


@command(
    "export",
    "write the revision that serves SERVICE as a Knative Service for another cluster or "
    "Cloud Run, its image pinned to the digest `homerun images push` got",
    SERVICE,
    flag(
        "--cloud-run",
        action="store_true",
        help="Cloud Run's form (as `gcloud run services describe --format export` prints it) "
        "instead of Knative's",
    ),
    flag(
        "--image",
        metavar="IMAGE",
        help="the image as a registry serves it, REGISTRY/PATH@sha256:DIGEST, when it was "
        "pushed another way than `homerun images push`",
    ),
    examples=[
        (
            "Take hello to a Knative cluster",
            "homerun services export hello > hello.yaml && kubectl apply -f hello.yaml",
        ),
        (
            "Take hello to Cloud Run",
            "homerun services export hello --cloud-run > hello.yaml && "
            "gcloud run services replace hello.yaml",
        ),
    ],
)
def export(arguments: argparse.Namespace, context: Context) -> int:
    service = validate_service_name(arguments.service)
    exported = context.client().export_service(
        service, cloud_run=arguments.cloud_run, image=arguments.image
    )
    print(yaml.safe_dump(exported, sort_keys=False), end="")
    return 0


def _read_service_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise HomerunError(f"cannot read {path}: {error.strerror}") from None
    except UnicodeDecodeError as error:
        raise HomerunError(f"{path} is not UTF-8 text: {error}") from None
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as error:
        raise HomerunError(f"{path} is not valid YAML: {error}") from None
    if len(documents) != 1 or not isinstance(documents[0], dict):
        raise HomerunError(f"{path} must hold one Knative Service (a YAML or JSON mapping)")
    # Unquoted timestamps load as datetimes; the daemon takes JSON.
    loaded: dict[str, Any] = json.loads(json.dumps(documents[0], default=str))
    return loaded


@command(
    "update-traffic",
    "split traffic between revisions, and tag revisions",
    SERVICE,
    flags.SPLIT,
    flags.TAGS,
    flag(
        "--format",
        metavar="FORMAT",
        help="print the traffic alone on stdout as gcloud does (json, yaml, value(KEY,...), "
        "table(KEY,...), csv(KEY,...), none): a list of its entries, one per revision and one "
        "for LATEST, with keys such as revisionName, specPercent, urls and serviceUrl",
    ),
    examples=[
        (
            "Send 10% of hello's traffic to a revision, the rest to the latest one",
            "homerun services update-traffic hello --to-revisions hello-00002-abc=10,LATEST=90",
        ),
        (
            "Tag a revision, to reach it at http://old---hello.localhost:8080",
            "homerun services update-traffic hello --update-tags old=hello-00001-xyz",
        ),
        (
            "Give the revision tagged green 30%, then print the tag URLs, as a script would",
            "homerun services update-traffic hello --to-tags green=30 --format 'value(urls)'",
        ),
    ],
)
def update_traffic(arguments: argparse.Namespace, context: Context) -> int:
    service = validate_service_name(arguments.service)
    update = flags.traffic_update(arguments, service)
    format = parse_format(arguments.format) if arguments.format is not None else None
    summary = context.client().update_traffic(service, update)
    pairs = traffic_pairs(summary)
    if format is not None:
        entries = [dataclasses.asdict(as_gcloud(pair, summary.url)) for pair in pairs]
        print(render(entries, format, listing=True), end="")
        return 0
    print(f"Traffic of [{service}]:")
    for line in summary_lines(pairs):
        print(line)
    print(f"Service URL: {summary.url}")
    return 0


GROUP = Group(
    "services",
    "list, describe, update, replace and delete services; split traffic; invokers",
    (
        list_services,
        describe,
        update,
        update_traffic,
        replace,
        export,
        delete,
        iam.add_binding,
        iam.remove_binding,
        iam.get_policy,
        proxy.proxy,
        # gcloud's `gcloud beta run services logs read|tail SERVICE`: the same as `homerun logs`.
        Group(
            "logs",
            "read a service's logs, or follow them (as `homerun logs`)",
            (
                dataclasses.replace(logs.read, examples=LOGS_READ_EXAMPLE),
                dataclasses.replace(logs.tail, examples=LOGS_TAIL_EXAMPLE),
            ),
        ),
        advise.advise,
    ),
)
