"""Why an app did not start, in few lines: StartFailed, with its traceback cut to its own frames
and a hint for the failures newcomers meet most (a missing module, a taken port, a permission)
that knows what it can of the revision's code and build (BuiltApp); and what to do when its
command cannot be run at all."""

from __future__ import annotations

import difflib
import os
import posixpath
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from homerun.errors import HomerunError
from homerun.model.artifact import ArtifactRecord
from homerun.shellwords import WordError, split_words

# A frame of a traceback: `  File "PATH", line N, in NAME`, then (usually) its source line.
_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line \d+')
# Frames of installed packages and of Python itself are not the app's.
_LIBRARY = re.compile(r"/(site|dist)-packages/|/lib/python\d|^<frozen |^<string>$")
# The line that ends a traceback: `ModuleNotFoundError: No module named 'x'`,
# `django.core.exceptions.ImproperlyConfigured: ...`, a bare `KeyboardInterrupt`.
_EXCEPTION = re.compile(r"^(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?::|$)")
# The app gunicorn and uvicorn serve, `MODULE:NAME` (or a factory, `MODULE:create_app()`);
# not a bind address such as `0.0.0.0:8080` or `localhost:8080`.
_APP_REFERENCE = re.compile(r"^(?P<module>[A-Za-z_][\w.]*):[A-Za-z_]\w*(?:\(.*\))?$")
_SERVERS = ("gunicorn", "uvicorn")


@dataclass(frozen=True)
class BuiltApp:
    """What a hint may know of the revision whose instance failed: its code and its build."""

    # The modules its own code offers: the .py files and packages of the folder it starts in
    # (which gunicorn, uvicorn and `python main.py` put first on sys.path), by module name,
    # with how the source shows them: {"main": "main.py", "helper": "helper.py",
    # "shop": "shop/"}. Empty: not known.
    source_modules: Mapping[str, str] = field(default_factory=dict)
    app_module: str | None = None  # MODULE of the start command's gunicorn/uvicorn MODULE:app
    command_origin: str = ""  # where the start command comes from: "Dockerfile CMD (line 9)"
    # Its packages are what a Dockerfile's RUN pip install names (docs/guide.md, Deploy), or
    # what an image holds: requirements.txt is not where they go.
    from_dockerfile: bool = False


NOTHING_KNOWN = BuiltApp()


def built_app(folder: Path, artifact: ArtifactRecord | None) -> BuiltApp:
    """What hint() may know of a revision whose instances start in `folder`. Blocking: lists
    that folder (once, when a start failed)."""
    if artifact is None:
        return BuiltApp(source_modules=_modules_in(folder))
    return BuiltApp(
        # An image's code is in the image, not in the folder (which holds its manifest).
        source_modules={} if artifact.engine_image else _modules_in(folder),
        app_module=_app_module(artifact.argv),
        command_origin=artifact.entrypoint_origin,
        # build.source.lay_out puts a Dockerfile's files under rootfs/ (control.environment
        # reads it the same way); a container engine builds from a Dockerfile or an image.
        from_dockerfile=artifact.engine_image is not None
        or PurePosixPath(artifact.cwd).parts[:1] == ("rootfs",),
    )


def _modules_in(folder: Path) -> dict[str, str]:
    """{"main": "main.py", "shop": "shop/"}: what `import NAME` finds in `folder`."""
    modules: dict[str, str] = {}
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                stem, dot_py = entry.name[:-3], entry.name.endswith(".py")
                if dot_py and stem.isidentifier() and entry.is_file():
                    modules[stem] = entry.name
                elif entry.name.isidentifier() and entry.is_dir() and _has_python(entry.path):
                    modules[entry.name] = entry.name + "/"
    except OSError:  # gone with its revision, or unreadable: a hint without it
        return {}
    return modules


def _has_python(folder: str) -> bool:
    """A package (regular or namespace), not a folder of templates or static files."""
    try:
        with os.scandir(folder) as entries:
            return any(entry.name.endswith(".py") for entry in entries)
    except OSError:
        return False


def _app_module(argv: Sequence[str]) -> str | None:
    """The module a gunicorn or uvicorn command serves: main for `gunicorn --bind :$PORT
    main:app`, in a shell script too."""
    words = list(argv)
    if len(words) >= 3 and posixpath.basename(words[0]) in ("sh", "bash", "dash"):
        if words[1] == "-c":
            try:
                words = [word.text for word in split_words(words[2], {}, substitute=False)]
            except WordError:
                words = words[2].split()
    served = False
    for word in words:
        if posixpath.basename(word) in _SERVERS:
            served = True  # `gunicorn`, `/venv/bin/uvicorn`, `python -m uvicorn`
        elif served and not word.startswith("-") and (reference := _APP_REFERENCE.match(word)):
            return reference["module"]
    return None


Advice = Callable[[re.Match[str], BuiltApp], str]


def _says(text: str) -> Advice:
    """Advice that names what the line names ("{program} may not be run...")."""
    return lambda found, _built: text.format(**found.groupdict())


def _missing_module(found: re.Match[str], built: BuiltApp) -> str:
    return _module_advice(found["module"], built, named_by_command=False)


def _command_module_missing(found: re.Match[str], built: BuiltApp) -> str:
    return _module_advice(found["module"], built, named_by_command=True)


def _module_advice(module: str, built: BuiltApp, *, named_by_command: bool) -> str:
    """Why `module` (dotted, as Python names it) is not there: the start command names a
    module the source lacks, the source's own module is misspelt, or a package is missing."""
    top, _, inner = module.partition(".")
    modules = built.source_modules
    # Python names the first part it could not find: 'pkg.mian' means pkg is there.
    similar = None if inner else _similar(top, modules)
    if not inner and top in modules:  # there, yet not where Python looked
        return (
            f"the source has {modules[top]}, yet Python did not find {top}: it looks in the "
            "folder of the script it runs (`python sub/app.py`: sub/), gunicorn and uvicorn in "
            "the folder they start in"
        )
    app = built.app_module
    if named_by_command or (app is not None and (app == module or app.startswith(module + "."))):
        origin = f" ({built.command_origin})" if built.command_origin else ""
        advice = f"the start command{origin} names the module {module}, which the source "
        if similar is not None:
            return (
                advice
                + f"does not have; the source has {modules[similar]}: did you mean {similar}?"
            )
        return advice + (
            "does not have: name the app's file without .py (main:app serves app of main.py)"
        )
    if inner and top in modules:
        return (
            f"no module named '{module}': {top} is the source's own ({modules[top]}), and it "
            f"has no {inner}"
        )
    if similar is not None:
        return (
            f"no module named '{module}' in the source or its packages; the source has "
            f"{modules[similar]}: did you mean {similar}?"
        )
    where = (
        "a RUN pip install line of the Dockerfile, where a build from a Dockerfile gets its "
        "packages"
        if built.from_dockerfile
        else "requirements.txt"
    )
    return (
        f"the app imports {top}, which is not installed: add its package to {where} (the name on "
        "PyPI may differ, e.g. PIL is pillow) and deploy again"
    )


def _similar(name: str, modules: Mapping[str, str]) -> str | None:
    """The source's module that `name` likely misspells: helper for helpers, main for mian."""
    others = [module for module in modules if module != name]
    # 0.75 takes a swap in four letters (mian: main) and a letter more or less in five.
    found = difflib.get_close_matches(name, others, n=1, cutoff=0.75)
    return found[0] if found else None


@dataclass(frozen=True)
class _Hint:
    pattern: re.Pattern[str]
    advice: Advice
    # Matches lines about anything ("Permission denied"): trusted in the exception that ended
    # the boot, and where there is no traceback, never in the lines that follow one.
    generic: bool = False


def _more_memory(found: re.Match[str], _built: BuiltApp) -> str:
    limit = int(found["limit"])
    twice = f"{limit // 512}Gi" if limit % 512 == 0 else f"{limit * 2}Mi"
    return (
        f"the app used more memory than its limit of {limit} MiB (what it loads at import "
        f"counts): deploy with a larger --memory (e.g. --memory {twice}) or make it use less"
    )


_NOT_FOUND = _says(
    "{program} was not found: install it (a Python program: add its package to "
    "requirements.txt; another one: install it in the Dockerfile) or fix the command "
    "(--command, the Procfile's web line or the Dockerfile's CMD)"
)

_HINTS: tuple[_Hint, ...] = (
    # A program the command names that is not there, in the words of what ran it: a shell
    # (dash's `exec: prog: not found`, bash's `prog: command not found`) or the sandbox's
    # setpriv.
    _Hint(re.compile(r"(?:exec: )?(?P<program>[^\s:]+): (?:command )?not found$"), _NOT_FOUND),
    _Hint(re.compile(r"failed to execute (?P<program>\S+): No such file or directory"), _NOT_FOUND),
    _Hint(
        re.compile(r"ModuleNotFoundError: No module named '(?P<module>[\w.]+)'"), _missing_module
    ),
    # uvicorn's words when the module of its MODULE:app is not there (no traceback).
    _Hint(
        re.compile(r"Error loading ASGI app\. Could not import module \"(?P<module>[\w.]+)\""),
        _command_module_missing,
    ),
    # Cloud Run's line for an instance (or the zygote importing the app) ended past --memory.
    _Hint(re.compile(r"Memory limit of (?P<limit>\d+) MiB exceeded"), _more_memory),
    _Hint(
        re.compile(r"Address already in use|\[Errno 98\]"),
        _says(
            "the address is taken: the app must listen on the port in the PORT environment "
            "variable, which homerun keeps free for it, not on a fixed one"
        ),
    ),
    # A shell's `exec prog` or `prog` that may not be run (sh, dash and bash word it so).
    _Hint(
        re.compile(r"(?:exec: )?(?P<program>[^\s:]+): (?:Permission denied|permission denied)$"),
        _says(
            "{program} may not be run: make it executable in the source (chmod +x, kept by the "
            "build) or run it through its interpreter"
        ),
    ),
    _Hint(
        re.compile(r"Permission denied|\[Errno 13\]"),
        _says(
            "permission denied: ports below 1024 need privileges (listen on $PORT), and files "
            "the app writes belong under /tmp"
        ),
        generic=True,
    ),
)


def trimmed(lines: Sequence[str]) -> list[str]:
    """`lines` with each run of library frames of a traceback folded into one line."""
    result: list[str] = []
    folded = 0
    index = 0
    while index < len(lines):
        line = lines[index]
        frame = _FRAME.match(line)
        if frame and _LIBRARY.search(frame["path"]):
            folded += 1
            index += 1
            # Its source line, when Python printed one (indented deeper, not another frame).
            if (
                index < len(lines)
                and lines[index].startswith("    ")
                and not _FRAME.match(lines[index])
            ):
                index += 1
            continue
        if folded:
            result.append(f"  ... {folded} frame{'s' if folded > 1 else ''} in libraries ...")
            folded = 0
        result.append(line)
        index += 1
    if folded:
        result.append(f"  ... {folded} frame{'s' if folded > 1 else ''} in libraries ...")
    return result


def hint(lines: Sequence[str], built: BuiltApp = NOTHING_KNOWN) -> str | None:
    """What to do about the failure these log lines show, when it is a common one.

    When they hold a traceback, its last exception ended the boot: the lines after it are
    its consequences (gunicorn's "Worker exiting", "Reason: Worker failed to boot.") or
    another thread's (gunicorn's control socket in a HOME it may not write: "Control server
    error: [Errno 13] Permission denied"), so only a failure of their own wins there (a bind
    that failed after an import logged a handled traceback: uvicorn binds after the import).
    The lines before it led up to it: none of them is the hint's.
    """
    ending = _ending_exception(lines)
    if ending is None:
        return _first_hint(lines, built, generic=True)
    after = _first_hint(lines[ending + 1 :], built, generic=False)
    return after or _first_hint(lines[ending : ending + 1], built, generic=True)


def _first_hint(lines: Sequence[str], built: BuiltApp, *, generic: bool) -> str | None:
    """The advice of the last line a hint matches (`generic`: the hints for any line too)."""
    for line in reversed(lines):
        for known in _HINTS:
            found = known.pattern.search(line) if generic or not known.generic else None
            if found:
                return known.advice(found, built)
    return None


def _ending_exception(lines: Sequence[str]) -> int | None:
    """Where the last traceback's exception is: the first line after its last frame that is
    not indented (source lines and ^^^ markers are). The log keeps the last lines only, so
    the traceback's header is often gone: its frames are what is left to find."""
    frames = [index for index, line in enumerate(lines) if _FRAME.match(line)]
    if not frames:
        return None
    for index in range(frames[-1] + 1, len(lines)):
        if not lines[index][:1].isspace():
            return index if _EXCEPTION.match(lines[index]) else None
    return None


class StartFailed(HomerunError):
    """An instance exited or never listened on $PORT before the startup timeout."""

    def __init__(self, message: str, last_lines: list[str] | None) -> None:
        super().__init__(message)
        self.message = message
        self.last_lines = last_lines or []
        self._ran = last_lines is not None  # None: the app never ran, so printed nothing

    def detail(self, built: BuiltApp = NOTHING_KNOWN) -> str:
        """The message, the app's last log lines (library frames of a traceback folded) and,
        for a common failure, what to do (knowing the revision's code and build: `built`)."""
        if not self.last_lines:
            return self.message + (" (the app printed nothing)" if self._ran else "")
        advice = hint(self.last_lines, built)
        return (
            self.message
            + "\nLast lines of the app's log:\n"
            + "\n".join("  " + line for line in trimmed(self.last_lines))
            + (f"\nHint: {advice}" if advice else "")
        )


def unstartable(argv: list[str], error: OSError) -> str:
    """Why the instance's command could not be run at all, and what to do."""
    program = argv[0] if argv else "(no command)"
    reason = error.strerror or str(error)
    if isinstance(error, FileNotFoundError):
        advice = (
            "install it (add its package to requirements.txt) or fix --command; the command "
            "runs in the revision's folder with the virtualenv's bin first on PATH"
        )
    elif isinstance(error, PermissionError):
        advice = "make it executable (chmod +x) or run it through its interpreter"
    else:
        advice = "check that it is a program for this machine (architecture, interpreter line)"
    return f"the app could not be started: {program}: {reason}; {advice}"
