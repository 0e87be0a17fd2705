"""`homerun deploy`: build a folder into a new revision and move traffic to it once it answers."""

from __future__ import annotations

import argparse
from pathlib import Path

from homerun.cli import flags
from homerun.cli._commands import command, flag, positional
from homerun.cli._context import Context
from homerun.cli._events import follow, print_deployed
from homerun.client import Client, remote_target
from homerun.errors import HomerunError, NotFound
from homerun.spec import DeployRequest, validate_service_name


@command(
    "deploy",
    "build and deploy a service from source",
    positional("service", "SERVICE", "the service's name: lowercase letters, digits and -"),
    flag("--source", metavar="DIR", help="the app's folder (default: the current folder)"),
    flag("--image", help=argparse.SUPPRESS),
    *flags.REVISION_FLAGS,
    examples=[
        (
            "Deploy the app in the current folder as the public service hello",
            "homerun deploy hello --source . --allow-unauthenticated",
        ),
        (
            "Deploy with an env var and a secret, without moving traffic to the new revision",
            "homerun deploy api --source ./api --update-env-vars MODE=beta "
            "--update-secrets DB_URL=db-url:latest --no-traffic --tag beta",
        ),
    ],
    description="Build the app in --source into a new revision of SERVICE (created if new), "
    "start it, and move traffic to it once it answers; if it never does, the revision serving "
    "now keeps serving. A flag not given keeps the value of the service's latest revision.",
)
def deploy(arguments: argparse.Namespace, context: Context) -> int:
    service = validate_service_name(arguments.service)
    if arguments.image:
        raise HomerunError(
            "--image needs a container engine, which this homerun does not use yet; "
            "deploy from source with --source DIR"
        )
    source = _source_folder(arguments.source)
    changes = flags.revision_changes(arguments, source=str(source))
    tag = flags.new_revision_tag(arguments, service)
    ingress = flags.ingress(arguments)
    client = context.client_starting_daemon()
    new = _is_new(client, service)
    allow_unauthenticated = arguments.allow_unauthenticated
    if allow_unauthenticated is None and new and context.interactive and not arguments.quiet:
        allow_unauthenticated = ask_allow_unauthenticated(context, service)
    request = DeployRequest(
        service=service,
        changes=changes,
        allow_unauthenticated=allow_unauthenticated,
        ingress=ingress,
        no_traffic=arguments.no_traffic,
        tag=tag,
        **flags.metadata_changes(arguments),
    )
    done = follow(client.deploy(request)).done
    print_deployed(done)
    if new:
        print(access_note(service, public=bool(allow_unauthenticated)))
    print(f"Service URL: {done.url}")
    return 0


def access_note(service: str, *, public: bool) -> str:
    """What a new service's access is, and the command that changes it."""
    if public:
        return (
            f"Service [{service}] is public: anyone who reaches its URL may call it. Make it "
            f"private with `homerun services update {service} --no-allow-unauthenticated`."
        )
    return (
        f"Service [{service}] is private: callers need an ID token "
        "(`homerun auth print-identity-token`). Make it public with "
        f"`homerun services update {service} --allow-unauthenticated`."
    )


def ask_allow_unauthenticated(context: Context, service: str) -> bool:
    """gcloud's question for a new service when neither --[no-]allow-unauthenticated is given."""
    answer = context.ask(f"Allow unauthenticated invocations to [{service}] (y/N)? ")
    return answer in ("y", "yes")


def _source_folder(given: str | None) -> Path:
    if remote_target() is not None:
        # The daemon builds from a folder of its own machine: the CLI cannot look at it.
        source = Path(given or "")
        if not source.is_absolute():
            raise HomerunError(
                "--source: with HOMERUN_URL, give the absolute path of the app's folder on "
                "the daemon's machine (sources are not uploaded)"
            )
        return source
    source = Path(given or ".").expanduser().resolve()
    if not source.exists():
        raise HomerunError(f"--source: {source} does not exist; give the folder of your app")
    if not source.is_dir():
        raise HomerunError(f"--source: {source} is not a folder; give the folder of your app")
    if not any(source.iterdir()):
        raise HomerunError(f"--source: {source} is empty; put your app (e.g. main.py) there")
    return source


def _is_new(client: Client, service: str) -> bool:
    try:
        client.iam_policy(service)
    except NotFound:
        return True
    return False


COMMANDS = (deploy,)
