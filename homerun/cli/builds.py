"""`homerun builds submit|list` and `homerun images list|delete`: images in the local store,
as `gcloud builds submit --tag IMAGE` makes them for `deploy --image IMAGE`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable

from homerun.cli._commands import Group, command, flag, positional
from homerun.cli._context import Context
from homerun.cli._output import print_json, when
from homerun.cli.deploy import source_folder
from homerun.errors import HomerunError
from homerun.model.events import BuildLine, Failed, Phase
from homerun.model.images import BuildEvent, BuildRequest, Built, parse_image_name
from homerun.progress import Progress

_FORMAT = flag(
    "--format", choices=["text", "json"], default="text", help="json: one object per line item"
)


@command(
    "submit",
    "build a folder into an image of the local image store",
    flag(
        "source",
        nargs="?",
        metavar="SOURCE",
        help="the app's folder (default: the current folder)",
    ),
    flag(
        "--tag",
        "-t",
        required=True,
        metavar="IMAGE",
        help="the image's name: gcr.io/PROJECT/NAME, REGION-docker.pkg.dev/PROJECT/REPO/NAME, "
        "localhost/NAME..., with an optional :TAG (default :latest)",
    ),
    examples=[
        (
            "Build the app in the current folder as the image of the seed, then deploy it",
            "homerun builds submit --tag=gcr.io/my-project/helloworld && "
            "homerun run deploy helloworld --image=gcr.io/my-project/helloworld",
        ),
        ("Build ./api with a tag", "homerun builds submit ./api --tag localhost/api:v2"),
    ],
    description="Build SOURCE the way `deploy --source` does (its Dockerfile, if any, in the "
    "subset homerun runs without a container engine) into an image kept in homerun's local "
    "image store under its digest, named IMAGE. `homerun deploy SERVICE --image IMAGE` runs it.",
)
def submit(arguments: argparse.Namespace, context: Context) -> int:
    image = parse_image_name(arguments.tag, "--tag")
    source = source_folder(arguments.source, "SOURCE")
    client = context.client_starting_daemon()
    built = _follow(client.submit_build(BuildRequest(source=str(source), tag=arguments.tag)))
    print("DONE")
    print("-" * 79)
    print(f"{'ID':<36}  {'DURATION':<8}  {'IMAGES':<40}  STATUS")
    print(f"{built.build:<36}  {_seconds(built.duration_seconds):<8}  {image.tagged:<40}  SUCCESS")
    print(f"Image: {image.tagged}")
    print(f"Digest: {built.digest}")
    return 0


def _follow(events: Iterable[BuildEvent]) -> Built:
    built: Built | None = None
    with Progress() as progress:
        for event in events:
            if isinstance(event, BuildLine):
                progress.line(f"  {event.line}")
            elif isinstance(event, Phase):
                progress.step(event.message)
            elif isinstance(event, Failed):
                raise HomerunError(f"the build failed: {event.message}")
            elif isinstance(event, Built):
                built = event
    if built is None:
        raise HomerunError("the daemon ended the build without a result; see its log")
    return built


def _seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    minutes, rest = divmod(round(seconds), 60)
    return f"{minutes}M{rest}S" if minutes else f"{rest}S"


@command(
    "list",
    "list builds, newest first",
    _FORMAT,
    examples=[("See the builds and their images", "homerun builds list")],
)
def list_builds(arguments: argparse.Namespace, context: Context) -> int:
    builds = context.client().builds()
    if arguments.format == "json":
        print_json(builds)
        return 0
    if not builds:
        print("No builds. Make one with `homerun builds submit SOURCE --tag IMAGE`.")
        return 0
    print(f"{'ID':<36}  {'CREATE_TIME':<20}  {'DURATION':<8}  {'IMAGES':<40}  STATUS")
    for build in builds:
        print(
            f"{build.id:<36}  {when(build.created_at):<20}  "
            f"{_seconds(build.duration_seconds):<8}  {', '.join(build.images):<40}  {build.status}"
        )
    return 0


@command(
    "list",
    "list the images of the local image store",
    _FORMAT,
    examples=[("See the images and their digests", "homerun images list")],
)
def list_images(arguments: argparse.Namespace, context: Context) -> int:
    images = context.client().images()
    if arguments.format == "json":
        print_json(images)
        return 0
    if not images:
        print("No images. Build one with `homerun builds submit SOURCE --tag IMAGE`.")
        return 0
    print(f"{'IMAGE':<48}  {'DIGEST':<19}  {'CREATE_TIME':<20}  RUNTIME")
    for image in images:
        print(
            f"{image.name:<48}  {image.digest[:19]:<19}  {when(image.created_at):<20}  "
            f"{image.runtime}"
        )
    return 0


@command(
    "delete",
    "delete an image name, or every name of a digest",
    positional("image", "IMAGE", "NAME[:TAG] (default :latest), or NAME@sha256:DIGEST"),
    examples=[
        ("Delete a tag", "homerun images delete gcr.io/my-project/helloworld:v1"),
        (
            "Delete a digest and every tag on it",
            "homerun images delete gcr.io/my-project/helloworld@sha256:0123...",
        ),
    ],
    description="Revisions deployed from an image keep running: each has its own copy.",
)
def delete_image(arguments: argparse.Namespace, context: Context) -> int:
    parse_image_name(arguments.image, "IMAGE")
    context.confirm(f"The image {arguments.image} will be deleted.", quiet=arguments.quiet)
    for name in context.client().delete_image(arguments.image):
        print(f"Deleted [{name}].", file=sys.stdout)
    return 0


@command(
    "push",
    "push an image podman built to the registry its name names",
    positional("image", "IMAGE", "REGISTRY_HOST[:PORT]/PATH[:TAG] of the local image store"),
    examples=[
        (
            "Push an image to a registry on this machine",
            "homerun images push localhost:5000/hello:v1",
        )
    ],
    description="The registry answers with the image's digest: a Knative Service or Cloud Run "
    "references the image by it (REGISTRY/PATH@sha256:...). A registry on loopback is spoken "
    "to over plain HTTP, any other with TLS verified.",
)
def push_image(arguments: argparse.Namespace, context: Context) -> int:
    parse_image_name(arguments.image, "IMAGE")
    pushed = context.client().push_image(arguments.image)
    print(f"Pushed [{pushed.name}]: {pushed.digest}")
    print(pushed.pinned)
    return 0


BUILDS = Group("builds", "build images: submit a folder, list builds", (submit, list_builds))
IMAGES = Group(
    "images",
    "the local image store: list, push and delete images",
    (list_images, push_image, delete_image),
)
