"""The `homerun` command: its table of commands, and `main`, which parses, runs the handler and
turns errors into exit codes (the console script's sys.exit is the only one)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from homerun.cli import (
    advise,
    auth,
    builds,
    config,
    deploy,
    domain_mappings,
    jobs,
    logs,
    platform,
    revisions,
    run,
    scheduler,
    secrets,
    services,
    worker_pools,
)
from homerun.cli._commands import Group, ParserExit, UsageError, build_parser, parse
from homerun.cli._context import Context
from homerun.client import Client
from homerun.errors import HomerunError

COMMANDS = Group(
    "homerun",
    "Cloud Run on your own machine.",
    (
        *platform.COMMANDS,
        *config.COMMANDS,
        *deploy.COMMANDS,
        advise.advise,  # `homerun advise SERVICE`, as the issue names it; also under services
        services.GROUP,
        revisions.GROUP,
        jobs.GROUP,
        worker_pools.GROUP,
        domain_mappings.GROUP,
        scheduler.GROUP,
        secrets.GROUP,
        logs.GROUP,
        auth.GROUP,
        builds.BUILDS,
        builds.IMAGES,
        run.GROUP,
    ),
    examples=(
        (
            "Deploy the app in this folder as the public service hello (homerun starts if needed)",
            "homerun deploy hello --source . --allow-unauthenticated",
        ),
        ("See whether homerun runs, its URLs and its services", "homerun status"),
        ("See the settings (port, dashboard...) and where each comes from", "homerun config"),
    ),
)


def main(argv: Sequence[str] | None = None, client: Client | None = None) -> int:
    """Run one command line; its exit code. With `client` (anything with the Client's methods)
    the command talks to it and never looks for, or starts, a daemon."""
    parser = build_parser(COMMANDS, _version())
    try:
        invocation = parse(parser, sys.argv[1:] if argv is None else argv)
    except ParserExit as exit_:
        return exit_.status
    except UsageError as error:
        error.report()
        return 2
    if invocation.command is None:  # a group alone (`homerun logs`): its commands
        invocation.parser.print_help()
        return 2
    context = Context(client)
    try:
        return invocation.command.handler(invocation.arguments, context)
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
    finally:
        context.close()


def _version() -> str:
    try:
        return version("homerun")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "(not installed)"


__all__ = ["COMMANDS", "main"]
