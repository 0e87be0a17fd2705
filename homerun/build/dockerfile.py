"""Parse the Python subset of a Dockerfile that homerun can honour without a container engine.

The parser is pure: text in, a `Dockerfile` (or a `DockerfileError` naming the line) out. The
subset is what Cloud Run's Python samples and tutorials use: a single `FROM python…` stage,
`WORKDIR`, `COPY`/`ADD` of local paths, `ENV`, `ARG`, `EXPOSE`, `LABEL`, `RUN pip install …`
and `CMD`/`ENTRYPOINT`. Everything else needs a real image build, except a line that starts
with no Dockerfile instruction at all (a typo), which no builder takes.
"""

from __future__ import annotations

import json
import posixpath
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import NoReturn

from homerun.build._pip import GLOBAL_OPTIONS_WITH_VALUE
from homerun.errors import BuildError, DockerfileError
from homerun.model.suggest import closest
from homerun.shellwords import Word, WordError, expand, split_unexpanded, split_words

# True where it is read: homerun without an engine raises it, and with podman installed (and
# config.yaml's container-engine left at auto) the next daemon builds such Dockerfiles.
HOW_TO_PROCEED = (
    "install podman (apt-get install podman buildah runc, or `./scripts/setup containers` in "
    "homerun's checkout) and restart homerun (`homerun down`) with `container-engine: auto` "
    "(the default) in config.yaml: it then builds the Dockerfile with podman and runs the "
    "image as containers; or deploy with --command (homerun then ignores this Dockerfile and "
    "installs requirements.txt)"
)

# The python images set this PATH, so `ENV PATH=/app/bin:$PATH` means the same here.
IMAGE_PATH = "/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin"

_INSTRUCTION = re.compile(r"\s*([A-Za-z]+)(?:\s+(.*))?$", re.S)
_DIRECTIVE = re.compile(r"#\s*([A-Za-z]+)\s*=\s*(.*?)\s*$")
_HEREDOC = re.compile(r"<<-?[\"']?([A-Za-z_][A-Za-z0-9_]*)[\"']?")  # BuildKit's: <<EOF, <<-"EOF"
_PYTHON_IMAGE = re.compile(r"^(?:[\w.-]+(?::\d+)?/)*python(?:[:@].*)?$")
_ARCHIVE_SUFFIXES = (
    ".tar",
    ".tar.gz",
    ".tgz",
    ".tar.bz2",
    ".tbz",
    ".tbz2",
    ".tar.xz",
    ".txz",
    ".tar.zst",
)
_REFUSED_HINTS = {
    "USER": "switching user is not emulated",
    "VOLUME": "volumes are not emulated (Cloud Run has none either)",
    "HEALTHCHECK": "health checks come from the service's probes, not the image",
    "SHELL": "only /bin/sh runs shell-form commands",
    "ONBUILD": "ONBUILD triggers need an image build",
    "STOPSIGNAL": "instances are always stopped with SIGTERM, then SIGKILL",
}
# pip options that write outside the virtualenv or change what "installed" means.
_REFUSED_PIP_OPTIONS = {"-t", "--target", "--prefix", "--root"}
# Every instruction of the Dockerfile reference (docs.docker.com/reference/dockerfile/); a word
# that is none of them is a mistake whichever engine reads the file.
INSTRUCTIONS = (
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
)


class UnknownInstruction(BuildError):
    """A line starts with a word that is no Dockerfile instruction (`COPPY`, a typo). Not a
    DockerfileError: it is not beyond the subset but wrong for every builder, so it is not
    handed to the container engine, whose error would name another line."""

    def __init__(self, path: str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path = path
        self.line = line


@dataclass(frozen=True)
class Instruction:
    """One instruction with its continuation lines joined; `line` is where it starts."""

    keyword: str
    text: str
    line: int


@dataclass(frozen=True)
class Workdir:
    path: str  # absolute, normalized container path
    line: int


@dataclass(frozen=True)
class Copy:
    """COPY/ADD of build-context paths into the container's filesystem."""

    keyword: str
    sources: tuple[str, ...]  # as written, relative to the build context (may hold wildcards)
    destination: str  # absolute container path; ends with "/" when it names a directory
    line: int


@dataclass(frozen=True)
class PipInstall:
    """`pip install ARGS` from a RUN line, run in the WORKDIR that was current there."""

    arguments: tuple[str, ...]
    workdir: str
    line: int


@dataclass(frozen=True)
class ContainerCommand:
    """CMD or ENTRYPOINT; shell form is kept as ("/bin/sh", "-c", text) like Docker does."""

    keyword: str
    argv: tuple[str, ...]
    shell_form: bool
    line: int

    def describe(self) -> str:
        return f"Dockerfile {self.keyword} (line {self.line})"


Step = Workdir | Copy | PipInstall


@dataclass(frozen=True)
class Dockerfile:
    path: str
    base_image: str
    base_line: int
    steps: tuple[Step, ...]  # WORKDIR, COPY/ADD and pip installs in file order
    workdir: str  # the final WORKDIR: where the container's process starts
    env: Mapping[str, str]  # ENV, in order; no ARG (build-time only)
    args: Mapping[str, str]
    labels: Mapping[str, str]
    exposed_ports: tuple[str, ...]
    entrypoint: ContainerCommand | None
    cmd: ContainerCommand | None

    @property
    def pip_installs(self) -> tuple[PipInstall, ...]:
        return tuple(step for step in self.steps if isinstance(step, PipInstall))

    @property
    def copies(self) -> tuple[Copy, ...]:
        return tuple(step for step in self.steps if isinstance(step, Copy))


def split_instructions(text: str) -> tuple[list[Instruction], str]:
    """Instructions with continuations joined and comments dropped, and the escape character.

    Parser directives (`# syntax=…`, `# escape=…`) are only read before anything else; of
    them, only `escape` changes how the file reads.
    """
    lines = text.splitlines()
    escape = "\\"
    index = 0
    while index < len(lines):
        directive = _DIRECTIVE.match(lines[index])
        if directive is None:
            break
        if directive.group(1).lower() == "escape" and directive.group(2) in ("\\", "`"):
            escape = directive.group(2)
        index += 1

    continuation = re.compile(re.escape(escape) + r"[ \t]*$")
    instructions: list[Instruction] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(lines[index:], start=index + 1):
        stripped = raw.strip()
        if pending and (not stripped or stripped.startswith("#")):
            continue  # Docker drops comment and blank lines inside a continuation
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if not pending:
            start = number
        joined = continuation.search(raw)
        if joined is not None:
            pending.append(raw[: joined.start()])
            continue
        pending.append(raw)
        _add_instruction(instructions, "".join(pending), start)
        pending = []
    if pending:
        _add_instruction(instructions, "".join(pending), start)
    return instructions, escape


def _add_instruction(instructions: list[Instruction], text: str, line: int) -> None:
    # A lone continuation character joins nothing to nothing: there is no instruction.
    if text.strip():
        instructions.append(_instruction(text, line))


def _instruction(text: str, line: int) -> Instruction:
    match = _INSTRUCTION.match(text)
    if match is None:
        return Instruction(keyword=text.strip().split(None, 1)[0].upper(), text="", line=line)
    return Instruction(
        keyword=match.group(1).upper(), text=(match.group(2) or "").strip(), line=line
    )


def parse(text: str, path: str = "Dockerfile") -> Dockerfile:
    """Read the supported subset; raise DockerfileError(path, line, what and how to proceed),
    or UnknownInstruction for a line no builder would take."""
    instructions, escape = split_instructions(text)
    _check_instructions(instructions, path)
    return _Interpreter(path, escape).run(instructions)


def _check_instructions(instructions: list[Instruction], path: str) -> None:
    """Refuse the first instruction that is no Dockerfile instruction at all, with the one it
    most likely meant. The lines of a heredoc (`RUN <<EOF` ... `EOF`) are its body, not
    instructions."""
    terminators: list[str] = []  # of the heredocs still open, in order
    for instruction in instructions:
        word = instruction.keyword
        if terminators:
            if word == terminators[0].upper() and not instruction.text:
                terminators.pop(0)
            continue
        if word in INSTRUCTIONS:
            terminators = _HEREDOC.findall(instruction.text)
            continue
        meant = closest(word, INSTRUCTIONS)
        shown = word if len(word) <= 40 else word[:37] + "..."
        what = f"{shown} is not a Dockerfile instruction"
        raise UnknownInstruction(
            path,
            instruction.line,
            f"{what}; did you mean {meant}?"
            if meant
            else f"{what} (they are {', '.join(INSTRUCTIONS)}); correct or remove the line",
        )


class _Interpreter:
    """Walks the instructions once, keeping the state a real build would: ARG, ENV, WORKDIR."""

    def __init__(self, path: str, escape: str) -> None:
        self.path = path
        self.escape = escape
        # Build state
        self.base_image = ""
        self.base_line = 0
        self.args: dict[str, str] = {}
        self.args_before_from: dict[str, str] = {}  # usable after FROM only when redeclared
        self.env: dict[str, str] = {}
        self.workdir = "/"
        self.steps: list[Step] = []
        self.labels: dict[str, str] = {}
        self.exposed_ports: list[str] = []
        self.entrypoint: ContainerCommand | None = None
        self.cmd: ContainerCommand | None = None
        self.handlers: dict[str, Callable[[Instruction], None]] = {
            "FROM": self._from,
            "ARG": self._arg,
            "ENV": self._env,
            "WORKDIR": self._workdir,
            "COPY": self._copy,
            "ADD": self._copy,
            "RUN": self._run,
            "CMD": self._command,
            "ENTRYPOINT": self._command,
            "EXPOSE": self._expose,
            "LABEL": self._label,
            "MAINTAINER": lambda instruction: None,  # deprecated metadata, nothing to do
        }

    def run(self, instructions: list[Instruction]) -> Dockerfile:
        for instruction in instructions:
            if not self.base_image and instruction.keyword not in ("FROM", "ARG"):
                self._fail(
                    instruction,
                    f"{instruction.keyword} before FROM: a Dockerfile "
                    "starts with FROM (only ARG may come before it)",
                )
            handler = self.handlers.get(instruction.keyword)
            if handler is None:
                self._refuse(instruction)
            else:
                handler(instruction)
        if not self.base_image:
            raise DockerfileError(
                self.path,
                1,
                "no FROM instruction: start the Dockerfile with FROM python:3.12-slim (or similar)",
            )
        return Dockerfile(
            path=self.path,
            base_image=self.base_image,
            base_line=self.base_line,
            steps=tuple(self.steps),
            workdir=self.workdir,
            env=dict(self.env),
            args=dict(self.args),
            labels=dict(self.labels),
            exposed_ports=tuple(self.exposed_ports),
            entrypoint=self.entrypoint,
            cmd=self.cmd,
        )

    # Errors

    def _fail(self, instruction: Instruction, message: str) -> NoReturn:
        raise DockerfileError(self.path, instruction.line, message)

    def _refuse(self, instruction: Instruction, reason: str = "") -> NoReturn:
        shown = f"{instruction.keyword} {instruction.text}".strip()
        if len(shown) > 80:
            shown = shown[:77] + "..."
        reason = reason or _REFUSED_HINTS.get(instruction.keyword, "")
        because = f" ({reason})" if reason else ""
        self._fail(
            instruction,
            f"`{shown}` is outside the Dockerfile subset homerun runs "
            f"without a container engine{because}; {HOW_TO_PROCEED}",
        )

    # Word helpers

    def _scope(self) -> dict[str, str]:
        # ENV wins over ARG of the same name, as in Docker.
        return {"PATH": IMAGE_PATH, **self.args, **self.env}

    def _words(self, instruction: Instruction, text: str | None = None) -> list[str]:
        try:
            words = split_words(
                instruction.text if text is None else text, self._scope(), escape=self.escape
            )
        except WordError as error:
            self._fail(instruction, f"{instruction.keyword}: {error}")
        return [word.text for word in words]

    def _expand(self, instruction: Instruction, text: str) -> str:
        try:
            return expand(text, self._scope(), escape=self.escape)
        except WordError as error:
            self._fail(instruction, f"{instruction.keyword}: {error}")

    def _flags(self, instruction: Instruction, raw_words: list[str]) -> tuple[dict[str, str], int]:
        """Leading --name=value flags and the index of the first word after them."""
        flags: dict[str, str] = {}
        index = 0
        while index < len(raw_words) and raw_words[index].startswith("--"):
            name, _, value = raw_words[index][2:].partition("=")
            flags[name] = value
            index += 1
        return flags, index

    # Instructions

    def _from(self, instruction: Instruction) -> None:
        if self.base_image:
            self._refuse(
                instruction,
                "a second FROM starts another build stage; multi-stage builds need an engine",
            )
        words = self._words(instruction)
        _, index = self._flags(instruction, words)  # --platform changes nothing here
        words = words[index:]
        if len(words) not in (1, 3) or (len(words) == 3 and words[1].lower() != "as"):
            self._fail(instruction, "FROM takes an image and an optional `AS name`")
        image = words[0]
        if not _PYTHON_IMAGE.match(image):
            self._refuse(
                instruction,
                f"the base image {image} is not a python image, so what "
                "it provides cannot be reproduced on the host",
            )
        self.base_image = image
        self.base_line = instruction.line
        self.args_before_from, self.args = self.args, {}

    def _arg(self, instruction: Instruction) -> None:
        for word in self._raw_words(instruction):
            name, has_default, default = word.partition("=")
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                self._fail(instruction, f"ARG: {name!r} is not a valid name")
            if has_default:
                self.args[name] = self._expand(instruction, default)
            else:
                # Without --build-arg (homerun has none) an ARG without a default is empty,
                # unless it redeclares one from before FROM.
                self.args.setdefault(name, self.args_before_from.get(name, ""))

    def _env(self, instruction: Instruction) -> None:
        for name, value in self._pairs(instruction):
            self.env[name] = value

    def _label(self, instruction: Instruction) -> None:
        for name, value in self._pairs(instruction):
            self.labels[name] = value

    def _pairs(self, instruction: Instruction) -> list[tuple[str, str]]:
        """`K=V K2="v 2"` pairs, or the legacy `K value with spaces` form."""
        raw = self._raw_words(instruction)
        if not raw:
            self._fail(instruction, f"{instruction.keyword} needs at least one NAME=value")
        if "=" not in raw[0]:
            name = raw[0]
            rest = instruction.text[len(name) :].strip()
            if not rest:
                self._fail(
                    instruction,
                    f"{instruction.keyword} {name}: missing value (write "
                    f"{instruction.keyword} {name}=value)",
                )
            return [(self._expand(instruction, name), self._expand(instruction, rest))]
        pairs = []
        for word in raw:
            name, has_value, value = word.partition("=")
            if not has_value or not name:
                self._fail(instruction, f"{instruction.keyword}: {word!r} is not NAME=value")
            pairs.append((self._expand(instruction, name), self._expand(instruction, value)))
            # Later pairs see earlier ones only on the next instruction, as in Docker.
        return pairs

    def _raw_words(self, instruction: Instruction) -> list[str]:
        """Words split on unquoted whitespace with quotes and $ left in place for later."""
        try:
            return split_unexpanded(instruction.text, escape=self.escape)
        except WordError as error:
            self._fail(instruction, f"{instruction.keyword}: {error}")

    def _workdir(self, instruction: Instruction) -> None:
        path = self._expand(instruction, instruction.text)
        if not path:
            self._fail(instruction, "WORKDIR needs a path")
        self.workdir = posixpath.normpath(posixpath.join(self.workdir, path))
        if self.workdir.startswith("//"):
            self.workdir = "/" + self.workdir.lstrip("/")
        self.steps.append(Workdir(path=self.workdir, line=instruction.line))

    def _copy(self, instruction: Instruction) -> None:
        keyword = instruction.keyword
        if "<<" in instruction.text:
            self._refuse(instruction, "heredocs need an engine")
        raw = self._raw_words(instruction)
        flags, index = self._flags(instruction, raw)
        if "from" in flags:
            self._refuse(instruction, "COPY --from copies out of another image or stage")
        unknown = sorted(set(flags) - {"chown", "chmod", "link"})
        if unknown:
            self._refuse(instruction, f"the flag --{unknown[0]} is not supported")
        rest = instruction.text
        for flag_word in raw[:index]:
            rest = rest[rest.index(flag_word) + len(flag_word) :]
        rest = rest.strip()
        if rest.startswith("["):
            paths = _exec_form(rest)
            if paths is None:
                paths = self._words(instruction, rest)
            else:
                paths = [self._expand(instruction, path) for path in paths]
        else:
            paths = self._words(instruction, rest)
        if len(paths) < 2:
            self._fail(instruction, f"{keyword} needs at least one source and a destination")
        *sources, destination = paths
        for source in sources:
            if "://" in source or source.startswith("git@"):
                self._refuse(
                    instruction,
                    f"{keyword} of a URL ({source}) downloads at build "
                    "time; download it into the source folder and COPY it",
                )
            if keyword == "ADD" and source.lower().endswith(_ARCHIVE_SUFFIXES):
                self._refuse(
                    instruction,
                    f"ADD of an archive ({source}) unpacks it; unpack it "
                    "in the source folder and COPY the result",
                )
        directory = destination.endswith("/") or destination in (".", "..") or len(sources) > 1
        absolute = posixpath.normpath(posixpath.join(self.workdir, destination))
        if absolute.startswith("//"):
            absolute = "/" + absolute.lstrip("/")
        if directory and not absolute.endswith("/"):
            absolute += "/"
        self.steps.append(
            Copy(
                keyword=keyword, sources=tuple(sources), destination=absolute, line=instruction.line
            )
        )

    def _run(self, instruction: Instruction) -> None:
        if "<<" in instruction.text:
            self._refuse(instruction, "heredocs need an engine")
        exec_form = _exec_form(instruction.text)
        words: list[Word]
        if exec_form is not None:
            words = [Word(text) for text in exec_form]
        else:
            try:
                words = split_words(
                    instruction.text, self._scope(), escape=self.escape, operators=True
                )
            except WordError as error:
                self._refuse(instruction, str(error))
        commands: list[list[str]] = [[]]
        for word in words:
            if word.operator and word.text in ("&&", ";"):
                commands.append([])
            elif word.operator:
                self._refuse(
                    instruction,
                    f"the shell operator {word.text} is not supported; "
                    "only pip installs joined with && run",
                )
            else:
                commands[-1].append(word.text)
        for command in (command for command in commands if command):
            arguments = _pip_install_arguments(command)
            if arguments is None:
                self._refuse(instruction, "only `pip install …` runs without an engine")
            refused = [
                arg
                for arg in arguments
                if arg.split("=", 1)[0] in _REFUSED_PIP_OPTIONS
                or (arg.startswith("-t") and not arg.startswith("--"))
            ]
            if refused or "--user" in arguments:
                option = refused[0] if refused else "--user"
                self._refuse(
                    instruction,
                    f"pip install {option} installs outside the virtualenv homerun builds",
                )
            self.steps.append(
                PipInstall(arguments=tuple(arguments), workdir=self.workdir, line=instruction.line)
            )

    def _command(self, instruction: Instruction) -> None:
        exec_form = _exec_form(instruction.text)
        if exec_form is not None:
            command = ContainerCommand(
                instruction.keyword, tuple(exec_form), False, instruction.line
            )
        else:
            if not instruction.text:
                self._fail(instruction, f"{instruction.keyword} needs a command")
            command = ContainerCommand(
                instruction.keyword, ("/bin/sh", "-c", instruction.text), True, instruction.line
            )
        if instruction.keyword == "CMD":
            self.cmd = command
        else:
            self.entrypoint = command

    def _expose(self, instruction: Instruction) -> None:
        for word in self._words(instruction):
            if not re.fullmatch(r"\d+(-\d+)?(/(tcp|udp|sctp))?", word, re.I):
                self._fail(instruction, f"EXPOSE: {word!r} is not a port (write 8080 or 8080/tcp)")
            self.exposed_ports.append(word)


def _exec_form(text: str) -> list[str] | None:
    """The exec form; anything that is not a JSON list of strings is shell form (Docker)."""
    if not text.startswith("["):
        return None
    try:
        value = json.loads(text)
    except ValueError:
        return None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        return None
    return value


def _pip_install_arguments(command: list[str]) -> list[str] | None:
    """The arguments after `install` when the command is a pip install, else None.

    Accepts pip, pip3, pip3.12, python -m pip, python3 -m pip, /usr/local/bin/python3.12 -m pip,
    with VAR=value prefixes and pip's general options before `install`.
    """
    words = list(command)
    while words and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", words[0]):
        words.pop(0)
    if not words:
        return None
    program = posixpath.basename(words[0])
    if re.fullmatch(r"pip(\d+(\.\d+)?)?", program):
        rest = words[1:]
    elif re.fullmatch(r"python(\d+(\.\d+)?)?", program):
        index = 1
        while index < len(words) and words[index] in ("-u", "-I", "-E", "-s", "-B"):
            index += 1
        if words[index : index + 2] != ["-m", "pip"]:
            return None
        rest = words[index + 2 :]
    else:
        return None
    before: list[str] = []
    index = 0
    while index < len(rest) and rest[index].startswith("-"):
        before.append(rest[index])
        if rest[index] in GLOBAL_OPTIONS_WITH_VALUE and index + 1 < len(rest):
            before.append(rest[index + 1])
            index += 1
        index += 1
    if index >= len(rest) or rest[index] != "install":
        return None
    return before + rest[index + 1 :]
