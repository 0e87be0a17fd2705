"""`homerun up`, `down` and `status`: the platform itself."""

from __future__ import annotations

import argparse

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
    flag("--port", type=int, help="the router's port (default 8080, or config.yaml's)"),
    flag("--listen", help="the router's address (default 127.0.0.1, or config.yaml's)"),
    examples=[
        ("Run homerun until Ctrl-C, its router on port 8080", "homerun up"),
        (
            "Serve other machines of your network on port 80",
            "homerun up --listen 0.0.0.0 --port 80",
        ),
    ],
    description="Run the platform in the foreground: the router, the dashboard, the admin API "
    "and the instances. `homerun deploy` starts it in the background when none runs.",
)
def up(arguments: argparse.Namespace, context: Context) -> int:
    home = context.home
    settings = load_settings(home, port=arguments.port, listen=arguments.listen)
    if context.daemon_answers():
        raise HomerunError(
            f"homerun already runs with HOMERUN_HOME={home}; `homerun status` shows it"
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
    # The daemon drains and stops its instances (up to their stop grace) before it exits.
    deadline = context.clock() + STOP_WAIT_SECONDS
    while context.clock() < deadline and context.daemon_answers():
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
    for service in services:
        print(f"  {service.name:<24} {service.url}")
    return 0


COMMANDS = (up, down, status)
