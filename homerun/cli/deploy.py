"""`homerun deploy`: build a folder into a new revision and move traffic to it once it answers."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

from homerun.cli import flags
from homerun.cli._commands import FlagGroup, command, flag, one_of, positional
from homerun.cli._context import Context
from homerun.cli._events import follow, print_deployed
from homerun.cli._output import said_on_stderr
from homerun.cli._projection import render
from homerun.client import Client, remote_target
from homerun.errors import HomerunError, NotFound
from homerun.spec import (
    BASE_IMAGE_ANNOTATION,
    FUNCTION_TARGET_ANNOTATION,
    DeployRequest,
    RevisionChanges,
    validate_service_name,
)

FUNCTION = FlagGroup(
    "functions",
    (
        flag(
            "--function",
            metavar="TARGET",
            help="serve the function TARGET of main.py with functions-framework (a Cloud Run "
            "function); GOOGLE_FUNCTION_TARGET in the env or project.toml does the same",
        ),
        flag(
            "--base-image",
            metavar="IMAGE",
            help="the language runtime: python38 ... python313 (default: this machine's python3)",
        ),
    ),
)


@command(
    "deploy",
    "build and deploy a service from source, or deploy an image",
    positional("service", "SERVICE", "the service's name: lowercase letters, digits and -"),
    one_of(
        flag("--source", metavar="DIR", help="the app's folder (default: the current folder)"),
        flags.IMAGE,
    ),
    *flags.REVISION_FLAGS,
    FUNCTION,
    flags.RESULT_FORMAT,
    examples=[
        (
            "Deploy the app in the current folder as the public service hello",
            "homerun deploy hello --source . --allow-unauthenticated",
        ),
        (
            "Deploy an image built with `homerun builds submit --tag gcr.io/my-project/hello`",
            "homerun deploy hello --image gcr.io/my-project/hello",
        ),
        (
            "Deploy with an env var and a secret, without moving traffic to the new revision",
            "homerun deploy api --source ./api --update-env-vars MODE=beta "
            "--update-secrets DB_URL=db-url:latest --no-traffic --tag beta",
        ),
        (
            "Deploy the function hello_http of main.py on Python 3.12",
            "homerun deploy hello --source . --function hello_http --base-image python312",
        ),
        (
            "Deploy, then print the Service as JSON for a script (the progress goes to stderr)",
            "homerun deploy hello --source . --format json",
        ),
    ],
    description="Build the app in --source (or take the image --image names, pinned to its "
    "digest) into a new revision of SERVICE (created if new), "
    "start it, and move traffic to it once it answers; if it never does, the revision serving "
    "now keeps serving. A flag not given keeps the value of the service's latest revision.",
)
def deploy(arguments: argparse.Namespace, context: Context) -> int:
    service = validate_service_name(arguments.service)
    if arguments.image is not None:
        if arguments.function is not None or arguments.base_image is not None:
            raise HomerunError(
                "--function and --base-image choose how a source is built; an image is built "
                "already: deploy the folder with --source DIR --function TARGET instead"
            )
        changes = flags.revision_changes(arguments, source=None)
    else:
        source = source_folder(arguments.source)
        changes = function_changes(arguments, flags.revision_changes(arguments, source=str(source)))
    tag = flags.new_revision_tag(arguments, service)
    ingress = flags.ingress(arguments)
    format = flags.result_format(arguments)
    with said_on_stderr(format is not None):
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
    if format is not None:
        print(render([client.knative_service(service)], format, listing=False), end="")
    return 0


def function_changes(arguments: argparse.Namespace, changes: RevisionChanges) -> RevisionChanges:
    """FUNCTION as the annotations Cloud Run writes for them; a flag not given keeps its value."""
    annotations = dict(changes.annotations)
    if arguments.function is not None:
        target = arguments.function.strip()
        if not target.isidentifier():
            raise HomerunError(
                f"--function: {arguments.function!r} is not a function name; give the name of "
                "the function in main.py, e.g. --function hello_http"
            )
        annotations[FUNCTION_TARGET_ANNOTATION] = target
    if arguments.base_image is not None:
        annotations[BASE_IMAGE_ANNOTATION] = arguments.base_image.strip() or None
    return changes.model_copy(update={"annotations": annotations})


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


def source_folder(given: str | None, flag: str = "--source") -> Path:
    """The app's folder, checked as far as the CLI can (the daemon builds from it)."""
    if remote_target() is not None:
        # The daemon builds from a folder of its own machine: the CLI cannot look at it.
        source = Path(given or "")
        if not source.is_absolute():
            raise HomerunError(
                f"{flag}: with HOMERUN_URL, give the absolute path of the app's folder on "
                "the daemon's machine (sources are not uploaded)"
            )
        return source
    source = Path(given or ".").expanduser().resolve()
    if not source.exists():
        raise HomerunError(f"{flag}: {source} does not exist; give the folder of your app")
    if not source.is_dir():
        raise HomerunError(f"{flag}: {source} is not a folder; give the folder of your app")
    if not any(source.iterdir()):
        raise HomerunError(f"{flag}: {source} is empty; put your app (e.g. main.py) there")
    return source


def _is_new(client: Client, service: str) -> bool:
    try:
        client.iam_policy(service)
    except NotFound:
        return True
    return False


COMMANDS = (deploy,)
# `homerun run deploy` (homerun/cli/run.py), with the seed's line among its examples.
RUN_DEPLOY = dataclasses.replace(
    deploy,
    examples=(
        (
            "The seed's deploy, as written for gcloud",
            "homerun run deploy helloworld --image=gcr.io/my-project/helloworld",
        ),
        ("Deploy the current folder", "homerun run deploy hello --source ."),
    ),
)
