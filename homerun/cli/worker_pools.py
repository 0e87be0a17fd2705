"""`homerun worker-pools ...`: Cloud Run's worker pools, instances with no URL and no port kept
at a fixed count (deploy, describe, list, delete, logs)."""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from homerun.cli import flags
from homerun.cli._commands import FlagGroup, Group, command, flag, positional
from homerun.cli._context import Context
from homerun.cli._output import print_json, when
from homerun.cli.deploy import source_folder
from homerun.cli.executions import print_entry
from homerun.cli.flags import _command
from homerun.errors import HomerunError
from homerun.model.events import BuildLine, Failed, Phase, PoolDeployed, PoolEvent
from homerun.model.pools import MAX_POOL_INSTANCES, validate_pool_name
from homerun.progress import Progress
from homerun.spec import RevisionChanges, check_cpu, check_memory, check_range, parse_list

POOL = positional("pool", "WORKER_POOL", "the worker pool's name: lowercase letters, digits, -")
FORMAT = flag("--format", choices=["text", "json"], default="text", help="json: homerun's summary")

CONTAINER = FlagGroup(
    "container",
    (
        flag("--image", help=argparse.SUPPRESS),
        flag(
            "--command",
            metavar="COMMAND,...",
            help="the entrypoint, comma-separated (or one shell command)",
        ),
        flag("--args", metavar="ARG,...", help="its arguments, comma-separated"),
        flag("--cpu", help="CPU limit, recorded (e.g. 1, 2, 500m)"),
        flag("--memory", help="memory limit, recorded (e.g. 512Mi, 2Gi)"),
    ),
)


@command(
    "deploy",
    "create or update a worker pool: instances with no URL, kept running at a fixed count",
    POOL,
    flag(
        "--source",
        metavar="DIR",
        help="the folder of its code (a new pool: default the current folder; an existing "
        "one: default keep its code)",
    ),
    flag(
        "--instances",
        type=int,
        metavar="N",
        help=f"how many instances run: 0-{MAX_POOL_INSTANCES} (a new pool: 1)",
    ),
    CONTAINER,
    flags.ENV_VARS,
    flags.SECRETS,
    flags.VOLUMES,
    examples=[
        (
            "Run two instances of the queue consumer in this folder",
            "homerun worker-pools deploy consumer --source . --instances 2",
        ),
        (
            "Scale it to five, keeping its code",
            "homerun worker-pools deploy consumer --instances 5",
        ),
    ],
    description="Build --source into the worker pool WORKER_POOL (created if new) and run "
    "--instances instances of it, each with CLOUD_RUN_WORKER_POOL and CLOUD_RUN_REVISION set "
    "and no PORT: a worker pool's instances pull their work (a queue, a stream) and are not "
    "sent requests. An instance that exits is started again (after 10 s, doubling to 5 min "
    "while it keeps crashing). A deploy stops the instances of the pool's last revision and "
    "starts the new ones; a flag not given keeps its value.",
)
def deploy(arguments: argparse.Namespace, context: Context) -> int:
    pool = validate_pool_name(arguments.pool)
    if arguments.image:
        raise HomerunError(
            "--image needs a container engine, which this homerun does not use yet; "
            "give the pool's code with --source DIR"
        )
    if arguments.instances is not None:
        check_range("--instances", arguments.instances, 0, MAX_POOL_INSTANCES)
    client = context.client_starting_daemon()
    source = arguments.source
    if source is None and not _exists(context, pool):
        source = "."
    volumes, volume_mounts = flags.volume_changes(arguments)
    changes = RevisionChanges(
        source=str(source_folder(source)) if source is not None else None,
        command=_command(arguments.command),
        args=parse_list(arguments.args) if arguments.args is not None else None,
        cpu=check_cpu(arguments.cpu, "--cpu") if arguments.cpu else None,
        memory=check_memory(arguments.memory, "--memory") if arguments.memory else None,
        env=flags.env_changes(arguments),
        secrets=flags.secret_changes(arguments),
        volumes=volumes,
        volume_mounts=volume_mounts,
    )
    deployed = _follow(client.deploy_worker_pool(pool, changes, arguments.instances))
    verb = "created" if deployed.created else "updated"
    print(
        f"Worker pool [{pool}] has been {verb}: revision [{deployed.revision}] runs "
        f"{deployed.instances} instance(s)."
    )
    return 0


def _exists(context: Context, pool: str) -> bool:
    return any(summary.name == pool for summary in context.client().worker_pools())


def _follow(events: Iterable[PoolEvent]) -> PoolDeployed:
    deployed = None
    with Progress() as progress:
        for event in events:
            if isinstance(event, BuildLine):
                if not event.line.startswith("entrypoint: "):
                    progress.line(f"  {event.line}")
            elif isinstance(event, Phase):
                progress.step(event.message)
            elif isinstance(event, Failed):
                raise HomerunError(event.message)
            else:
                deployed = event
    if deployed is None:
        raise HomerunError(
            "the daemon ended the worker pool's deploy without a result; see its log"
        )
    return deployed


@command(
    "describe",
    "a worker pool's settings and its instances",
    POOL,
    FORMAT,
    examples=[("See a worker pool's instances", "homerun worker-pools describe consumer")],
)
def describe(arguments: argparse.Namespace, context: Context) -> int:
    pool = context.client().worker_pool(validate_pool_name(arguments.pool))
    if arguments.format == "json":
        print_json(pool)
        return 0
    print(f"Worker pool {pool.name}")
    print(f"  Revision:      {pool.revision}")
    print(f"  Instances:     {pool.running} running of {pool.instances}")
    print(f"  Source:        {pool.source}")
    print(f"  Entrypoint:    {' '.join(pool.entrypoint)} ({pool.entrypoint_origin})")
    if pool.cpu or pool.memory:
        print(f"  CPU / memory:  {pool.cpu or '-'} / {pool.memory or '-'} (recorded)")
    for name, value in pool.env.items():
        print(f"  Env:           {name}={value}")
    for name, ref in pool.secrets.items():
        print(f"  Secret:        {name} from {ref}")
    for slot in pool.slots:
        if slot.pid is not None:
            state = f"running (pid {slot.pid}) since {when(slot.started_at or 0)}"
        else:
            state = f"waiting to start again at {when(slot.restart_at or 0)}"
        restarts = f", {slot.restarts} restart(s)" if slot.restarts else ""
        last = f", last ended: {slot.last_exit}" if slot.last_exit else ""
        label = f"Instance {slot.index}:"
        print(f"  {label:<15}{state}{restarts}{last}")
    print(f"  Logs:          homerun worker-pools logs read {pool.name}")
    return 0


@command(
    "list",
    "list worker pools",
    FORMAT,
    examples=[("List worker pools", "homerun worker-pools list")],
)
def list_pools(arguments: argparse.Namespace, context: Context) -> int:
    pools = context.client().worker_pools()
    if arguments.format == "json":
        print_json(pools)
        return 0
    print(f"{'WORKER POOL':<32} {'REVISION':<40} {'INSTANCES':<10} UPDATED")
    for pool in pools:
        counts = f"{pool.running}/{pool.instances}"
        print(f"{pool.name:<32} {pool.revision:<40} {counts:<10} {when(pool.updated_at)}")
    return 0


@command(
    "delete",
    "delete a worker pool: its instances stop",
    POOL,
    examples=[
        ("Delete a worker pool without being asked", "homerun worker-pools delete consumer -q")
    ],
)
def delete(arguments: argparse.Namespace, context: Context) -> int:
    pool = validate_pool_name(arguments.pool)
    context.confirm(f"Worker pool [{pool}] will be deleted.", quiet=arguments.quiet)
    context.client().delete_worker_pool(pool)
    print(f"Deleted worker pool [{pool}].")
    return 0


@command(
    "read",
    "a worker pool's newest log entries: its instances' output and the platform's events",
    POOL,
    flag("--limit", type=int, default=50, metavar="N", help="how many entries, the newest"),
    FORMAT,
    examples=[("Read what a worker pool printed", "homerun worker-pools logs read consumer")],
)
def read_logs(arguments: argparse.Namespace, context: Context) -> int:
    pool = validate_pool_name(arguments.pool)
    if arguments.limit < 1:
        raise HomerunError(f"--limit: must be at least 1, got {arguments.limit}")
    for entry in context.client().worker_pool_logs(pool, arguments.limit):
        if arguments.format == "json":
            print_entry(entry, "json")
            continue
        where = entry.get("instance") or entry.get("service", "")
        print(f"{entry['timestamp']} {entry['severity']:<8} {where}: {entry['message']}")
    return 0


GROUP = Group(
    "worker-pools",
    "worker pools: instances with no URL, kept running at a fixed count",
    (
        deploy,
        describe,
        list_pools,
        delete,
        Group("logs", "read a worker pool's logs", (read_logs,)),
    ),
)
