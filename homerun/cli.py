"""The `homerun` command: parses arguments, calls the client, prints. The only sys.exit."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from homerun.access.iam import (
    INVOKER_ROLE,
    SERVICE_ACCOUNT_PREFIX,
    check_ingress,
    check_role,
    parse_member,
    user_member,
)
from homerun.client import Client, connect, remote_target
from homerun.config import Paths, default_home, load_settings
from homerun.errors import DaemonUnavailable, HomerunError, NotFound
from homerun.knative import parse_service
from homerun.observe.logs import SEVERITIES
from homerun.progress import Progress
from homerun.scaling.policy import ANNOTATION_PREFIX
from homerun.spec import (
    DEFAULT_CONCURRENCY,
    MAX_CONCURRENCY,
    MAX_TIMEOUT_SECONDS,
    DeployRequest,
    EnvChanges,
    RevisionChanges,
    SecretChanges,
    check_cpu,
    check_memory,
    check_range,
    parse_duration,
    parse_env_vars,
    parse_list,
    parse_secret_refs,
    validate_env_name,
    validate_secret_name,
    validate_service_name,
)
from homerun.traffic import (
    TrafficUpdate,
    check_tag,
    parse_assignments,
    parse_percentages,
    parse_tag_list,
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
    except BrokenPipeError:
        # Whoever read our output (`| head`) has gone: nothing more to say, and no traceback
        # when Python flushes stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


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
    client = connect(paths.admin_socket)
    try:
        client.shutdown()
    except DaemonUnavailable:
        print(f"homerun is not running ({_where(paths)})")
        return 0
    if remote_target() is not None:
        print(f"homerun is stopping ({_where(paths)})")
        return 0
    # The daemon drains and stops its instances (up to their stop grace) before it exits.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and paths.admin_socket.exists() and _running(paths):
        time.sleep(0.1)
    print("homerun stopped")
    return 0


def cmd_status(arguments: argparse.Namespace) -> int:
    paths = _paths()
    client = connect(paths.admin_socket)
    try:
        status = client.status()
        services = client.services()
    except DaemonUnavailable:
        print(f"homerun is not running ({_where(paths)})")
        return 1
    print(f"homerun is running (pid {status['pid']}), {_where(paths)}")
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
    source = _source_folder(arguments.source)
    changes = _revision_changes(arguments, source=str(source))
    tag = check_tag(arguments.tag, service, "--tag") if arguments.tag else None
    ingress = check_ingress(arguments.ingress) if arguments.ingress else None
    client = _client_starting_daemon()
    allow_unauthenticated = arguments.allow_unauthenticated
    if allow_unauthenticated is None and sys.stdin.isatty() and _is_new(client, service):
        allow_unauthenticated = _ask_allow_unauthenticated(service)
    request = DeployRequest(
        service=service,
        changes=changes,
        allow_unauthenticated=allow_unauthenticated,
        ingress=ingress,
        no_traffic=arguments.no_traffic,
        tag=tag,
    )
    _print_deployed(_follow(client.deploy(request.model_dump(mode="json"))))
    return 0


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


def _ask_allow_unauthenticated(service: str) -> bool:
    """gcloud's question for a new service when neither --[no-]allow-unauthenticated is given."""
    try:
        answer = input(f"Allow unauthenticated invocations to [{service}] (y/N)? ")
    except EOFError:
        return False
    return answer.strip().lower() in ("y", "yes")


def cmd_services_update(arguments: argparse.Namespace) -> int:
    """A new revision from the latest one's artifact with some settings changed (no build),
    as `gcloud run services update`."""
    service = validate_service_name(arguments.service)
    request = DeployRequest(
        service=service,
        changes=_revision_changes(arguments, source=None),
        ingress=check_ingress(arguments.ingress) if arguments.ingress else None,
        no_traffic=arguments.no_traffic,
        tag=check_tag(arguments.tag, service, "--tag") if arguments.tag else None,
    )
    done = _follow(_client().deploy(request.model_dump(mode="json")))
    if done.get("service_changes"):
        print(f"Service [{service}] updated: {'; '.join(done['service_changes'])}.")
        print(f"Service URL: {done['url']}")
        return 0
    if done.get("unchanged"):
        print(
            f"No change: revision [{done['revision']}] of [{service}] already has this "
            "configuration; no revision was created."
        )
        print(f"Service URL: {done['url']}")
        return 0
    _print_deployed(done)
    return 0


def _follow(events: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Show a deploy's progress; its `done` event, or HomerunError with the daemon's reason."""
    done: dict[str, Any] | None = None
    with Progress() as progress:
        for event in events:
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
    return done


def cmd_services_add_iam_policy_binding(arguments: argparse.Namespace) -> int:
    return _change_iam_binding(arguments, add=True)


def cmd_services_remove_iam_policy_binding(arguments: argparse.Namespace) -> int:
    return _change_iam_binding(arguments, add=False)


def _change_iam_binding(arguments: argparse.Namespace, *, add: bool) -> int:
    service = validate_service_name(arguments.service)
    member, role = parse_member(arguments.member), check_role(arguments.role)
    client = _client()
    change = client.add_iam_binding if add else client.remove_iam_binding
    policy = change(service, member, role)
    print(f"Updated IAM policy for service [{service}].")
    _print_document(policy, "yaml")
    return 0


def cmd_services_get_iam_policy(arguments: argparse.Namespace) -> int:
    policy = _client().iam_policy(validate_service_name(arguments.service))
    _print_document(policy, "json" if arguments.format == "json" else "yaml")
    return 0


def cmd_auth_print_identity_token(arguments: argparse.Namespace) -> int:
    """The token alone on the last line, as gcloud prints it: `$(homerun auth ...)` works."""
    if arguments.impersonate_service_account:
        member = parse_member(
            SERVICE_ACCOUNT_PREFIX + arguments.impersonate_service_account,
            "--impersonate-service-account",
        )
    else:
        member = user_member(arguments.account or getpass.getuser())
    minted = _client().identity_token(member, arguments.audiences)
    print(minted["token"])
    return 0


def _print_deployed(done: dict[str, Any]) -> None:
    print(
        f"Service [{done['service']}] revision [{done['revision']}] has been deployed "
        f"and is serving {done.get('percent', 100)} percent of traffic."
    )
    for url in done.get("tag_urls", {}).values():
        print(f"The revision can be reached directly at {url}")
    print(f"Service URL: {done['url']}")


def _revision_changes(arguments: argparse.Namespace, source: str | None) -> RevisionChanges:
    """The deploy/update flags as changes to the service's latest revision: a flag not given
    keeps its value, as gcloud does."""
    timeout = startup = None
    if arguments.timeout is not None:
        timeout = check_range(
            "--timeout", parse_duration(arguments.timeout, "--timeout"), 1, MAX_TIMEOUT_SECONDS
        )
    if arguments.startup_timeout is not None:
        startup = check_range(
            "--startup-timeout",
            parse_duration(arguments.startup_timeout, "--startup-timeout"),
            1,
            3600,
        )
    return RevisionChanges(
        source=source,
        command=_command(arguments.command),
        args=parse_list(arguments.args) if arguments.args is not None else None,
        container_concurrency=(
            _concurrency(arguments.concurrency) if arguments.concurrency is not None else None
        ),
        timeout_seconds=timeout,
        startup_timeout_seconds=startup,
        annotations=_scaling_annotations(arguments),
        cpu=check_cpu(arguments.cpu, "--cpu") if arguments.cpu else None,
        memory=check_memory(arguments.memory, "--memory") if arguments.memory else None,
        env=_env_changes(arguments),
        secrets=_secret_changes(arguments),
    )


def _exclusive(*groups: list[tuple[str, Any]]) -> None:
    """gcloud's flag groups: one `--set`-like flag, or the update/remove pair, not both."""
    given = [[flag for flag, value in group if value] for group in groups]
    whole, partial = given[0], given[1] if len(given) > 1 else []
    if len(whole) > 1 or (whole and partial):
        first, second = (whole + partial)[:2]
        raise HomerunError(
            f"{first} and {second} cannot be used together: {first} replaces the whole list"
        )


def _env_changes(arguments: argparse.Namespace) -> EnvChanges:
    _exclusive(
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
    return EnvChanges(
        replace=replace,
        clear=arguments.clear_env_vars,
        update=(
            parse_env_vars(arguments.update_env_vars, "--update-env-vars")
            if arguments.update_env_vars
            else {}
        ),
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
                f"({name}: \"{value}\")"
            )
        env[str(name)] = value
    return env


def _secret_changes(arguments: argparse.Namespace) -> SecretChanges:
    _exclusive(
        [
            ("--set-secrets", arguments.set_secrets is not None),
            ("--clear-secrets", arguments.clear_secrets),
        ],
        [
            ("--update-secrets", arguments.update_secrets),
            ("--remove-secrets", arguments.remove_secrets),
        ],
    )
    remove = parse_list(arguments.remove_secrets) if arguments.remove_secrets else []
    return SecretChanges(
        replace=(
            parse_secret_refs(arguments.set_secrets) if arguments.set_secrets is not None else None
        ),
        clear=arguments.clear_secrets,
        update=(
            parse_secret_refs(arguments.update_secrets, "--update-secrets")
            if arguments.update_secrets
            else {}
        ),
        remove=remove,
    )


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
    service = validate_service_name(arguments.service)
    if arguments.format in ("yaml", "json"):
        _print_document(_client().knative_service(service), arguments.format)
        return 0
    described = _client().describe(service)
    if arguments.format == "summary-json":
        print(json.dumps(described, indent=2))
        return 0
    print(f"Service {described['name']}")
    print(f"  URL:      {described['url']}")
    print(f"  Ready:    {'yes' if described['ready'] else 'no'}")
    if "ingress" in described:
        invokers = ", ".join(described["invokers"]) or "none bound (private)"
        print(f"  Ingress:  {described['ingress']}")
        print(f"  Invokers: {invokers}; and {described['owner']}, the platform's owner")
    print("  Traffic:")
    for target in described["traffic"] or [{"revision": "-", "percent": 0, "tag": None}]:
        tag = f" (tag {target['tag']}: {target['url']})" if target.get("tag") else ""
        print(f"    {target['percent']:>3}% {target['revision']}{tag}")
    print("  Revisions:")
    for revision in described["revisions"]:
        print(
            f"    {revision['name']}  {revision['status']}  concurrency "
            f"{revision['concurrency']}, timeout {revision['timeout_seconds']}s, "
            f"in flight {revision['in_flight']}, queue {revision['queue_length']}"
        )
        if revision.get("env") or revision.get("secrets"):
            names = [*revision.get("env", {}), *(
                f"{name} (secret {ref})" for name, ref in revision.get("secrets", {}).items()
            )]
            print(f"      env: {', '.join(names)}")
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
        if revision.get("start_mode"):
            print(
                f"      instances start by {revision['start_mode']['mode']}: "
                f"{revision['start_mode']['reason']}"
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


def cmd_services_update_traffic(arguments: argparse.Namespace) -> int:
    service = validate_service_name(arguments.service)
    _exclusive(
        [
            ("--clear-tags", arguments.clear_tags),
            ("--set-tags", arguments.set_tags),
        ],
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
    described = _client().update_traffic(service, update.model_dump())
    print(f"Traffic of [{service}]:")
    _print_traffic(described)
    print(f"Service URL: {described['url']}")
    return 0


def _print_traffic(described: dict[str, Any]) -> None:
    latest = any(entry.get("latest") for entry in described.get("traffic_spec", []))
    for target in described["traffic"]:
        line = f"  {target['percent']:>3}% {target['revision']}"
        if latest and target["revision"] == described.get("latest_ready_revision"):
            line += " (LATEST)"
        if target.get("tag"):
            line += f"  tag {target['tag']}: {target['url']}"
        print(line)


def cmd_services_replace(arguments: argparse.Namespace) -> int:
    path = Path(arguments.file)
    document = _read_service_file(path)
    manifest = parse_service(document, where=str(path))  # field errors without a daemon
    client = _client_starting_daemon()
    done = _follow(client.replace(manifest.name, document, str(path)))
    if done.get("unchanged"):
        print(
            f"Service [{manifest.name}] replaced: the template is unchanged, so revision "
            f"[{done['revision']}] stays; traffic and metadata are applied."
        )
    else:
        print(
            f"Service [{manifest.name}] replaced: revision [{done['revision']}] has been "
            f"deployed and is serving {done['percent']} percent of traffic."
        )
    for url in done.get("tag_urls", {}).values():
        print(f"The revision can be reached directly at {url}")
    print(f"Service URL: {done['url']}")
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


def _print_document(document: dict[str, Any], format: str) -> None:
    if format == "json":
        print(json.dumps(document, indent=2))
    else:
        print(yaml.safe_dump(document, sort_keys=False, default_flow_style=False), end="")


def cmd_revisions_list(arguments: argparse.Namespace) -> int:
    revisions = _client().revisions(arguments.service)
    if arguments.format == "json":
        print(json.dumps(revisions, indent=2))
        return 0
    print(
        f"{'REVISION':<36} {'ACTIVE':<6} {'SERVICE':<24} {'STATUS':<9} {'TRAFFIC':<20} INSTANCES"
    )
    for revision in revisions:
        active = bool(revision.get("percent"))  # gcloud's ACTIVE: it serves traffic
        traffic = f"{revision.get('percent', 0)}%"
        tags = ",".join(tag["tag"] for tag in revision.get("tags", []))
        if tags:
            traffic += f" tag {tags}"
        print(
            f"{revision['name']:<36} {'yes' if active else '':<6} {revision['service']:<24} "
            f"{revision['status']:<9} {traffic:<20} {len(revision['instances'])}"
        )
    return 0


def cmd_revisions_describe(arguments: argparse.Namespace) -> int:
    client = _client()
    if arguments.format in ("yaml", "json"):
        _print_document(client.revision(arguments.revision, knative=True), arguments.format)
        return 0
    revision = client.revision(arguments.revision)
    if arguments.format == "summary-json":
        print(json.dumps(revision, indent=2))
        return 0
    print(f"Revision {revision['name']}")
    print(f"  Service:      {revision['service']}")
    print(f"  Status:       {revision['status']}")
    print(f"  Traffic:      {revision['percent']}%")
    for tag in revision["tags"]:
        print(f"  Tag:          {tag['tag']}: {tag['url']}")
    print(f"  Image:        {revision['image'] or '-'}")
    print(f"  Source:       {revision['source']}")
    if revision.get("entrypoint"):
        print(
            f"  Entrypoint:   {' '.join(revision['entrypoint'])} "
            f"({revision['entrypoint_origin']})"
        )
    if revision.get("start_mode"):
        print(
            f"  Start mode:   {revision['start_mode']['mode']} "
            f"({revision['start_mode']['reason']})"
        )
    print(
        f"  Concurrency:  {revision['concurrency']}, timeout {revision['timeout_seconds']}s"
    )
    for name, value in revision["env"].items():
        print(f"  Env:          {name}={value}")
    for name, ref in revision["secrets"].items():
        print(f"  Secret:       {name} from {ref}")
    for key, value in revision["annotations"].items():
        print(f"  Annotation:   {key}: {value}")
    print(f"  Instances:    {len(revision['instances'])}")
    if revision["status"] == "failed" and revision["message"]:
        print("  " + revision["message"].replace("\n", "\n  "))
    return 0


def cmd_revisions_delete(arguments: argparse.Namespace) -> int:
    _client().delete_revision(arguments.revision)
    print(f"Deleted revision [{arguments.revision}].")
    return 0


def cmd_secrets_create(arguments: argparse.Namespace) -> int:
    name = validate_secret_name(arguments.secret, "NAME")
    data = _data_file(arguments.data_file)
    created = _client_starting_daemon().create_secret(name, data)
    print(f"Created secret [{name}] version [{created['version']}].")
    return 0


def cmd_secrets_list(arguments: argparse.Namespace) -> int:
    secrets = _client().secrets()
    if arguments.format == "json":
        print(json.dumps(secrets, indent=2))
        return 0
    if not secrets:
        print("No secrets. Create one with `homerun secrets create NAME --data-file FILE`.")
        return 0
    print(f"{'NAME':<32} {'VERSIONS':<9} {'CREATED':<21} USED BY")
    for secret in secrets:
        created = _when(secret["created_at"]) if secret["created_at"] else "-"
        print(
            f"{secret['name']:<32} {secret['versions']:<9} {created:<21} "
            f"{', '.join(secret['used_by']) or '-'}"
        )
    return 0


def cmd_secrets_versions_list(arguments: argparse.Namespace) -> int:
    versions = _client().secret_versions(validate_secret_name(arguments.secret, "NAME"))
    if arguments.format == "json":
        print(json.dumps(versions, indent=2))
        return 0
    print(f"{'VERSION':<8} {'CREATED':<21} SIZE")
    for version in reversed(versions):
        print(f"{version['version']:<8} {_when(version['created_at']):<21} {version['size']} B")
    return 0


def cmd_secrets_versions_add(arguments: argparse.Namespace) -> int:
    name = validate_secret_name(arguments.secret, "NAME")
    added = _client().add_secret_version(name, _data_file(arguments.data_file))
    print(f"Created version [{added['version']}] of the secret [{name}].")
    return 0


def cmd_secrets_delete(arguments: argparse.Namespace) -> int:
    name = validate_secret_name(arguments.secret, "NAME")
    _client().delete_secret(name)
    print(f"Deleted secret [{name}].")
    return 0


def _data_file(path: str) -> str:
    """A secret's value from a file (`-`: stdin), exactly as it is (a final newline included,
    as in Secret Manager). Errors never quote the content."""
    try:
        raw = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as error:
        raise HomerunError(f"--data-file: cannot read {path}: {error.strerror}") from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise HomerunError(
            f"--data-file: {path} is not UTF-8 text; homerun passes secrets to instances as "
            "env vars, which hold text"
        ) from None


def _when(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


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
    return connect(_paths().admin_socket)


def _where(paths: Paths) -> str:
    remote = remote_target()
    return f"HOMERUN_URL={remote[0]}" if remote else f"HOMERUN_HOME={paths.home}"


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
    if remote_target() is not None:
        return connect(paths.admin_socket)  # a remote daemon is not started from here
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


def _scaling_annotations(arguments: argparse.Namespace) -> dict[str, str | None]:
    """--min-instances / --max-instances are Knative's min-scale / max-scale annotations;
    `default` removes one (None), a flag not given leaves it as it is."""
    annotations: dict[str, str | None] = {}
    for flag, value, key in (
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


def _add_revision_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of `deploy` and `services update`; one not given keeps the latest revision's."""
    parser.add_argument("--command", help="entrypoint, comma-separated (or one shell command)")
    parser.add_argument("--args", help="arguments, comma-separated")
    parser.add_argument(
        "--concurrency", help="max requests in flight per instance (1-1000, default 80)"
    )
    parser.add_argument("--min-instances", help="instances kept warm when idle (default 0)")
    parser.add_argument("--max-instances", help="most instances (1-1000, default 100)")
    parser.add_argument("--timeout", help="request timeout (default 300s, max 3600s)")
    parser.add_argument(
        "--startup-timeout", help="time an instance has to listen on $PORT (default 240s)"
    )
    parser.add_argument("--cpu", help="CPU limit, recorded (e.g. 1, 2, 500m)")
    parser.add_argument("--memory", help="memory limit, recorded (e.g. 512Mi, 2Gi)")
    parser.add_argument("--set-env-vars", metavar="K=V,...", help="replace all env vars")
    parser.add_argument("--update-env-vars", metavar="K=V,...")
    parser.add_argument("--remove-env-vars", metavar="K,...")
    parser.add_argument("--clear-env-vars", action="store_true")
    parser.add_argument("--env-vars-file", metavar="FILE", help="YAML NAME: value; replaces all")
    parser.add_argument(
        "--set-secrets", metavar="ENV=SECRET:VERSION,...", help="replace all secret env vars"
    )
    parser.add_argument("--update-secrets", metavar="ENV=SECRET:VERSION,...")
    parser.add_argument("--remove-secrets", metavar="ENV,...")
    parser.add_argument("--clear-secrets", action="store_true")
    parser.add_argument(
        "--no-traffic",
        action="store_true",
        help="the new revision gets no traffic: LATEST is pinned to the revision serving now",
    )
    parser.add_argument("--tag", help="a tag for the new revision: http://TAG---SERVICE...")
    parser.add_argument(
        "--ingress",
        help="who may reach the service: all (default) or internal (homerun instances only)",
    )


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
    _add_revision_flags(deploy)
    access = deploy.add_mutually_exclusive_group()
    access.add_argument(
        "--allow-unauthenticated",
        dest="allow_unauthenticated",
        action="store_const",
        const=True,
        default=None,
        help="make the service public (allUsers gets roles/run.invoker)",
    )
    access.add_argument(
        "--no-allow-unauthenticated",
        dest="allow_unauthenticated",
        action="store_const",
        const=False,
        help="make it private: callers need an ID token of an invoker (the default for a "
        "new service unless you answer the question on a terminal)",
    )
    deploy.set_defaults(handler=cmd_deploy)

    services = commands.add_parser(
        "services", help="list, describe, update, replace and delete services"
    )
    service_commands = services.add_subparsers(metavar="COMMAND", parser_class=_Parser)
    listing = service_commands.add_parser("list")
    listing.add_argument("--format", choices=["text", "json"], default="text")
    listing.set_defaults(handler=cmd_services_list)
    describe = service_commands.add_parser(
        "describe",
        help="yaml/json: the Knative Service; summary-json: homerun's own summary",
    )
    describe.add_argument("service", metavar="SERVICE")
    describe.add_argument(
        "--format", choices=["text", "yaml", "json", "summary-json"], default="text"
    )
    describe.set_defaults(handler=cmd_services_describe)
    delete = service_commands.add_parser("delete")
    delete.add_argument("service", metavar="SERVICE")
    delete.set_defaults(handler=cmd_services_delete)
    update = service_commands.add_parser(
        "update", help="a new revision from the latest one's artifact, with settings changed"
    )
    update.add_argument("service", metavar="SERVICE")
    _add_revision_flags(update)
    update.set_defaults(handler=cmd_services_update)
    replace = service_commands.add_parser(
        "replace", help="apply a Knative Service YAML (as `services describe --format yaml`)"
    )
    replace.add_argument("file", metavar="FILE")
    replace.set_defaults(handler=cmd_services_replace)
    traffic = service_commands.add_parser(
        "update-traffic", help="split traffic between revisions, and tag revisions"
    )
    traffic.add_argument("service", metavar="SERVICE")
    moves = traffic.add_mutually_exclusive_group()
    moves.add_argument(
        "--to-revisions",
        metavar="REVISION=PERCENT,...",
        help="percentages (LATEST names the latest ready revision); under 100 in total "
        "scales the other serving revisions to fill the rest",
    )
    moves.add_argument("--to-latest", action="store_true", help="100%% to LATEST")
    moves.add_argument("--to-tags", metavar="TAG=PERCENT,...")
    traffic.add_argument("--set-tags", metavar="TAG=REVISION,...", help="replace all tags")
    traffic.add_argument("--update-tags", metavar="TAG=REVISION,...")
    traffic.add_argument("--remove-tags", metavar="TAG,...")
    traffic.add_argument("--clear-tags", action="store_true")
    traffic.set_defaults(handler=cmd_services_update_traffic)

    for change, handler in (
        ("add", cmd_services_add_iam_policy_binding),
        ("remove", cmd_services_remove_iam_policy_binding),
    ):
        binding = service_commands.add_parser(
            f"{change}-iam-policy-binding", help=f"{change} an invoker of a service"
        )
        binding.add_argument("service", metavar="SERVICE")
        binding.add_argument(
            "--member",
            required=True,
            help="user:NAME, serviceAccount:SERVICE (its instances), allUsers or "
            "allAuthenticatedUsers",
        )
        binding.add_argument("--role", required=True, help=INVOKER_ROLE)
        binding.set_defaults(handler=handler)
    get_policy = service_commands.add_parser("get-iam-policy", help="who may invoke a service")
    get_policy.add_argument("service", metavar="SERVICE")
    get_policy.add_argument("--format", choices=["yaml", "json"], default="yaml")
    get_policy.set_defaults(handler=cmd_services_get_iam_policy)

    auth = commands.add_parser("auth", help="ID tokens for calling private services")
    auth_commands = auth.add_subparsers(metavar="COMMAND", parser_class=_Parser)
    identity = auth_commands.add_parser(
        "print-identity-token", help="an ID token (1 h), alone on the last line"
    )
    identity.add_argument(
        "--audiences",
        metavar="URL",
        help="the service URL it is for (default: every service of this homerun)",
    )
    who = identity.add_mutually_exclusive_group()
    who.add_argument("--account", help="the user (default: your OS user name)")
    who.add_argument(
        "--impersonate-service-account",
        metavar="SERVICE",
        help="a token of the identity SERVICE's instances call with",
    )
    identity.set_defaults(handler=cmd_auth_print_identity_token)

    revisions = commands.add_parser("revisions", help="list, describe and delete revisions")
    revision_commands = revisions.add_subparsers(metavar="COMMAND", parser_class=_Parser)
    revision_list = revision_commands.add_parser("list")
    revision_list.add_argument("--service")
    revision_list.add_argument("--format", choices=["text", "json"], default="text")
    revision_list.set_defaults(handler=cmd_revisions_list)
    revision_describe = revision_commands.add_parser("describe")
    revision_describe.add_argument("revision", metavar="REVISION")
    revision_describe.add_argument(
        "--format", choices=["text", "yaml", "json", "summary-json"], default="text"
    )
    revision_describe.set_defaults(handler=cmd_revisions_describe)
    revision_delete = revision_commands.add_parser(
        "delete", help="delete a revision that serves no traffic and carries no tag"
    )
    revision_delete.add_argument("revision", metavar="REVISION")
    revision_delete.set_defaults(handler=cmd_revisions_delete)

    secrets = commands.add_parser("secrets", help="secrets for --set-secrets")
    secret_commands = secrets.add_subparsers(metavar="COMMAND", parser_class=_Parser)
    secret_create = secret_commands.add_parser("create", help="a new secret, version 1")
    secret_create.add_argument("secret", metavar="NAME")
    secret_create.add_argument("--data-file", required=True, help="the value's file; - is stdin")
    secret_create.set_defaults(handler=cmd_secrets_create)
    secret_list = secret_commands.add_parser("list")
    secret_list.add_argument("--format", choices=["text", "json"], default="text")
    secret_list.set_defaults(handler=cmd_secrets_list)
    secret_delete = secret_commands.add_parser("delete", help="a secret and all its versions")
    secret_delete.add_argument("secret", metavar="NAME")
    secret_delete.set_defaults(handler=cmd_secrets_delete)
    versions = secret_commands.add_parser("versions", help="list or add versions of a secret")
    version_commands = versions.add_subparsers(metavar="COMMAND", parser_class=_Parser)
    version_list = version_commands.add_parser("list")
    version_list.add_argument("secret", metavar="NAME")
    version_list.add_argument("--format", choices=["text", "json"], default="text")
    version_list.set_defaults(handler=cmd_secrets_versions_list)
    version_add = version_commands.add_parser("add", help="a new version; `latest` becomes it")
    version_add.add_argument("secret", metavar="NAME")
    version_add.add_argument("--data-file", required=True, help="the value's file; - is stdin")
    version_add.set_defaults(handler=cmd_secrets_versions_add)

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
