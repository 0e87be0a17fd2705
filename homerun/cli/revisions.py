"""`homerun revisions ...`: list, describe and delete revisions."""

from __future__ import annotations

import argparse

from homerun.cli._commands import Group, command, flag, positional
from homerun.cli._context import Context
from homerun.cli._output import print_json
from homerun.cli._projection import parse_format, render
from homerun.model.states import RevisionStatus

OWN_FORMATS = ("text", "summary-json")
FORMAT_HELP = (
    "text (homerun's), summary-json (homerun's summary), or as gcloud: json, yaml (Knative "
    "Revisions), value(KEY,...), table(KEY,...), csv(KEY,...), none"
)
REVISION = positional("revision", "REVISION", "the revision's name, e.g. hello-00002-abc")


@command(
    "list",
    "list revisions with their traffic, status and instances",
    flag("--service", help="only this service's revisions"),
    flag("--format", default="text", metavar="FORMAT", help=FORMAT_HELP),
    examples=[("List the revisions of hello", "homerun revisions list --service hello")],
)
def list_revisions(arguments: argparse.Namespace, context: Context) -> int:
    format = parse_format(arguments.format, OWN_FORMATS)
    client = context.client()
    revisions = client.revisions(arguments.service)
    if format.name == "summary-json":
        print_json(revisions)
        return 0
    if format.name != "text":
        resources = [client.knative_revision(revision.name) for revision in revisions]
        print(render(resources, format, listing=True), end="")
        return 0
    print(f"{'REVISION':<36} {'ACTIVE':<6} {'SERVICE':<24} {'STATUS':<9} {'TRAFFIC':<20} INSTANCES")
    for revision in revisions:
        active = bool(revision.percent)  # gcloud's ACTIVE: it serves traffic
        traffic = f"{revision.percent}%"
        tags = ",".join(tag.tag for tag in revision.tags)
        if tags:
            traffic += f" tag {tags}"
        print(
            f"{revision.name:<36} {'yes' if active else '':<6} {revision.service:<24} "
            f"{revision.status:<9} {traffic:<20} {len(revision.instances)}"
        )
    return 0


@command(
    "describe",
    "a revision's settings, entrypoint, traffic and instances",
    REVISION,
    flag("--format", default="text", metavar="FORMAT", help=FORMAT_HELP),
    examples=[("See how a revision runs", "homerun revisions describe hello-00002-abc")],
)
def describe(arguments: argparse.Namespace, context: Context) -> int:
    format = parse_format(arguments.format, OWN_FORMATS)
    client = context.client()
    if format.name not in OWN_FORMATS:
        print(render([client.knative_revision(arguments.revision)], format, listing=False), end="")
        return 0
    revision = client.revision(arguments.revision)
    if format.name == "summary-json":
        print_json(revision)
        return 0
    print(f"Revision {revision.name}")
    print(f"  Service:      {revision.service}")
    print(f"  Status:       {revision.status}")
    print(f"  Traffic:      {revision.percent}%")
    for tag in revision.tags:
        print(f"  Tag:          {tag.tag}: {tag.url}")
    print(f"  Image:        {revision.image or '-'}")
    print(f"  Source:       {revision.source}")
    if revision.entrypoint:
        print(f"  Entrypoint:   {' '.join(revision.entrypoint)} ({revision.entrypoint_origin})")
    if revision.start_mode:
        print(f"  Start mode:   {revision.start_mode.mode} ({revision.start_mode.reason})")
    if revision.memory_limit_exceeded:
        print(f"  Memory:       {revision.memory_limit_exceeded} instance(s) ended past the limit")
    print(f"  Concurrency:  {revision.concurrency}, timeout {revision.timeout_seconds}s")
    for name, value in revision.env.items():
        print(f"  Env:          {name}={value}")
    for name, ref in revision.secrets.items():
        print(f"  Secret:       {name} from {ref}")
    for path, mounted in revision.mounts.items():
        print(f"  Mount:        {path}: {mounted}")
    for key, value in revision.annotations.items():
        print(f"  Annotation:   {key}: {value}")
    print(f"  Instances:    {len(revision.instances)}")
    if revision.status == RevisionStatus.FAILED and revision.message:
        print("  " + revision.message.replace("\n", "\n  "))
    return 0


@command(
    "delete",
    "delete a revision that serves no traffic and carries no tag",
    REVISION,
    examples=[
        (
            "Delete an old revision without being asked",
            "homerun revisions delete hello-00001-xyz -q",
        )
    ],
)
def delete(arguments: argparse.Namespace, context: Context) -> int:
    context.confirm(f"Revision [{arguments.revision}] will be deleted.", quiet=arguments.quiet)
    context.client().delete_revision(arguments.revision)
    print(f"Deleted revision [{arguments.revision}].")
    return 0


GROUP = Group(
    "revisions",
    "list, describe and delete revisions",
    (list_revisions, describe, delete),
)
