"""The README's tour, run as written against a real daemon, so that it cannot drift.

The convention: every ```console block of the README's "A short tour" section is run, `$ `
line by `$ ` line, in order (a line ending in ` \\` goes on with the next). The lines below a
command are what it prints (stdout and stderr as a terminal shows them), matched as a whole:
`...` alone on a line stands for any lines, `...` inside a line for any text, and runs of
spaces for any run of spaces. Revision names, timestamps and pids match any such value.

The tour begins with no daemon: its first deploy starts one, as a user's does. What differs
from a first run on a fresh machine is declared once, in `Differences`: the HOMERUN_HOME,
free loopback ports in its config.yaml instead of 8080 and 8081 (and what `homerun config`
says of them); `TourPlatform` also shares the session's virtualenv cache and turns off the
progress meter curl draws when its output is not a terminal.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from homerun.cli import COMMANDS
from homerun.cli._commands import Command, Group, ParserExit, UsageError, build_parser, parse

from .harness import (
    DEPLOY_SECONDS,
    HOMERUN,
    REPO_ROOT,
    REVISION_NAME,
    Platform,
    free_port,
    process_alive,
    wait_until_dead,
)

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

README = REPO_ROOT / "README.md"
TOUR = "A short tour"
README_PORT, README_DASHBOARD_PORT = 8080, 8081


# Reading the README ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    command: str
    expected: tuple[str, ...]
    line: int  # in README.md, for the failure message


def section(text: str, title: str) -> str:
    """The text under `## title`, up to the next `## ` heading."""
    found = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert found is not None, f"README.md has no '## {title}' section"
    return found.group(1)


def console_steps(text: str, first_line: int = 1) -> list[Step]:
    """The `$ ` commands of the ```console blocks in `text`, each with its output lines."""
    steps: list[Step] = []
    command: list[str] = []  # the words of the command being read, its continuations joined
    expected: list[str] = []
    start, in_block, continued = 0, False, False

    def finish() -> None:
        if command:
            steps.append(Step(" ".join(command), tuple(expected), start))
        command.clear()
        expected.clear()

    for number, line in enumerate(text.splitlines(), first_line):
        if not in_block:
            in_block = line.strip() == "```console"
        elif line.strip() == "```":
            finish()
            in_block = False
        elif continued or line.startswith("$ "):
            if not continued:
                finish()
                start = number
            words = line.removeprefix("$ ").strip()
            continued = words.endswith("\\")
            command.append(words.removesuffix("\\").strip())
        elif line.strip() and command:
            expected.append(line.rstrip())
    return steps


def tour() -> list[Step]:
    text = README.read_text()
    body = section(text, TOUR)
    return console_steps(body, text[: text.index(body)].count("\n") + 1)


# What the test's platform does differently from a first run -----------------------------------


@dataclass(frozen=True)
class Differences:
    """Rewrites the README's expected lines for this test's platform."""

    home: Path
    port: int
    dashboard_port: int
    config: dict[str, object]

    def command(self, text: str) -> str:
        """A command as the README writes it, run here: the ports in its URLs."""
        text = text.replace(f":{README_PORT}", f":{self.port}")
        return text.replace(f":{README_DASHBOARD_PORT}", f":{self.dashboard_port}")

    def apply(self, line: str) -> str:
        """An expected line: the ports, HOMERUN_HOME and what `homerun config` says of them."""
        line = self.command(line.replace("~/.homerun", str(self.home)))
        # `homerun config`: the settings this test writes to config.yaml, and its HOMERUN_HOME.
        for key, value in self.config.items():
            line = re.sub(
                rf"^({re.escape(key)}: )\S+( +# )default$", rf"\g<1>{value}\g<2>config.yaml", line
            )
        line = re.sub(r"^(# HOMERUN_HOME=.*) \(default\)$", r"\1 (environment HOMERUN_HOME)", line)
        return re.sub(r"(config\.yaml): absent; .*$", r"\1: read", line)


# Matching output ------------------------------------------------------------------------------

GAP = None  # `...` alone on a line: any number of lines
VARYING = re.compile(
    r"(?P<ellipsis>\.\.\.)"
    r"|(?P<spaces> {2,})"
    r"|(?P<time>\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?Z)"
    r"|(?P<revision>\b[a-z][-a-z0-9]*?-\d{5})-[a-z0-9]{3}\b"
    r"|(?P<pid>\bpid \d+)"
)


def pattern(line: str) -> re.Pattern[str] | None:
    if line.strip() == "...":
        return GAP
    parts, end = [], 0
    for found in VARYING.finditer(line):
        parts.append(re.escape(line[end : found.start()]))
        kind = found.lastgroup
        if kind == "ellipsis":
            parts.append(".*")
        elif kind == "spaces":
            parts.append(" +")
        elif kind == "time":
            parts.append(r"\d{4}-\d\d-\d\dT[\d:.]+Z")
        elif kind == "revision":
            parts.append(re.escape(found.group("revision")) + "-[a-z0-9]+")
        else:
            parts.append(r"pid \d+")
        end = found.end()
    parts.append(re.escape(line[end:]))
    return re.compile("".join(parts))


def matches(expected: list[re.Pattern[str] | None], actual: list[str]) -> bool:
    """Whether the output lines match the README's, gaps and all (as doctest's ELLIPSIS)."""
    if not expected:
        return not actual
    first, rest = expected[0], expected[1:]
    if first is GAP:
        return any(matches(rest, actual[skip:]) for skip in range(len(actual) + 1))
    return bool(actual) and bool(first.fullmatch(actual[0])) and matches(rest, actual[1:])


# The daemon the tour starts ---------------------------------------------------------------------


class TourPlatform:
    """A HOMERUN_HOME with its ports in config.yaml and no daemon: the tour's deploy starts one
    in the background. Whatever happens, the daemon and its instances are stopped at the end."""

    def __init__(self, home: Path, venv_cache: Path) -> None:
        port, dashboard_port = free_port(), free_port()
        config: dict[str, object] = {
            "port": port,
            "dashboard-port": dashboard_port,
            "stop-grace-seconds": 3,  # apps that ignore SIGTERM don't hold up `homerun down`
        }
        self.platform = Platform(home, port, venv_cache, config)
        self.home = home.resolve()
        self.differences = Differences(self.home, port, dashboard_port, config)
        # `homerun` on PATH, as `source .venv/bin/activate` puts it there.
        bin_dir = home.parent / "bin"
        bin_dir.mkdir(exist_ok=True)
        homerun = bin_dir / "homerun"
        homerun.write_text(f'#!/bin/sh\nexec {shlex.join(HOMERUN)} "$@"\n')
        homerun.chmod(0o755)
        # curl draws a progress meter when its output is not a terminal, as here.
        (home.parent / ".curlrc").write_text("--no-progress-meter\n")
        self.env = dict(
            self.platform.env,
            PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            CURL_HOME=str(home.parent),
            PYTHONUNBUFFERED="1",  # stdout and stderr interleaved as on a terminal
        )
        self.daemon_pid: int | None = None

    def run(self, step: Step) -> subprocess.CompletedProcess[str]:
        command = re.sub(r"(^|[\s(])\.venv/bin/homerun\b", r"\1homerun", step.command)
        command = self.differences.command(command)
        result = subprocess.run(
            ["bash", "-o", "pipefail", "-c", command],
            cwd=REPO_ROOT,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=DEPLOY_SECONDS,
        )
        self.platform.revisions_seen |= set(REVISION_NAME.findall(result.stdout))
        pid_file = self.home / "daemon.pid"
        with contextlib.suppress(OSError, ValueError):
            self.daemon_pid = int(pid_file.read_text())
        return result

    def close(self) -> None:
        if self.daemon_pid is not None and process_alive(self.daemon_pid):
            with contextlib.suppress(subprocess.TimeoutExpired, OSError):
                self.platform.down(timeout=60)
            if not wait_until_dead(self.daemon_pid, 30):
                # Its own session (start_new_session): the group is the daemon and its zygotes.
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.daemon_pid, signal.SIGKILL)
        self.platform.teardown()  # instances left behind, if any


@pytest.fixture
def tour_platform(tmp_path: Path, venv_cache: Path) -> Iterator[TourPlatform]:
    platform = TourPlatform(tmp_path / "home", venv_cache)
    try:
        yield platform
    finally:
        platform.close()


# The tests ------------------------------------------------------------------------------------


def test_the_tour_shows_what_a_newcomer_needs() -> None:
    commands = [step.command for step in tour()]
    needed = [
        "homerun deploy helloworld --source examples/cloudrun_example",
        "curl http://helloworld.localhost:8080",
        "homerun services describe",
        "homerun services update-traffic",
        "homerun logs read",
        "homerun services add-iam-policy-binding",
        "homerun deploy editor --source examples/editor",  # a private service called by another
        "homerun config",
        "homerun down",
    ]
    for start in needed:
        assert any(command.startswith(start) for command in commands), start
    assert commands[-1] == "homerun down", "the tour ends by stopping what it started"


def test_every_homerun_command_in_the_readme_parses() -> None:
    """Inline `homerun ...` spans too: the IAM example once lacked its required --role. A span
    of command names alone (`homerun deploy`) names a command; any other is an invocation."""
    parser = build_parser(COMMANDS, "0")
    text = README.read_text()
    spans = [" ".join(span.split()) for span in re.findall(r"`(homerun [^`]+)`", text)]
    spans += [step.command for step in tour() if step.command.startswith("homerun ")]
    assert spans
    for span in spans:
        words = shlex.split(span)[1:]
        if "COMMAND" in words or _names_a_command(words):
            continue
        # Placeholders: N stands for a number (`--port N`), the others for any word.
        words = ["9090" if word == "N" else word for word in words]
        try:
            invocation = parse(parser, words)
        except ParserExit as exit_:  # --help
            assert exit_.status == 0, span
            continue
        except UsageError as error:
            pytest.fail(f"README.md: `{span}` does not parse: {error.message}")
        assert invocation.command is not None, span


def _names_a_command(words: list[str]) -> bool:
    entries: tuple[Command | Group, ...] = COMMANDS.entries
    for word in words:
        entry = next((each for each in entries if each.name == word), None)
        if entry is None:
            return False
        entries = entry.entries if isinstance(entry, Group) else ()
    return True


@pytest.mark.timeout(2 * DEPLOY_SECONDS + 120)
def test_the_readme_tour_runs_as_written(tour_platform: TourPlatform) -> None:
    steps = tour()
    assert steps, "the tour has no ```console blocks"
    for step in steps:
        result = tour_platform.run(step)
        output = [line.rstrip() for line in result.stdout.splitlines() if line.strip()]
        shown = "\n".join(output[-60:])
        where = f"README.md line {step.line}: $ {step.command}"
        assert result.returncode == 0, f"{where}\nexit {result.returncode}\n{shown}"
        expected = [pattern(tour_platform.differences.apply(line)) for line in step.expected]
        if step.expected:
            readme = "\n".join(step.expected)
            assert matches(expected, output), (
                f"{where}\nthe README shows:\n{readme}\nit printed:\n{shown}"
            )
