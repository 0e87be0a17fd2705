"""Enter a revision's sandbox whose `/` is a container image's root folder: the last step
before the command, run by the image's own Python as the revision's user.

    PYTHON _homerun_enter.py UID GID SIGNALS -- COMMAND...

bwrap runs as root there (it makes no user namespace), and the host's static busybox has
already made UID:GID, with no supplementary group and so no capability, before anything of the
image ran (runtime/sandbox.py): this program checks that it is so, sets no_new_privs (bwrap
has; no setuid program or file capability gives anything back), gives SIGNALS (TERM,INT,HUP:
ignored by the sandbox's outer process so that a stop reaches the app) their default handling
again, and execs COMMAND. Any check that fails ends here, before the command runs.

The standard library only, and Python 3.6's: it runs on whatever Python the image holds.
"""

import ctypes
import os
import signal
import sys

PR_SET_NO_NEW_PRIVS = 38


def fail(message: str) -> None:
    sys.stderr.write("homerun: cannot enter the sandbox: " + message + "\n")
    sys.exit(126)


def main(argv: "list") -> None:
    if len(argv) < 6 or argv[4] != "--":
        fail("usage: _homerun_enter.py UID GID SIGNALS -- COMMAND...")
    uid, gid, signals, command = int(argv[1]), int(argv[2]), argv[3], argv[5:]
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        fail(f"it runs as {os.getresuid()}:{os.getresgid()}, not as the revision's {uid}:{gid}")
    if os.getgroups() not in ([], [gid]):
        fail(f"it holds supplementary groups {os.getgroups()}")
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail("no_new_privs: " + os.strerror(ctypes.get_errno()))
    for name in signals.split(","):
        if name:
            signal.signal(getattr(signal, "SIG" + name), signal.SIG_DFL)
    try:
        os.execvp(command[0], command)
    except OSError as error:
        sys.stderr.write(f"homerun: cannot run {command[0]}: {error.strerror}\n")
        sys.exit(127)


main(sys.argv)
