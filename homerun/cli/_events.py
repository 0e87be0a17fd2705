"""A deploy's events on screen: its steps, its build output, then its result, each said once."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TextIO

from homerun.errors import HomerunError
from homerun.model.events import BuildLine, DeployEvent, Done, Failed, Phase, Starting
from homerun.progress import Progress

# The builder's own summary of the entrypoint. The daemon follows every build with the phase
# "Entrypoint (ORIGIN): ARGV" (and sends that phase alone when it reuses an artifact), so
# showing both printed the entrypoint twice.
_BUILDER_ENTRYPOINT = "entrypoint: "
_SHOWN_ABOVE = "  (shown above)"


@dataclass(frozen=True)
class Outcome:
    done: Done
    announced: bool  # the daemon's last step said what happened (e.g. "No change: ...")


def follow(events: Iterable[DeployEvent]) -> Outcome:
    """Show a deploy's progress; its outcome, or HomerunError with the daemon's reason."""
    done: Done | None = None
    announced = False
    shown: set[str] = set()  # output on screen (build, app), not to be repeated by the error
    with Progress() as progress:
        for event in events:
            if isinstance(event, BuildLine):
                if event.line.startswith(_BUILDER_ENTRYPOINT):
                    continue
                progress.line(f"  {event.line}")
                shown.add(event.line.strip())
                announced = False
            elif isinstance(event, Phase):
                progress.step(event.message)
                announced = True
            elif isinstance(event, Starting):
                if event.last_line:  # the spinner already counts the seconds
                    progress.detail(event.last_line)
                    shown.add(event.last_line.strip())
            elif isinstance(event, Failed):
                raise HomerunError(_unseen(event.message, shown, sys.stdout, sys.stderr))
            elif isinstance(event, Done):
                done = event
    if done is None:
        raise HomerunError("the daemon ended the deploy without a result; see its log")
    return Outcome(done, announced)


def print_deployed(done: Done) -> None:
    """The new revision and its traffic; the caller prints the Service URL line last."""
    print(
        f"Service [{done.service}] revision [{done.revision}] has been deployed "
        f"and is serving {done.percent} percent of traffic."
    )
    print_tag_urls(done)


def print_tag_urls(done: Done) -> None:
    for url in done.tag_urls.values():
        print(f"The revision can be reached directly at {url}")


def _unseen(message: str, shown: set[str], stdout: TextIO, stderr: TextIO) -> str:
    """The error without the build output it quotes (pip's last lines) when that output is
    on the same screen or file just above it; whoever reads stderr alone gets it all."""
    if not shown or not _same_destination(stdout, stderr):
        return message
    kept: list[str] = []
    for line in message.splitlines():
        if line.strip() and line.strip() in shown:
            if not kept or kept[-1] != _SHOWN_ABOVE:
                kept.append(_SHOWN_ABOVE)
            continue
        kept.append(line)
    return "\n".join(kept)


def _same_destination(first: TextIO, second: TextIO) -> bool:
    try:
        one, other = os.fstat(first.fileno()), os.fstat(second.fileno())
    except (OSError, ValueError, AttributeError):  # io.StringIO and friends have no file
        return False
    return (one.st_dev, one.st_ino) == (other.st_dev, other.st_ino)
