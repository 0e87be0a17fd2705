"""Kills the daemon's instance process groups once the daemon is gone, however it died.

The daemon starts this once, in a session of its own, and writes `+PGID` / `-PGID` lines to
its stdin as instances start and end. End of input means the daemon exited (a SIGKILL
included: the kernel closes the pipe), so every group still listed is killed. A kill-on-
parent-death signal alone is not enough: it reaches only the instance's first process, and
`/bin/sh -c "uvicorn ..."` forks uvicorn rather than exec'ing it.

Given CONTROLLER=FOLDER arguments (a home's control groups, runtime/limited.py), it also kills
every process left in their groups, instances' and zygotes', detached ones included, and
removes the groups.
"""

import os
import signal
import sys


def main() -> None:
    groups: set[int] = set()
    for line in sys.stdin:
        line = line.strip()
        if line[:1] in ("+", "-") and line[1:].isdigit():
            (groups.add if line[0] == "+" else groups.discard)(int(line[1:]))
    for group in groups:
        try:
            os.killpg(group, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if len(sys.argv) > 1:
        from pathlib import Path

        from homerun.runtime.cgroups import Cgroups

        folders = dict(argument.split("=", 1) for argument in sys.argv[1:])
        cgroups = Cgroups({name: Path(folder) for name, folder in folders.items()})
        cgroups.clean()
        cgroups.remove()


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C on `homerun up` is the daemon's
    main()
