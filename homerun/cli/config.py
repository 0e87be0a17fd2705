"""`homerun config`: the settings a daemon started now would use, and where each came from."""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

import yaml

from homerun.cli._commands import command, flag
from homerun.cli._context import Context
from homerun.config import LoadedSettings, Setting, home_origin, load
from homerun.errors import HomerunError

# Origins line up after `key: value`: the longest, the autoscaler's target percentage, fits.
COMMENT_COLUMN = 48


@command(
    "config",
    "the platform's settings and where each comes from",
    flag(
        "--format",
        choices=["text", "json"],
        default="text",
        help="text: config.yaml's own form, each origin as a comment; json: for scripts",
    ),
    examples=[
        ("See the port a daemon started now would listen on, and why", "homerun config"),
    ],
    description="Print the settings a daemon started now would use: each value and whether it "
    "is the default, comes from HOMERUN_HOME/config.yaml or from the environment "
    "(HOMERUN_VENV_CACHE). The daemon reads them when it starts (`homerun up`, or `homerun "
    "deploy` when none runs); `homerun up --port/--listen` override those two for one run. "
    "No daemon is needed; a config.yaml with a mistake is reported here as at start.",
)
def config(arguments: argparse.Namespace, context: Context) -> int:
    home = context.home
    loaded = load(home)
    settings = loaded.effective(home)
    router = _running_router(context)
    if arguments.format == "json":
        print(json.dumps(_as_json(loaded, settings, str(home)), indent=2))
        return 0
    for line in _header(loaded, str(home)):
        print(f"# {line}")
    for line in _as_yaml(settings):
        print(line)
    print("# Read when the daemon starts (`homerun up`, or `homerun deploy` when none runs);")
    print("# `homerun up --port N --listen ADDRESS` overrides those two for that run only.")
    configured = f"http://{loaded.settings.listen}:{loaded.settings.port}"
    if router is not None and router[1] != configured:
        print(f"# The daemon running now (pid {router[0]}) has its router on {router[1]},")
        print(f"# not {configured}: it was started with `homerun up --port/--listen` or before")
        print("# config.yaml changed. The settings above apply from its next start.")
    return 0


def _header(loaded: LoadedSettings, home: str) -> list[str]:
    lines = [f"HOMERUN_HOME={home} ({home_origin()})"]
    if os.environ.get("HOMERUN_URL"):
        lines.append(
            "HOMERUN_URL is set: these are this machine's settings, not the remote daemon's"
        )
    if loaded.config_file.exists():
        lines.append(f"{loaded.config_file}: read")
    else:
        lines.append(f"{loaded.config_file}: absent; create it to change a setting below")
    return lines


def _as_yaml(settings: list[Setting]) -> list[str]:
    """config.yaml's own form: the top-level keys, then the `autoscaler:` and `prices:`
    mappings (`prices.request-based.per-vcpu-second` nested two deep)."""
    lines = []
    opened: list[str] = []  # the mappings the previous key was in
    for setting in settings:
        *parents, name = setting.key.split(".")
        for depth, parent in enumerate(parents):
            if opened[: depth + 1] != parents[: depth + 1]:
                lines.append(f"{'  ' * depth}{parent}:")
        opened = parents
        text = f"{'  ' * len(parents)}{name}: {_scalar(setting.value)}"
        lines.append(f"{text:<{COMMENT_COLUMN}} # {setting.origin}")
    return lines


def _scalar(value: Any) -> str:
    """A value as YAML writes it: '' for an empty string, true/false, 60.0."""
    dumped: str = yaml.safe_dump(value, default_flow_style=True)
    return dumped.removesuffix("\n...\n").strip()


def _as_json(loaded: LoadedSettings, settings: list[Setting], home: str) -> dict[str, Any]:
    return {
        "home": {"value": home, "source": str(home_origin())},
        "config_file": {"path": str(loaded.config_file), "exists": loaded.config_file.exists()},
        "settings": {
            setting.key: {"value": setting.value, "source": str(setting.origin)}
            for setting in settings
        },
    }


def _running_router(context: Context) -> tuple[int, str] | None:
    """(pid, router URL) of the daemon running now on this machine, if one answers."""
    if os.environ.get("HOMERUN_URL"):
        return None
    try:
        status = context.client().status()
    except HomerunError:
        return None
    return status.pid, status.router


COMMANDS = (config,)
