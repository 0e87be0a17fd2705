"""Refuse pip arguments and requirement lines that reach outside the source folder.

What a deploy installs must come from its own folder or from a package index, never from the
machine's disk: `-r /etc/other.txt`, `../shared`, `file:///root/wheels` or `--find-links /opt`
would read files the deployer may not read, and their contents, being outside the source, are
not what the virtualenv cache keys it by. Each refusal names the file and line (the
requirements file, the Dockerfile's RUN line, pyproject.toml's dependency) and what to do.

Options that change where packages come from (`--index-url`, `--extra-index-url`,
`--find-links` to a URL, `--trusted-host`, `--no-index`) are allowed: a private index is how
many apps get their own packages (`--extra-index-url https://download.pytorch.org/whl/cpu`),
Cloud Run's buildpack honours them, and they cannot poison another service's virtualenv: the
cache key covers them (the text of the arguments and of every requirement file, the contents
of every local folder named), so only a deploy that asks for the same index shares the
virtualenv they built, and pip's own cache is never shared between builds (build/venv.py).
Options that make pip write or run outside the virtualenv it builds (`--python`, `--src`,
`--log`, `--report`; the Dockerfile parser refuses `--target`, `--prefix`, `--root`, `--user`)
are refused.
"""

from __future__ import annotations

import os
import re
import shlex
import urllib.parse
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from homerun.build._pip import INSTALL_OPTIONS_WITH_VALUE
from homerun.errors import BuildError

# Options whose value is a file pip reads (-r, -c: requirement files, read in turn).
REQUIREMENT_FILE_OPTIONS = frozenset({"-r", "--requirement", "-c", "--constraint"})
# Options whose value is where packages come from: a URL, or a local folder or file.
LOCATION_OPTIONS = frozenset({"-f", "--find-links", "-i", "--index-url", "--extra-index-url"})
EDITABLE_OPTIONS = frozenset({"-e", "--editable"})
# Files pip reads to reach an index (certificates): local paths, so inside the source.
_PATH_OPTIONS = frozenset({"--cert", "--client-cert"})
# pip writes (logs, reports, checkouts) or installs with another interpreter: not into the
# virtualenv being built.
_WRITING_OPTIONS = {
    "--python": "runs pip for another Python, installing into its environment",
    "--src": "checks out editable VCS requirements into a folder outside the virtualenv",
    "--log": "writes a log file outside the virtualenv",
    "--log-file": "writes a log file outside the virtualenv",
    "--local-log": "writes a log file outside the virtualenv",
    "--report": "writes a report file outside the virtualenv",
}
# Short options pip accepts with the value attached (`-rrequirements.txt`).
_ATTACHED = ("-r", "-c", "-e", "-f", "-i")
# pip expands ${NAME} in requirement files from its environment (upper case, digits, _).
_VARIABLE = re.compile(r"\$\{([A-Z0-9_]+)\}")
_ARCHIVES = (".whl", ".tar.gz", ".tgz", ".tar.bz2", ".tbz", ".tar.xz", ".txz", ".tar", ".zip")
_COMMENT = re.compile(r"(^|\s+)#.*$")
# A URL's scheme (two letters at least: a Windows drive letter is not one).
_SCHEME = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]+):")


@dataclass(frozen=True)
class Reach:
    """What a pip step reads from the disk, all of it inside its source folder."""

    # Local project folders pip builds: pip builds them in place, writing into them
    # (setuptools' `build/` and `*.egg-info`), so a sandboxed build gets a copy it may write.
    projects: tuple[Path, ...] = ()


def confine(
    arguments: Sequence[str],
    *,
    cwd: Path,
    context: Path,
    where: str,
    environ: Mapping[str, str] | None = None,
) -> Reach:
    """Check `pip install ARGUMENTS`, run in `cwd`, and the requirement files it reads: all
    must stay inside `context`. `where` names the arguments' origin for messages
    (`Dockerfile:10`). BuildError on the first that does not."""
    check = _Check(Path(os.path.realpath(context)), environ if environ is not None else os.environ)
    check.arguments(arguments, cwd=cwd, where=where)
    return Reach(projects=tuple(dict.fromkeys(check.projects)))


def refuse_options(requirements: Sequence[str], where: Sequence[str]) -> None:
    """Dependencies read from a list of requirement strings (pyproject.toml's) are passed to pip
    as arguments: one that starts with `-` would be an option (`--index-url=…`), not a
    requirement. `where[i]` names requirement i for the message."""
    for requirement, origin in zip(requirements, where, strict=True):
        if requirement.lstrip().startswith("-"):
            raise BuildError(
                f"{origin}: `{requirement}` is a pip option, not a requirement; list only "
                "requirements there (put pip options in requirements.txt)"
            )


class _Check:
    def __init__(self, context: Path, environ: Mapping[str, str]) -> None:
        self.context = context
        self.environ = environ
        self.projects: list[Path] = []
        self.seen: set[Path] = set()

    def arguments(self, arguments: Sequence[str], *, cwd: Path, where: str) -> None:
        for option, value, word in _options(arguments):
            if option is None:
                self.requirement(value, cwd=cwd, where=where, word=word)
            else:
                self.option(option, value, cwd=cwd, relative_to=cwd, where=where, word=word)

    def option(
        self, option: str, value: str, *, cwd: Path, relative_to: Path, where: str, word: str
    ) -> None:
        if option in _WRITING_OPTIONS and not (option == "--report" and value == "-"):
            raise BuildError(
                f"{where}: `{word}` {_WRITING_OPTIONS[option]}; homerun installs into the "
                "revision's virtualenv only: remove it"
            )
        if option in REQUIREMENT_FILE_OPTIONS:
            path = self.local(value, relative_to, where=where, word=word)
            if path is not None:
                self.requirement_file(path, cwd=cwd)
        elif option in EDITABLE_OPTIONS:
            self.requirement(value, cwd=cwd, where=where, word=word)
        elif option in LOCATION_OPTIONS:
            # pip reads a relative --find-links next to the requirements file when it is there.
            beside = relative_to / value
            base = relative_to if option in ("-f", "--find-links") and beside.exists() else cwd
            self.local(value, base, where=where, word=word)
        elif option in _PATH_OPTIONS:
            self.local(value, cwd, where=where, word=word, url=False)

    def requirement(self, requirement: str, *, cwd: Path, where: str, word: str) -> None:
        """A requirement: a name (from an index), a URL, a local path, or `name @ URL`."""
        target = self.expand(requirement.strip())
        name, at, url = target.partition("@")
        if at and _has_scheme(url.strip()) and not _looks_like_path(name):
            target = url.strip()  # PEP 508: `name @ URL`
        if _has_scheme(target):
            target = re.split(r"\s;|;\s", target, maxsplit=1)[0]  # a marker follows a space
        else:
            target = target.split(";", 1)[0].strip()
            if not (_looks_like_path(target) or target.lower().endswith(_ARCHIVES)):
                return  # a project's name: from an index
            target = re.sub(r"\[[^\]]*\]$", "", target)  # ./pkg[extra]
        path = self.local(target, cwd, where=where, word=word)
        if path is not None and path.is_dir():
            self.projects.append(path)

    def expand(self, text: str) -> str:
        return _VARIABLE.sub(lambda found: self.environ.get(found.group(1), found.group(0)), text)

    def local(
        self, value: str, relative_to: Path, *, where: str, word: str, url: bool = True
    ) -> Path | None:
        """The local path `value` names (a path, or a file: URL), checked to be inside the
        source folder; None for a URL of another scheme (an index, a VCS remote)."""
        value = self.expand(value)
        match = _SCHEME.match(value) if url else None
        if match is not None:
            scheme = match.group(1).lower()
            if scheme != "file" and not scheme.endswith("+file"):
                return None
            parsed = urllib.parse.urlsplit(value.split("+", 1)[1] if "+" in scheme else value)
            if parsed.netloc not in ("", "localhost"):
                raise BuildError(
                    f"{where}: `{word}` names a file on another machine ({parsed.netloc}); "
                    "put it in the source folder, or publish it on a package index"
                )
            raw = urllib.parse.unquote(parsed.path)
        else:
            raw = value
        path = Path(os.path.realpath(relative_to / os.path.expanduser(raw)))
        if not path.is_relative_to(self.context):
            raise BuildError(
                f"{where}: `{word}` reaches outside the source folder {self.context} "
                f"({path}); what a deploy installs comes from its own folder or a package "
                "index: copy it into the source folder and name it by a relative path "
                "(./wheels, ./libs/mypkg), or publish it on an index"
            )
        return path

    def requirement_file(self, path: Path, *, cwd: Path) -> None:
        if path in self.seen or not path.is_file():
            return  # a loop, or missing: pip says so with its own message
        self.seen.add(path)
        for number, line in _logical_lines(path):
            where = f"{path}:{number}"
            try:
                words = shlex.split(line)
            except ValueError:
                words = line.split()
            if not words:
                continue
            if not words[0].startswith("-"):
                # A requirement, maybe followed by its own options (--hash, --config-settings).
                options_at = next(
                    (index for index, word in enumerate(words) if word.startswith("-")),
                    len(words),
                )
                requirement = " ".join(words[:options_at])
                self.requirement(requirement, cwd=cwd, where=where, word=requirement)
                words = words[options_at:]
            for option, value, word in _options(words):
                if option is None:
                    continue
                # Nested -r and -c are relative to the file naming them; requirements to cwd.
                self.option(option, value, cwd=cwd, relative_to=path.parent, where=where, word=word)


def _options(arguments: Sequence[str]) -> Iterator[tuple[str | None, str, str]]:
    """(option, value, the words as written) for each option with a value, and (None,
    requirement, requirement) for each other word that is no option."""
    index = 0
    while index < len(arguments):
        argument = arguments[index]
        index += 1
        if not argument.startswith("-") or argument == "-":
            yield None, argument, argument
            continue
        option, has_inline, inline = argument.partition("=")
        if has_inline and option.startswith("--"):
            yield option, inline, argument
        elif argument[:2] in _ATTACHED and len(argument) > 2:
            yield argument[:2], argument[2:], argument
        elif option in INSTALL_OPTIONS_WITH_VALUE or option in _WRITING_OPTIONS:
            if index < len(arguments):
                yield option, arguments[index], f"{argument} {arguments[index]}"
                index += 1


def _has_scheme(text: str) -> bool:
    return _SCHEME.match(text) is not None


def _looks_like_path(name: str) -> bool:
    """pip's test for a requirement that is a local path rather than a project name."""
    return "/" in name or name.startswith(".")


def _logical_lines(path: Path) -> list[tuple[int, str]]:
    """A requirements file's lines as pip reads them: comments dropped, continuations joined,
    each with the number of the line it starts on."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), start=1):
        if not pending:
            start = number
        if line.endswith("\\") and not _COMMENT.search(line):
            pending.append(line[:-1])
            continue
        pending.append(line)
        text = _COMMENT.sub("", " ".join(pending)).strip()
        pending = []
        if text:
            lines.append((start, text))
    if pending:
        text = _COMMENT.sub("", " ".join(pending)).strip()
        if text:
            lines.append((start, text))
    return lines
