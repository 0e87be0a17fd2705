"""Why an app did not start, in few lines: StartFailed, with its traceback cut to its own frames
and a hint for the failures newcomers meet most (a missing module, a taken port, a permission);
and what to do when its command cannot be run at all."""

from __future__ import annotations

import re
from collections.abc import Sequence

from homerun.errors import HomerunError

# A frame of a traceback: `  File "PATH", line N, in NAME`, then (usually) its source line.
_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line \d+')
# Frames of installed packages and of Python itself are not the app's.
_LIBRARY = re.compile(r"/(site|dist)-packages/|/lib/python\d|^<frozen |^<string>$")

_NOT_FOUND = (
    "{program} was not found: install it (a Python program: add its package to "
    "requirements.txt; another one: install it in the Dockerfile) or fix the command "
    "(--command, the Procfile's web line or the Dockerfile's CMD)"
)

_HINTS: tuple[tuple[re.Pattern[str], str], ...] = (
    # A program the command names that is not there, in the words of what ran it: a shell
    # (dash's `exec: prog: not found`, bash's `prog: command not found`) or the sandbox's
    # setpriv.
    (
        re.compile(r"(?:exec: )?(?P<program>[^\s:]+): (?:command )?not found$"),
        _NOT_FOUND,
    ),
    (
        re.compile(r"failed to execute (?P<program>\S+): No such file or directory"),
        _NOT_FOUND,
    ),
    (
        re.compile(r"ModuleNotFoundError: No module named '(?P<module>[\w]+)"),
        "the app imports {module}, which is not installed: add its package to "
        "requirements.txt (the name on PyPI may differ, e.g. PIL is pillow) and deploy again",
    ),
    (
        re.compile(r"Address already in use|\[Errno 98\]"),
        "the address is taken: the app must listen on the port in the PORT environment "
        "variable, which homerun keeps free for it, not on a fixed one",
    ),
    (
        # A shell's `exec prog` or `prog` that may not be run (sh, dash and bash word it so).
        re.compile(r"(?:exec: )?(?P<program>[^\s:]+): (?:Permission denied|permission denied)$"),
        "{program} may not be run: make it executable in the source (chmod +x, kept by the "
        "build) or run it through its interpreter",
    ),
    (
        re.compile(r"Permission denied|\[Errno 13\]"),
        "permission denied: ports below 1024 need privileges (listen on $PORT), and files the "
        "app writes belong under /tmp",
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


def hint(lines: Sequence[str]) -> str | None:
    """What to do about the failure these log lines show, when it is a common one."""
    for line in reversed(lines):
        for pattern, advice in _HINTS:
            found = pattern.search(line)
            if found:
                return advice.format(**found.groupdict())
    return None


class StartFailed(HomerunError):
    """An instance exited or never listened on $PORT before the startup timeout."""

    def __init__(self, message: str, last_lines: list[str] | None) -> None:
        super().__init__(message)
        self.message = message
        self.last_lines = last_lines or []
        self._ran = last_lines is not None  # None: the app never ran, so printed nothing

    def detail(self) -> str:
        """The message, the app's last log lines (library frames of a traceback folded) and,
        for a common failure, what to do."""
        if not self.last_lines:
            return self.message + (" (the app printed nothing)" if self._ran else "")
        advice = hint(self.last_lines)
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
