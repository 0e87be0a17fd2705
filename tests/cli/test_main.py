"""The command line itself: help for every group, --version, typos, abbreviations, -q, exit
codes. Nothing here needs a daemon."""

from __future__ import annotations

from importlib.metadata import version
from pathlib import Path

import pytest

from homerun.cli import COMMANDS
from homerun.cli._commands import Command, Group, _flags, build_parser, parse

from .conftest import FakeClient, Run


def _walk(group: Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Group]]:
    found = [(path, group)]
    for entry in group.entries:
        if isinstance(entry, Group):
            found += _walk(entry, (*path, entry.name))
    return found


def _commands(group: Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Command]]:
    found = []
    for entry in group.entries:
        if isinstance(entry, Group):
            found += _commands(entry, (*path, entry.name))
        else:
            found.append(((*path, entry.name), entry))
    return found


GROUPS = _walk(COMMANDS)
LEAVES = _commands(COMMANDS)


@pytest.mark.parametrize(
    ("path", "group"), GROUPS, ids=[" ".join(p) or "homerun" for p, _ in GROUPS]
)
def test_every_group_lists_its_commands_with_one_line_each(
    run: Run, path: tuple[str, ...], group: Group
) -> None:
    result = run(*path, "--help")
    assert result.code == 0
    words = " ".join(result.out.split())  # argparse wraps long lines
    for entry in group.entries:
        assert f" {entry.name} {' '.join(entry.summary.split())}" in words, result.out


@pytest.mark.parametrize(("path", "group"), GROUPS[1:], ids=[" ".join(p) for p, _ in GROUPS[1:]])
def test_a_group_alone_prints_its_own_help(run: Run, path: tuple[str, ...], group: Group) -> None:
    result = run(*path)
    assert result.code == 2
    assert result.out.startswith(f"usage: homerun {' '.join(path)} ")
    assert all(entry.name in result.out for entry in group.entries)


def test_logs_alone_is_the_logs_help(run: Run) -> None:
    out = run("logs").out
    assert "read" in out and "tail" in out and "deploy" not in out


@pytest.mark.parametrize(("path", "command"), LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_every_command_has_an_example_and_takes_quiet(
    run: Run, path: tuple[str, ...], command: Command
) -> None:
    out = run(*path, "--help").out
    assert out.startswith(f"usage: homerun {' '.join(path)}")
    examples = out.partition("\nexamples:\n")[2]
    assert "    $ " in examples and f"homerun {' '.join(path)}" in examples, out
    assert "-q, --quiet" in out


def test_help_shows_defaults(run: Run) -> None:
    out = run("logs", "read", "--help").out
    assert "(default: 50)" in out
    assert "(default: text)" in out


def test_version(run: Run) -> None:
    result = run("--version")
    assert result.code == 0
    assert result.out == f"homerun {version('homerun')}\n"


def test_a_mistyped_flag_gets_the_commands_usage_and_a_guess(run: Run) -> None:
    result = run("deploy", "svc", "--souce", ".")
    assert result.code == 2
    assert result.out == ""
    assert result.err.startswith("usage: homerun deploy SERVICE [flags]\n")
    assert "unrecognized arguments: --souce" in result.err
    assert "did you mean --source?" in result.err


@pytest.mark.parametrize(
    ("argv", "guess"),
    [
        (["deploy", "svc", "--set-env-var", "A=1"], "--set-env-vars"),
        (["deploy", "svc", "--set-env-var=A=1"], "--set-env-vars"),
        (["logs", "read", "svc", "--lim", "5"], "--limit"),
        (["services", "update-traffic", "svc", "--to-latst"], "--to-latest"),
    ],
)
def test_abbreviations_are_refused(run: Run, argv: list[str], guess: str) -> None:
    result = run(*argv)
    assert result.code == 2
    assert f"did you mean {guess}?" in result.err


def test_a_mistyped_command_gets_a_guess(run: Run) -> None:
    result = run("services", "lst")
    assert result.code == 2
    assert result.err.startswith("usage: homerun services ")
    assert "invalid choice: 'lst'; did you mean list?" in result.err


def test_a_missing_argument_is_a_usage_error(run: Run) -> None:
    result = run("services", "describe")
    assert result.code == 2
    assert "usage: homerun services describe SERVICE [flags]" in result.err
    assert "required: SERVICE" in result.err


def test_required_flags_are_in_the_usage(run: Run) -> None:
    result = run("secrets", "create", "db")
    assert result.code == 2
    assert "usage: homerun secrets create NAME --data-file FILE [flags]" in result.err


def test_flag_equals_value_and_repeated_flags(run: Run, fake: FakeClient, app: Path) -> None:
    result = run(
        "deploy",
        "hello",
        f"--source={app}",
        "--update-env-vars=A=1",
        "--update-env-vars=B=2",
        "--allow-unauthenticated",
    )
    assert result.code == 0, result.err
    (request,) = fake.called("deploy")[0]
    assert request.changes.env.update == {"B": "2"}  # argparse's last one wins, as in gcloud
    assert request.allow_unauthenticated is True


@pytest.mark.parametrize(("path", "command"), LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_quiet_is_accepted_everywhere(path: tuple[str, ...], command: Command) -> None:
    parser = build_parser(COMMANDS, "0")
    words = ["x"] * len([a for a in _positionals(command)])
    required = [w for name in _required(command) for w in (name, "x")]
    for where in ([*path, *words, *required, "-q"], ["-q", *path, *words, *required]):
        invocation = parse(parser, where)
        assert invocation.command is command
        assert invocation.arguments.quiet is True
    assert parse(parser, [*path, *words, *required]).arguments.quiet is False


def _positionals(command: Command) -> list[str]:
    return [f.names[0] for f in _flags(command.arguments) if f.positional]


def _required(command: Command) -> list[str]:
    return [f.names[0] for f in _flags(command.arguments) if f.options.get("required")]


def test_no_command_prints_the_help(run: Run) -> None:
    result = run()
    assert result.code == 2
    assert "deploy" in result.out and "services" in result.out


def test_main_returns_instead_of_exiting(run: Run) -> None:
    # Only the console script calls sys.exit: main returns argparse's codes.
    assert run("--help").code == 0
    assert run("--no-such-flag").code == 2


def test_the_top_level_help_shows_where_to_start(run: Run) -> None:
    out = run("--help").out
    examples = out.partition("\nexamples:\n")[2]
    for line in ("homerun deploy hello --source .", "homerun status", "homerun config"):
        assert f"    $ {line}" in examples, out
    assert out.rstrip().endswith("Run `homerun COMMAND --help` for a command's flags and examples.")


@pytest.mark.parametrize(("path", "group"), GROUPS[1:], ids=[" ".join(p) for p, _ in GROUPS[1:]])
def test_a_group_says_how_to_see_its_commands_help(
    run: Run, path: tuple[str, ...], group: Group
) -> None:
    out = run(*path, "--help").out
    assert f"Run `homerun {' '.join(path)} COMMAND --help` for a command's flags" in out


def test_a_mistyped_command_points_to_the_groups_help(run: Run) -> None:
    assert "Run `homerun services --help` for its commands." in run("services", "lst").err
    assert "Run `homerun deploy --help` for the flags." in run("deploy", "x", "--souce").err


def test_run_takes_each_gcloud_run_group_whole(run: Run, fake: FakeClient) -> None:
    """`homerun run GROUP ...` is `homerun GROUP ...`, as a README's `gcloud run` lines say."""
    top = {entry.name: entry for entry in COMMANDS.entries}
    run_group = top["run"]
    assert isinstance(run_group, Group)
    groups = [entry for entry in run_group.entries if isinstance(entry, Group)]
    assert [group.name for group in groups] == [
        "services",
        "revisions",
        "jobs",
        "worker-pools",
        "domain-mappings",
    ]
    for group in groups:
        original = top[group.name]
        assert isinstance(original, Group)
        under_run = [(path, command.handler) for path, command in _commands(group)]
        assert under_run == [(path, command.handler) for path, command in _commands(original)]
    described = run("run", "services", "describe", "hello", "--format", "value(metadata.name)")
    assert described.out == "hello\n", described.err
    listed = run("run", "revisions", "list", "--format", "value(metadata.name)", "--region", "r")
    assert listed.out == "hello-00002-abc\n"
    assert run("run", "jobs", "executions", "list", "--job", "report").code == 0
    assert fake.called("executions") == [("report",)]
