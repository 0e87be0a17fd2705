"""Which start commands a zygote can serve: gunicorn or uvicorn, run as one plain command.

`recognise` reads the instance's argv the way `/bin/sh -c` and exec would, with `$PORT` the
only expansion allowed, finds the server's console script on the instance's PATH, and the
interpreter that script runs with: on the host, or in an image's root folder (the instance
then sees that folder as `/`). Anything it cannot follow exactly is left to a plain spawn,
with the reason, because a zygote that guessed would change what the app runs.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from homerun.shellwords import split_script

SERVERS = ("gunicorn", "uvicorn")
MIN_ZYGOTE_PYTHON = (3, 8)
SHELLS = ("sh", "bash", "dash")
# Marks where the command says $PORT; NUL never occurs in a real argument.
PORT_MARK = "\0"

# The only expansions a zygote follows: it substitutes each instance's port for them.
_PORT_REFERENCES = ("$PORT", "${PORT}")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"^python(?:3(?:\.\d+)?)?$")
# pip's launcher for a path too long (or spaced) for a #! line:
#   #!/bin/sh
#   '''exec' "/long/path/bin/python" "$0" "$@"
_PIP_TRAMPOLINE = re.compile(r"""^'''exec' "?([^"]+?)"? "\$0" "\$@"$""")


@dataclass(frozen=True)
class ServerCommand:
    """A start command a zygote can run: `program args...` or `python -m module args...`."""

    server: str  # "gunicorn" | "uvicorn"
    interpreter: str  # the python that runs the server
    program: str | None  # the console script, or None with `python -m`
    module: str | None  # the module of `python -m`, else None
    args: tuple[str, ...]  # after the program (or module); PORT_MARK where $PORT was
    shell: str | None = None  # the shell that runs it (`sh -c "exec gunicorn ..."`), if any

    def args_for(self, port: int | str) -> list[str]:
        return [argument.replace(PORT_MARK, str(port)) for argument in self.args]

    @property
    def launcher(self) -> tuple[str | None, str | None, str]:
        """What must be equal for two commands to share a zygote (all but the arguments)."""
        return (self.program, self.module, self.interpreter)


@dataclass(frozen=True)
class Unrecognised:
    reason: str


class Filesystem:
    """Paths as the instance sees them: the host's, or those of an image's root folder, where
    a link to /usr/bin/python3 means the image's python3, not the host's."""

    _MAX_LINKS = 40

    def __init__(self, root: Path | None = None) -> None:
        self._root = None if root is None else str(root).rstrip("/")

    def host(self, path: str) -> str | None:
        """Where the absolute `path` of the instance is on the host (None: a loop of links)."""
        if self._root is None:
            return path
        inside = self._resolved(path)
        return None if inside is None else self._root + inside

    def is_file(self, path: str) -> bool:
        host = self.host(path)
        return host is not None and os.path.isfile(host)

    def is_executable(self, path: str) -> bool:
        host = self.host(path)
        return host is not None and os.path.isfile(host) and os.access(host, os.X_OK)

    def which(self, name: str, path: str) -> str | None:
        if self._root is None:
            return shutil.which(name, path=path)
        for folder in path.split(os.pathsep):
            if folder.startswith("/") and self.is_executable(posixpath.join(folder, name)):
                return posixpath.join(folder, name)
        return None

    def _resolved(self, path: str) -> str | None:
        """`path` inside the root with every link followed there, as the kernel would once
        the root is `/`."""
        assert self._root is not None
        parts = list(PurePosixPath(path).parts[1:])
        current, links = "/", 0
        while parts:
            part = parts.pop(0)
            if part in ("", "."):
                continue
            if part == "..":
                current = posixpath.dirname(current)
                continue
            candidate = posixpath.join(current, part)
            if os.path.islink(self._root + candidate):
                links += 1
                if links > self._MAX_LINKS:
                    return None
                target = os.readlink(self._root + candidate)
                if target.startswith("/"):
                    current = "/"
                parts = [*PurePosixPath(target).parts[target.startswith("/") :], *parts]
                continue
            current = candidate
        return current


def recognise(
    argv: Sequence[str], env: Mapping[str, str], cwd: str, root: Path | None = None
) -> ServerCommand | Unrecognised:
    """The server command in argv, found on env's PATH (in `root`, an image's root folder,
    when given); or why a zygote cannot run it."""
    fs = Filesystem(root)
    words = command_words(argv)
    if isinstance(words, Unrecognised):
        return words
    shell = argv[0] if _runs_a_shell(argv) else None
    if words and words[0] == "exec":
        words = words[1:]
        if words and words[0].startswith("-"):
            return Unrecognised(f"`exec {words[0]}` changes how the command is run")
    if not words:
        return Unrecognised("the start command is empty")
    if _ASSIGNMENT.match(words[0]):
        return Unrecognised(f"the command sets a variable first ({words[0].split('=')[0]}=...)")
    path = env.get("PATH", os.defpath)
    name = posixpath.basename(words[0])
    if _PYTHON.match(name):
        if len(words) < 3 or words[1] != "-m" or words[2] not in SERVERS:
            return Unrecognised(f"`{_shown(words)}` does not start gunicorn or uvicorn")
        interpreter = _executable(words[0], path, cwd, fs)
        if interpreter is None:
            return Unrecognised(f"{words[0]} is not found on the instance's PATH")
        too_old = _too_old(interpreter, fs)
        if too_old:
            return Unrecognised(too_old)
        return ServerCommand(words[2], interpreter, None, words[2], tuple(words[3:]), shell)
    if name not in SERVERS:
        return Unrecognised(f"`{_shown(words)}` does not start gunicorn or uvicorn")
    if PORT_MARK in words[0]:
        return Unrecognised("the server's own path depends on $PORT")
    program = _executable(words[0], path, cwd, fs)
    if program is None:
        return Unrecognised(f"{words[0]} is not found on the instance's PATH")
    interpreter = _script_interpreter(program, path, fs)
    if interpreter is None:
        return Unrecognised(f"{program} is not a Python console script")
    too_old = _too_old(interpreter, fs)
    if too_old:
        return Unrecognised(too_old)
    return ServerCommand(name, interpreter, program, None, tuple(words[1:]), shell)


def _too_old(interpreter: str, fs: Filesystem) -> str | None:
    """Why the zygote cannot run on this interpreter (`FROM python:3.8` runs on a Python 3.8):
    the zygote (_zygote/) runs on 3.8 and newer (3.7 was not tried; older ones cannot read
    its types). Its virtualenv's pyvenv.cfg says which version it is; without one, the name
    (python3.8) does."""
    version = None
    config = fs.host(
        posixpath.join(posixpath.dirname(posixpath.dirname(interpreter)), "pyvenv.cfg")
    )
    try:
        if config is None:
            raise OSError("a loop of links")
        with open(config, encoding="utf-8") as lines:
            for line in lines:
                key, _, value = line.partition("=")
                if key.strip() in ("version", "version_info"):
                    version = value.strip()
                    break
    except OSError:
        pass
    if version is None:
        named = re.fullmatch(r"python(\d+\.\d+)", posixpath.basename(interpreter))
        version = named.group(1) if named else None
    if version is None:
        return None
    numbers = tuple(int(part) for part in re.findall(r"\d+", version)[:2])
    if numbers >= MIN_ZYGOTE_PYTHON:
        return None
    return (
        f"the revision runs on Python {version}, and a zygote needs "
        f"{'.'.join(map(str, MIN_ZYGOTE_PYTHON))} or newer"
    )


def command_words(argv: Sequence[str]) -> list[str] | Unrecognised:
    """The words exec'd at the end: argv itself, or the words of a `sh -c SCRIPT` script."""
    if _runs_a_shell(argv):
        if len(argv) > 3:
            return Unrecognised("the shell is given arguments after its script")
        return shell_words(argv[2])
    return list(argv)


def shell_words(script: str) -> list[str] | Unrecognised:
    """Split a one-command shell script as sh would: quotes, backslashes and $PORT (as
    PORT_MARK); any other expansion or shell syntax is Unrecognised."""
    words = split_script(script, {"PORT": PORT_MARK})
    for word in words:
        if word.operator:
            return Unrecognised(_a_script(word.text[0]))
        for special in word.specials:
            if special.source in _PORT_REFERENCES:
                continue
            if special.source in ("'", '"'):
                return Unrecognised("the command has an unterminated quote")
            if special.source.startswith("$"):
                shown = script[special.start : special.start + 12]
                return Unrecognised(f"the command uses shell expansion ({shown}...)")
            if special.source == "`" and special.quoted:
                return Unrecognised("the command uses command substitution")
            return Unrecognised(_a_script(special.source[0]))
    return [word.text for word in words]


def _a_script(syntax: str) -> str:
    return f"the command is a shell script (it uses {syntax!r}), not one command"


def _runs_a_shell(argv: Sequence[str]) -> bool:
    return len(argv) >= 3 and posixpath.basename(argv[0]) in SHELLS and argv[1] == "-c"


def _executable(word: str, path: str, cwd: str, fs: Filesystem) -> str | None:
    if "/" in word:
        candidate = word if word.startswith("/") else os.path.join(cwd, word)
        return candidate if fs.is_executable(candidate) else None
    return fs.which(word, path)


def _script_interpreter(program: str, path: str, fs: Filesystem) -> str | None:
    """The python in a console script's #! line (or pip's /bin/sh launcher), else None."""
    try:
        host = fs.host(program)
        if host is None:
            return None
        with open(host, "rb") as script:
            head = script.read(1024).decode("utf-8", "replace").splitlines()
    except OSError:
        return None
    if not head or not head[0].startswith("#!"):
        return None
    interpreter, *flags = head[0][2:].split()
    if posixpath.basename(interpreter) == "env" and flags:
        interpreter, flags = flags[0], flags[1:]
        found = fs.which(interpreter, path)
        interpreter = found or interpreter
    elif posixpath.basename(interpreter) == "sh" and len(head) > 1:
        trampoline = _PIP_TRAMPOLINE.match(head[1].strip())
        if trampoline is None:
            return None
        interpreter, flags = trampoline.group(1), []
    if flags or not _PYTHON.match(posixpath.basename(interpreter)):
        return None  # `python -u` and friends: not how the zygote runs
    return interpreter if fs.is_file(interpreter) else None


def _shown(words: Sequence[str]) -> str:
    text = " ".join(words).replace(PORT_MARK, "$PORT")
    return text if len(text) <= 80 else text[:77] + "..."
