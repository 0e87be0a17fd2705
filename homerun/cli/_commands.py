"""Commands declared as data next to their handlers, and the argparse parser built from them."""

from __future__ import annotations

import argparse
import difflib
import sys
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from homerun.cli._context import Context

Handler = Callable[[argparse.Namespace, "Context"], int]


@dataclass(frozen=True)
class Flag:
    """One `add_argument`: a flag (`--limit`) or a positional (`service`)."""

    names: tuple[str, ...]
    options: dict[str, Any]

    @property
    def positional(self) -> bool:
        return not self.names[0].startswith("-")


def flag(*names: str, **options: Any) -> Flag:
    """`flag("--limit", type=int, default=50, help=...)`: add_argument's own words."""
    return Flag(names, options)


def positional(dest: str, metavar: str, help: str) -> Flag:
    return Flag((dest,), {"metavar": metavar, "help": help})


@dataclass(frozen=True)
class OneOf:
    """Flags of which at most one may be given (argparse's mutually exclusive group)."""

    flags: tuple[Flag, ...]


def one_of(*flags: Flag) -> OneOf:
    return OneOf(flags)


@dataclass(frozen=True)
class FlagGroup:
    """Flags with their own heading in help, given to each command that takes them
    (gcloud's flag groups: env vars, secrets, traffic...)."""

    title: str
    members: tuple[Flag | OneOf, ...]


Argument = Flag | OneOf | FlagGroup


@dataclass(frozen=True)
class Command:
    name: str
    summary: str  # its one line in the group's help
    handler: Handler
    arguments: tuple[Argument, ...]
    examples: tuple[tuple[str, str], ...]  # (what it does, the command line)
    description: str


def command(
    name: str,
    summary: str,
    *arguments: Argument,
    examples: Sequence[tuple[str, str]],
    description: str = "",
) -> Callable[[Handler], Command]:
    """Declare the handler below as the command `name`, with its flags and its examples."""
    if not examples:
        raise ValueError(f"command {name!r}: give at least one example for its help")

    def declare(handler: Handler) -> Command:
        return Command(name, summary, handler, arguments, tuple(examples), description)

    return declare


@dataclass(frozen=True)
class Group:
    name: str
    summary: str
    entries: tuple[Command | Group, ...]
    examples: tuple[tuple[str, str], ...] = ()  # the top level's: where a newcomer starts


HELP_WIDTH = 79  # descriptions are wrapped here; examples stay one command per line

# gcloud's global flag: no question asked, as in scripts.
QUIET_NAMES = ("-q", "--quiet")
QUIET_HELP = "do not ask for confirmation; take the default answer"
# gcloud's flags that every `gcloud run` command takes and that choose nothing here, accepted so
# that a README's command line runs as written: (names, add_argument options).
GCLOUD_FLAGS: tuple[tuple[tuple[str, ...], dict[str, Any]], ...] = (
    (
        ("--project",),
        {"metavar": "PROJECT", "help": "accepted for gcloud: homerun serves one project "
         "(config.yaml's `project`), whatever this says"},
    ),
    (
        ("--region",),
        {"metavar": "REGION", "help": "accepted for gcloud: homerun runs in one place"},
    ),
    (
        ("--platform",),
        {"choices": ["managed"], "help": "accepted for gcloud: homerun is Cloud Run's managed "
         "platform (gke and kubernetes are not here)"},
    ),
)  # fmt: skip
# Commands that change something: gcloud gives them --async (return before the operation ends).
ASYNC_COMMANDS = frozenset({"deploy", "update", "update-traffic", "replace", "delete", "create"})
ASYNC_HELP = "accepted for gcloud: homerun's operations end in seconds, and it waits for them"


# -- parsing -------------------------------------------------------------------------------


class UsageError(Exception):
    """The command line does not parse: argparse's exit 2, with the usage of the command."""

    def __init__(self, parser: argparse.ArgumentParser, message: str) -> None:
        super().__init__(message)
        self.parser = parser
        self.message = message

    def report(self) -> None:
        self.parser.print_usage(sys.stderr)
        prog = self.parser.prog
        what = "its commands" if getattr(self.parser, "is_group", False) else "the flags"
        print(f"ERROR: {prog}: {self.message}\nRun `{prog} --help` for {what}.", file=sys.stderr)


class ParserExit(Exception):
    """--help or --version has been answered."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Each flag's default when it has one; descriptions and examples as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            action.option_strings
            and action.default not in (None, False, argparse.SUPPRESS)
            and "default" not in text
        ):
            text += " (default: %(default)s)"
        return text


class Parser(argparse.ArgumentParser):
    """No abbreviations, no sys.exit, and a "did you mean" for a mistyped flag or command."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["allow_abbrev"] = False  # `--set-env-var` is a typo, not --set-env-vars
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.is_group = False  # set once it has commands below it

    def error(self, message: str) -> NoReturn:
        raise UsageError(self, message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        if message:
            self._print_message(message, sys.stderr)
        raise ParserExit(status)

    def flag_names(self) -> list[str]:
        return [name for action in self._actions for name in action.option_strings]

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if action.choices is not None and value not in action.choices:
            choices = [str(choice) for choice in action.choices]
            guess = _closest(str(value), choices)
            hint = f"; did you mean {guess}?" if guess else ""
            raise argparse.ArgumentError(
                action, f"invalid choice: {value!r}{hint} (choose from {', '.join(choices)})"
            )


@dataclass(frozen=True)
class Invocation:
    arguments: argparse.Namespace
    parser: Parser  # the deepest parser the words reached: its usage goes with an error
    command: Command | None  # None: a group without a command (`homerun logs`)


def build_parser(root: Group, version: str) -> Parser:
    parser = Parser(prog=root.name, description=root.summary, epilog=_group_epilog(root, ""))
    parser.add_argument("--version", action="version", version=f"{root.name} {version}")
    parser.add_argument(*QUIET_NAMES, action="store_true", help=QUIET_HELP)
    _add_gcloud_flags(parser)
    _add_entries(parser, root.entries)
    return parser


def parse(parser: Parser, argv: Sequence[str]) -> Invocation:
    """The handler and its arguments; UsageError or ParserExit otherwise."""
    arguments, extras = parser.parse_known_args(argv)
    reached: Parser = arguments._parser
    if extras:
        raise UsageError(reached, _unrecognized(extras, [*reached.flag_names(), "--version"]))
    return Invocation(arguments, reached, arguments._command)


def _add_entries(parser: Parser, entries: Iterable[Command | Group]) -> None:
    parser.set_defaults(_parser=parser, _command=None)
    parser.is_group = True
    subcommands = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=Parser)
    for entry in entries:
        if isinstance(entry, Group):
            group = subcommands.add_parser(
                entry.name,
                help=entry.summary,
                description=entry.summary,
                epilog=_group_epilog(entry, parser.prog),
            )
            _add_quiet(group)
            _add_gcloud_flags(group)
            _add_entries(group, entry.entries)
            continue
        leaf = subcommands.add_parser(
            entry.name,
            help=entry.summary,
            description=textwrap.fill(entry.description or entry.summary, HELP_WIDTH),
            epilog=_examples(entry.examples),
        )
        for argument in entry.arguments:
            _add_argument(leaf, argument)
        _add_quiet(leaf)
        _add_gcloud_flags(leaf, asynchronous=entry.name in ASYNC_COMMANDS)
        leaf.usage = _usage(entry.arguments)
        leaf.set_defaults(_parser=leaf, _command=entry)


def _add_quiet(parser: Parser) -> None:
    # SUPPRESS: a command's own default must not undo a -q given before the command's name.
    parser.add_argument(
        *QUIET_NAMES, action="store_true", default=argparse.SUPPRESS, help=QUIET_HELP
    )


def _add_gcloud_flags(parser: Parser, *, asynchronous: bool = False) -> None:
    """gcloud's --project, --region, --platform (and --async where it has it), unless the
    command has a flag of that name itself. SUPPRESS, as for --quiet."""
    section = parser.add_argument_group("gcloud flags, accepted and ignored")
    taken = set(parser.flag_names())
    for names, options in GCLOUD_FLAGS:
        if not taken.intersection(names):
            section.add_argument(*names, default=argparse.SUPPRESS, **options)
    if asynchronous and "--async" not in taken:
        section.add_argument(
            "--async", dest="async_", action="store_true", default=argparse.SUPPRESS,
            help=ASYNC_HELP,
        )  # fmt: skip


def _add_argument(parser: argparse._ActionsContainer, argument: Argument) -> None:
    if isinstance(argument, Flag):
        parser.add_argument(*argument.names, **argument.options)
    elif isinstance(argument, OneOf):
        exclusive = parser.add_mutually_exclusive_group()
        for one in argument.flags:
            exclusive.add_argument(*one.names, **one.options)
    else:
        section = parser.add_argument_group(argument.title)
        for member in argument.members:
            _add_argument(section, member)


def _usage(arguments: Sequence[Argument]) -> str:
    """gcloud's short usage: the positionals, the required flags, then [flags]."""
    flags = list(_flags(arguments))
    words = ["%(prog)s"]
    words += [str(each.options.get("metavar", each.names[0])) for each in flags if each.positional]
    for each in flags:
        if each.options.get("required"):
            metavar = each.options.get("metavar", each.names[-1].lstrip("-").upper())
            words.append(f"{each.names[-1]} {metavar}")
    words.append("[flags]")
    return " ".join(words)


def _flags(arguments: Iterable[Argument]) -> Iterable[Flag]:
    for argument in arguments:
        if isinstance(argument, Flag):
            yield argument
        elif isinstance(argument, OneOf):
            yield from argument.flags
        else:
            yield from _flags(argument.members)


def _group_epilog(group: Group, parent: str) -> str:
    prog = f"{parent} {group.name}".strip()
    text = f"Run `{prog} COMMAND --help` for a command's flags and examples."
    if group.examples:
        text = f"{_examples(group.examples)}\n\n{text}"
    return text


def _examples(examples: Sequence[tuple[str, str]]) -> str:
    lines = ["examples:"]
    for what, line in examples:
        lines += [f"  {what}:", "", f"    $ {line}", ""]
    return "\n".join(lines).rstrip()


def _unrecognized(extras: Sequence[str], known: Sequence[str]) -> str:
    message = f"unrecognized arguments: {' '.join(extras)}"
    guesses = []
    for extra in extras:
        if extra.startswith("-"):
            name = extra.partition("=")[0]
            guess = _closest(name, known)
            if guess:
                guesses.append((name, guess))
    if len(guesses) == 1:
        message += f"; did you mean {guesses[0][1]}?"
    elif guesses:
        message += "; did you mean " + ", ".join(f"{g} (for {n})" for n, g in guesses) + "?"
    return message


def _closest(word: str, candidates: Sequence[str]) -> str | None:
    matches = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return matches[0] if matches else None
