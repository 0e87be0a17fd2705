"""`homerun up`, `down` and `status`: the platform itself."""

from __future__ import annotations

import argparse
import sys

from homerun.cli._commands import command, flag
from homerun.cli._context import Context
from homerun.client import remote_target
from homerun.config import load_settings
from homerun.errors import DaemonUnavailable, HomerunError

STOP_WAIT_SECONDS = 60.0
STOP_POLL_SECONDS = 0.1


@command(
    "up",
    "run the platform in the foreground",
    flag(
        "--port",
        type=int,
        metavar="N",
        help="the router's port for this run only (default: `port:` in config.yaml, else 8080)",
    ),
    flag(
        "--listen",
        metavar="ADDRESS",
        help="the router's address for this run only (default: `listen:` in config.yaml, "
        "else 127.0.0.1)",
    ),
    examples=[
        (
            "Run homerun until Ctrl-C, its router on config.yaml's port (8080 when unset)",
            "homerun up",
        ),
        (
            "Serve other machines of your network on port 80",
            "homerun up --listen 0.0.0.0 --port 80",
        ),
    ],
    description="Run the platform in the foreground: the router, the dashboard, the admin API "
    "and the instances. `homerun deploy` starts it in the background when none runs. Both "
    "read HOMERUN_HOME/config.yaml (`homerun config` shows what it sets); --port and --listen "
    "apply to this run only.",
)
def up(arguments: argparse.Namespace, context: Context) -> int:
    home = context.home
    configured = load_settings(home)
    settings = load_settings(home, port=arguments.port, listen=arguments.listen)
    if context.daemon_answers():
        raise HomerunError(
            f"homerun already runs with HOMERUN_HOME={home}; `homerun status` shows it"
        )
    if settings.port != configured.port:
        print(
            f"--port {settings.port} is for this run only: a daemon that `homerun deploy` "
            f"starts later listens on {configured.port} (`port:` in "
            f"{settings.paths(home).config_file}, 8080 when unset)",
            file=sys.stderr,
        )
    from homerun.daemon import run  # the entry point, not its internals

    run(home, settings)
    return 0


@command(
    "down",
    "stop the platform and its instances",
    examples=[("Stop homerun and every instance it runs", "homerun down")],
)
def down(arguments: argparse.Namespace, context: Context) -> int:
    client = context.client()
    try:
        client.shutdown()
    except DaemonUnavailable:
        print(f"homerun is not running ({context.where()})")
        return 0
    if remote_target() is not None:
        print(f"homerun is stopping ({context.where()})")
        return 0
    # The daemon drains and stops its instances (up to their stop grace), then closes its
    # store, before it exits: "stopped" is said once the process is gone.
    deadline = context.clock() + STOP_WAIT_SECONDS
    while context.daemon_alive():
        if context.clock() >= deadline:
            print(
                f"homerun is still stopping after {STOP_WAIT_SECONDS:g}s "
                f"({context.where()}); `homerun status` says when it is gone",
            )
            return 0
        context.sleep(STOP_POLL_SECONDS)
    print("homerun stopped")
    return 0


@command(
    "status",
    "whether the platform runs, and what it holds",
    examples=[("See whether homerun runs, and its services", "homerun status")],
)
def status(arguments: argparse.Namespace, context: Context) -> int:
    client = context.client()
    try:
        platform = client.status()
        services = client.services()
    except DaemonUnavailable:
        print(f"homerun is not running ({context.where()})")
        return 1
    print(f"homerun is running (pid {platform.pid}), {context.where()}")
    print(f"  router:    {platform.router}")
    if platform.dashboard:
        print(f"  dashboard: {platform.dashboard}")
    print(
        f"  services:  {platform.services}, revisions: {platform.revisions}, "
        f"instances: {platform.instances}"
    )
    if platform.container_engine:
        print(f"  containers: {platform.container_engine} (Dockerfiles beyond the subset, images)")
        if platform.containers:
            print(f"    {platform.containers}")
    if platform.sandbox:
        print(f"  sandbox: {platform.sandbox}")
    for service in services:
        print(f"  {service.name:<24} {service.url}")
    return 0


COMMANDS = (up, down, status)
