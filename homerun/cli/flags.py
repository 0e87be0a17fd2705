"""gcloud's flag groups, each defined once next to the function that reads it: deploy and
`services update` take the same ones (and jobs will)."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path
from typing import Any

import yaml

from homerun.access.iam import check_ingress
from homerun.cli._commands import FlagGroup, flag, one_of
from homerun.cli._projection import Format, parse_format
from homerun.errors import HomerunError
from homerun.knative import parse_probe
from homerun.model.annotations import ADAPTIVE_CONCURRENCY
from homerun.model.durations import parse_duration
from homerun.model.images import parse_image_name
from homerun.model.probes import Probe, ProbeKind
from homerun.scaling.policy import ANNOTATION_PREFIX
from homerun.spec import (
    DEFAULT_CONCURRENCY,
    MAX_CONCURRENCY,
    MAX_TIMEOUT_SECONDS,
    EnvChanges,
    MountChanges,
    RevisionChanges,
    SecretChanges,
    VolumeChanges,
    check_cpu,
    check_memory,
    check_range,
    check_service_account,
    parse_env_vars,
    parse_labels,
    parse_list,
    parse_secret_keys,
    parse_secret_refs,
    parse_volume,
    parse_volume_mount,
    validate_env_name,
)
from homerun.traffic import (
    TrafficUpdate,
    check_tag,
    parse_assignments,
    parse_percentages,
    parse_tag_list,
)

MAX_STARTUP_TIMEOUT_SECONDS = 3600
MAX_INSTANCES = 1000


def exclusive(*groups: list[tuple[str, object]]) -> None:
    """gcloud's rule for a list's flags: one `--set`-like flag, or the update/remove pair,
    not both. `groups[0]` holds the whole-list flags, `groups[1]` the partial ones."""
    given = [[name for name, value in group if value] for group in groups]
    whole, partial = given[0], given[1] if len(given) > 1 else []
    if len(whole) > 1 or (whole and partial):
        first, second = (whole + partial)[:2]
        raise HomerunError(
            f"{first} and {second} cannot be used together: {first} replaces the whole list"
        )


# -- the container: what runs, how long it may take ------------------------------------------

# Deploy's is one of --source and --image; `services update` takes it alone.
IMAGE = flag(
    "--image",
    metavar="IMAGE",
    help="an image of the local store, made by `homerun builds submit --tag IMAGE`",
)

CONTAINER = FlagGroup(
    "container",
    (
        flag(
            "--port",
            type=int,
            metavar="PORT",
            help="the port the app listens on, given to it as PORT (Cloud Run's containerPort; "
            "default 8080 in a container); an instance that is a process gets it while it is "
            "free, else a port of its own",
        ),
        flag(
            "--command",
            metavar="COMMAND,...",
            help="the entrypoint, comma-separated (or one shell command)",
        ),
        flag("--args", metavar="ARG,...", help="its arguments, comma-separated"),
        flag(
            "--timeout",
            metavar="DURATION",
            help="request timeout, e.g. 300, 300s, 5m (default 300s, at most 3600s)",
        ),
        flag(
            "--startup-timeout",
            metavar="DURATION",
            help="time an instance has to listen on $PORT (default 240s)",
        ),
        flag("--cpu", help="CPU limit per instance, default 1 (e.g. 1, 2, 500m)"),
        flag("--memory", help="memory limit per instance, default 512Mi (e.g. 512Mi, 2Gi)"),
        flag(
            "--startup-probe",
            metavar="KEY=VALUE,...",
            help="e.g. httpGet.path=/ready,periodSeconds=2,failureThreshold=30 (or "
            "tcpSocket.port=8080): what must pass before an instance gets requests",
        ),
        flag(
            "--readiness-probe",
            metavar="KEY=VALUE,...",
            help="e.g. httpGet.path=/ready,periodSeconds=1,failureThreshold=1: while it fails "
            "the instance gets no new requests",
        ),
        flag(
            "--liveness-probe",
            metavar="KEY=VALUE,...",
            help="e.g. httpGet.path=/healthz,periodSeconds=10,failureThreshold=3: when it "
            "fails the instance is restarted",
        ),
        one_of(
            flag(
                "--use-http2",
                dest="use_http2",
                action="store_const",
                const=True,
                default=None,
                help="send requests to instances as HTTP/2 cleartext (h2c), as gRPC servers need",
            ),
            flag(
                "--no-use-http2",
                dest="use_http2",
                action="store_const",
                const=False,
                help="send them as HTTP/1.1 (the default)",
            ),
        ),
    ),
)


def _probe(text: str | None, flag_name: str, kind: ProbeKind) -> Probe | None:
    """gcloud's probe flags: KEY=VALUE pairs, nested at the dots (httpGet.path=/ready), with
    whole numbers read as numbers; checked with the YAML's rules."""
    if text is None:
        return None
    fields: dict[str, Any] = {}
    for key, value in parse_env_vars(text, flag_name, check_names=False).items():
        *parents, last = key.split(".")
        level = fields
        for parent in parents:
            nested = level.setdefault(parent, {})
            if not isinstance(nested, dict):
                raise HomerunError(f"{flag_name}: {parent} is given both as a value and as keys")
            level = nested
        if key == "exec.command":  # a command line; the YAML gives a list of words
            level[last] = shlex.split(value)
        else:
            level[last] = int(value) if re.fullmatch(r"-?\d+", value) else value
    return parse_probe(fields, kind, flag_name)


def _command(text: str | None) -> list[str] | None:
    if text is None:
        return None
    parts = parse_list(text)
    # `--command "gunicorn -b :$PORT main:app"` is one shell command, not a program name
    # with spaces in it: run it with /bin/sh so that $PORT expands.
    if len(parts) == 1 and any(char.isspace() for char in parts[0]):
        return ["/bin/sh", "-c", parts[0]]
    return parts


def _port(port: int | None) -> int | None:
    if port is not None and not 1 <= port <= 65535:
        raise HomerunError(f"--port: {port} is not a port; give 1..65535")
    return port


def _image(text: str | None) -> str | None:
    if text is not None:
        parse_image_name(text, "--image")
    return text


def _seconds(text: str | None, flag_name: str, most: int) -> int | None:
    if text is None:
        return None
    return check_range(flag_name, parse_duration(text, flag_name), 1, most)


# -- scaling ---------------------------------------------------------------------------------

SCALING = FlagGroup(
    "scaling",
    (
        flag(
            "--concurrency",
            metavar="N",
            help=f"most requests in flight per instance: 1-{MAX_CONCURRENCY}, or 'default' "
            f"(default {DEFAULT_CONCURRENCY}, and 1, the most, below one --cpu); 'auto' (beyond "
            "Cloud Run): the router adapts "
            "each instance's limit to its latency, up to the number set before",
        ),
        flag(
            "--min-instances",
            metavar="N",
            help="instances kept warm when idle, or 'default' (default 0)",
        ),
        flag(
            "--max-instances",
            metavar="N",
            help=f"most instances: 1-{MAX_INSTANCES}, or 'default' (default 100)",
        ),
    ),
)


def _concurrency(text: str | None) -> int | None:
    if text is None or text == "auto":
        return None  # auto: an annotation (_concurrency_annotation); the number stays the max
    if text == "default":
        return 0  # the default, which follows --cpu (1 below one CPU, else 80), as Cloud Run's
    try:
        value = int(text)
    except ValueError:
        raise HomerunError(
            f"--concurrency: expected a number from 1 to {MAX_CONCURRENCY}, 'default' or "
            f"'auto', got {text!r}"
        ) from None
    return check_range("--concurrency", value, 1, MAX_CONCURRENCY)


def _concurrency_annotation(text: str | None) -> dict[str, str | None]:
    """`--concurrency auto` sets homerun's annotation; a number or `default` removes it."""
    if text is None:
        return {}
    return {ADAPTIVE_CONCURRENCY: "auto" if text == "auto" else None}


def _scaling_annotations(arguments: argparse.Namespace) -> dict[str, str | None]:
    """--min-instances / --max-instances are Knative's min-scale / max-scale annotations;
    `default` removes one (None), a flag not given leaves it as it is."""
    annotations: dict[str, str | None] = {}
    for flag_name, value, key in (
        ("--min-instances", arguments.min_instances, "min-scale"),
        ("--max-instances", arguments.max_instances, "max-scale"),
    ):
        if value is None:
            continue
        if value == "default":
            annotations[ANNOTATION_PREFIX + key] = None
            continue
        try:
            number = int(value)
        except ValueError:
            raise HomerunError(
                f"{flag_name}: expected a whole number or 'default', got {value!r}"
            ) from None
        check_range(flag_name, number, 0 if key == "min-scale" else 1, MAX_INSTANCES)
        annotations[ANNOTATION_PREFIX + key] = str(number)
    return annotations


# -- environment variables -------------------------------------------------------------------

ENV_VARS = FlagGroup(
    "environment variables",
    (
        flag("--set-env-vars", metavar="KEY=VALUE,...", help="replace all env vars with these"),
        flag("--update-env-vars", metavar="KEY=VALUE,...", help="set these, keep the others"),
        flag("--remove-env-vars", metavar="KEY,...", help="remove these"),
        flag("--clear-env-vars", action="store_true", help="remove all env vars"),
        flag(
            "--env-vars-file",
            metavar="FILE",
            help="replace all env vars with a YAML file's NAME: value lines",
        ),
    ),
)


def env_changes(arguments: argparse.Namespace) -> EnvChanges:
    exclusive(
        [
            ("--set-env-vars", arguments.set_env_vars is not None),
            ("--env-vars-file", arguments.env_vars_file),
            ("--clear-env-vars", arguments.clear_env_vars),
        ],
        [
            ("--update-env-vars", arguments.update_env_vars),
            ("--remove-env-vars", arguments.remove_env_vars),
        ],
    )
    replace = None
    if arguments.set_env_vars is not None:
        replace = parse_env_vars(arguments.set_env_vars)
    elif arguments.env_vars_file:
        replace = _env_vars_file(Path(arguments.env_vars_file))
    remove = parse_list(arguments.remove_env_vars) if arguments.remove_env_vars else []
    for name in remove:
        validate_env_name(name, "--remove-env-vars")
    update = arguments.update_env_vars
    return EnvChanges(
        replace=replace,
        clear=arguments.clear_env_vars,
        update=parse_env_vars(update, "--update-env-vars") if update else {},
        remove=remove,
    )


def _env_vars_file(path: Path) -> dict[str, str]:
    """gcloud's --env-vars-file: a YAML mapping of names to string values."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise HomerunError(f"--env-vars-file: cannot read {path}: {error.strerror}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        raise HomerunError(f"--env-vars-file: {path} is not valid YAML: {error}") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise HomerunError(f"--env-vars-file: {path} must be a mapping of NAME: value")
    env = {}
    for name, value in raw.items():
        validate_env_name(str(name), f"--env-vars-file {path}")
        if not isinstance(value, str):
            raise HomerunError(
                f"--env-vars-file: {path}: {name}: the value must be a string; quote it "
                f'({name}: "{value}")'
            )
        env[str(name)] = value
    return env


# -- secrets ---------------------------------------------------------------------------------

SECRETS = FlagGroup(
    "secrets (from `homerun secrets`, as env vars or as read-only files)",
    (
        flag(
            "--set-secrets",
            metavar="ENV=SECRET:VERSION,/PATH=SECRET:VERSION,...",
            help="replace all secrets with these (VERSION: a number or latest); a key that is "
            "a path mounts the version as a read-only file there",
        ),
        flag(
            "--update-secrets",
            metavar="ENV=SECRET:VERSION,/PATH=SECRET:VERSION,...",
            help="set these",
        ),
        flag("--remove-secrets", metavar="ENV,/PATH,...", help="remove these"),
        flag("--clear-secrets", action="store_true", help="remove all secrets"),
    ),
)


def secret_changes(arguments: argparse.Namespace) -> SecretChanges:
    exclusive(
        [
            ("--set-secrets", arguments.set_secrets is not None),
            ("--clear-secrets", arguments.clear_secrets),
        ],
        [
            ("--update-secrets", arguments.update_secrets),
            ("--remove-secrets", arguments.remove_secrets),
        ],
    )
    given = arguments.set_secrets
    update = arguments.update_secrets
    return SecretChanges(
        replace=parse_secret_refs(given) if given is not None else None,
        clear=arguments.clear_secrets,
        update=parse_secret_refs(update, "--update-secrets") if update else {},
        remove=parse_secret_keys(arguments.remove_secrets) if arguments.remove_secrets else [],
    )


# -- volumes ---------------------------------------------------------------------------------

VOLUMES = FlagGroup(
    "volumes (in-memory, each instance its own)",
    (
        flag(
            "--add-volume",
            metavar="name=NAME,type=in-memory[,size-limit=SIZE]",
            action="append",
            help="add (or replace) a volume; repeat the flag for more",
        ),
        flag("--remove-volume", metavar="NAME,...", help="remove these volumes and their mounts"),
        flag("--clear-volumes", action="store_true", help="remove all volumes and their mounts"),
        flag(
            "--add-volume-mount",
            metavar="volume=NAME,mount-path=/PATH",
            action="append",
            help="mount a volume at a path; repeat the flag for more",
        ),
        flag("--remove-volume-mount", metavar="/PATH,...", help="remove the mounts at these paths"),
        flag("--clear-volume-mounts", action="store_true", help="remove all volume mounts"),
    ),
)


def volume_changes(arguments: argparse.Namespace) -> tuple[VolumeChanges, MountChanges]:
    if arguments.clear_volumes and arguments.remove_volume:
        raise HomerunError(
            "--clear-volumes and --remove-volume cannot be used together: --clear-volumes "
            "removes them all"
        )
    if arguments.clear_volume_mounts and arguments.remove_volume_mount:
        raise HomerunError(
            "--clear-volume-mounts and --remove-volume-mount cannot be used together: "
            "--clear-volume-mounts removes them all"
        )
    volumes = dict(parse_volume(text) for text in arguments.add_volume or [])
    mounts = dict(parse_volume_mount(text) for text in arguments.add_volume_mount or [])
    removed_mounts = parse_secret_keys(arguments.remove_volume_mount or "", "--remove-volume-mount")
    return (
        VolumeChanges(
            clear=arguments.clear_volumes,
            update=volumes,
            remove=parse_list(arguments.remove_volume or ""),
        ),
        MountChanges(clear=arguments.clear_volume_mounts, update=mounts, remove=removed_mounts),
    )


def revision_changes(arguments: argparse.Namespace, source: str | None) -> RevisionChanges:
    """IMAGE, CONTAINER, SCALING, ENV_VARS, SECRETS and ACCESS's --service-account as changes to
    the service's latest revision: a flag not given keeps its value, as gcloud does."""
    volumes, volume_mounts = volume_changes(arguments)
    return RevisionChanges(
        source=source,
        image=_image(arguments.image),
        container_port=_port(arguments.port),
        command=_command(arguments.command),
        args=parse_list(arguments.args) if arguments.args is not None else None,
        container_concurrency=_concurrency(arguments.concurrency),
        timeout_seconds=_seconds(arguments.timeout, "--timeout", MAX_TIMEOUT_SECONDS),
        startup_timeout_seconds=_seconds(
            arguments.startup_timeout, "--startup-timeout", MAX_STARTUP_TIMEOUT_SECONDS
        ),
        annotations={
            **_scaling_annotations(arguments),
            **_concurrency_annotation(arguments.concurrency),
        },
        cpu=check_cpu(arguments.cpu, "--cpu") if arguments.cpu else None,
        memory=check_memory(arguments.memory, "--memory") if arguments.memory else None,
        startup_probe=_probe(arguments.startup_probe, "--startup-probe", ProbeKind.STARTUP),
        readiness_probe=_probe(arguments.readiness_probe, "--readiness-probe", ProbeKind.READINESS),
        liveness_probe=_probe(arguments.liveness_probe, "--liveness-probe", ProbeKind.LIVENESS),
        service_account=service_account_change(arguments.service_account),
        use_http2=arguments.use_http2,
        env=env_changes(arguments),
        secrets=secret_changes(arguments),
        volumes=volumes,
        volume_mounts=volume_mounts,
    )


# -- the new revision's traffic --------------------------------------------------------------

TRAFFIC = FlagGroup(
    "traffic",
    (
        flag(
            "--no-traffic",
            action="store_true",
            help="the new revision gets no traffic: LATEST stays on the revision serving now",
        ),
        flag("--tag", help="a tag for the new revision, with its own URL http://TAG---SERVICE..."),
    ),
)


def new_revision_tag(arguments: argparse.Namespace, service: str) -> str | None:
    return check_tag(arguments.tag, service, "--tag") if arguments.tag else None


# -- access ----------------------------------------------------------------------------------

ACCESS = FlagGroup(
    "access",
    (
        one_of(
            flag(
                "--allow-unauthenticated",
                dest="allow_unauthenticated",
                action="store_const",
                const=True,
                default=None,
                help="make the service public (allUsers gets roles/run.invoker)",
            ),
            flag(
                "--no-allow-unauthenticated",
                dest="allow_unauthenticated",
                action="store_const",
                const=False,
                help="make it private: callers need an ID token of an invoker (a new service "
                "is private unless you answer yes to the question on a terminal)",
            ),
        ),
        flag(
            "--ingress",
            metavar="all|internal",
            help="who may reach the service: all (default) or internal (homerun instances only)",
        ),
        flag(
            "--service-account",
            metavar="EMAIL",
            help="the identity its instances call other services with, e.g. "
            "NAME@PROJECT.iam.gserviceaccount.com (default: the service's own, "
            "SERVICE@PROJECT.iam.gserviceaccount.com; '' goes back to it)",
        ),
    ),
)


def service_account_change(text: str | None) -> str | None:
    """--service-account as a change: None keeps, '' goes back to the own account."""
    if text is None or text == "":
        return text
    return check_service_account(text, "--service-account")


def ingress(arguments: argparse.Namespace) -> str | None:
    return check_ingress(arguments.ingress) if arguments.ingress else None


# -- the service's metadata and the revision's name (gcloud's) -------------------------------

METADATA = FlagGroup(
    "labels, description, revision name",
    (
        flag(
            "--labels",
            "--update-labels",
            dest="update_labels",
            metavar="KEY=VALUE,...",
            help="add these labels to the service's (gcloud: --labels is --update-labels)",
        ),
        flag("--description", help="the service's description ('' removes it)"),
        flag(
            "--revision-suffix",
            metavar="SUFFIX",
            help="name the new revision SERVICE-SUFFIX instead of SERVICE-0000N-xyz",
        ),
    ),
)


def metadata_changes(arguments: argparse.Namespace) -> dict[str, Any]:
    """DeployRequest's update_labels, description and revision_suffix."""
    return {
        "update_labels": parse_labels(arguments.update_labels, "--labels")
        if arguments.update_labels
        else {},
        "description": arguments.description,
        "revision_suffix": arguments.revision_suffix,
    }


REVISION_FLAGS = (CONTAINER, SCALING, ENV_VARS, SECRETS, VOLUMES, TRAFFIC, ACCESS, METADATA)
"""What deploy and `services update` take: one not given keeps the latest revision's value."""


# -- gcloud's --format on a command that changes a service -----------------------------------

RESULT_FORMAT = flag(
    "--format",
    metavar="FORMAT",
    help="print the resulting Service alone on stdout, as `services describe --format` does "
    "(json, yaml, value(KEY,...), table(KEY,...), csv(KEY,...), none), and the progress on "
    "stderr, as gcloud does; e.g. json, value(status.url)",
)


def result_format(arguments: argparse.Namespace) -> Format | None:
    """--format read before anything is changed, so that a mistyped one changes nothing."""
    return parse_format(arguments.format) if arguments.format is not None else None


# -- `services update-traffic`: the split and the tags ---------------------------------------

SPLIT = FlagGroup(
    "traffic split",
    (
        one_of(
            flag(
                "--to-revisions",
                metavar="REVISION=PERCENT,...",
                help="percentages (LATEST names the latest ready revision); under 100 in total "
                "scales the other serving revisions to fill the rest",
            ),
            flag("--to-latest", action="store_true", help="100%% to LATEST"),
            flag("--to-tags", metavar="TAG=PERCENT,...", help="percentages by tag"),
        ),
    ),
)

TAGS = FlagGroup(
    "tags",
    (
        flag("--set-tags", metavar="TAG=REVISION,...", help="replace all tags with these"),
        flag("--update-tags", metavar="TAG=REVISION,...", help="set these, keep the others"),
        flag("--remove-tags", metavar="TAG,...", help="remove these"),
        flag("--clear-tags", action="store_true", help="remove all tags"),
    ),
)


def traffic_update(arguments: argparse.Namespace, service: str) -> TrafficUpdate:
    """SPLIT and TAGS as the daemon takes them."""
    exclusive(
        [("--clear-tags", arguments.clear_tags), ("--set-tags", arguments.set_tags)],
        [("--update-tags", arguments.update_tags), ("--remove-tags", arguments.remove_tags)],
    )
    update = TrafficUpdate(
        to_revisions=(
            parse_percentages(arguments.to_revisions, "--to-revisions")
            if arguments.to_revisions
            else {}
        ),
        to_latest=arguments.to_latest,
        to_tags=parse_percentages(arguments.to_tags, "--to-tags") if arguments.to_tags else {},
        set_tags=(
            parse_assignments(arguments.set_tags, "--set-tags") if arguments.set_tags else None
        ),
        update_tags=(
            parse_assignments(arguments.update_tags, "--update-tags")
            if arguments.update_tags
            else {}
        ),
        remove_tags=(
            parse_tag_list(arguments.remove_tags, "--remove-tags") if arguments.remove_tags else []
        ),
        clear_tags=arguments.clear_tags,
    )
    for tag in [*(update.set_tags or {}), *update.update_tags]:
        check_tag(tag, service, "--set-tags" if update.set_tags else "--update-tags")
    return update
