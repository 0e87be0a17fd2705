"""Enter a revision's sandbox whose `/` is a container image's root folder: the last step
before the command, run by the image's own Python (an image need not have the host's
`setpriv` and `env`, nor the libraries they link to).

    PYTHON _homerun_enter.py UID GID SIGNALS -- COMMAND...

As root in the sandbox (bwrap as root makes no user namespace): drop every capability from
the bounding set, set no_new_privs (no setuid program or file capability gives any back), give
SIGNALS (TERM,INT,HUP: ignored by the sandbox's outer process so that a stop reaches the app)
their default handling again, become UID:GID with no supplementary group (which drops the
remaining capabilities), and exec COMMAND. Any step that fails ends here, before the command
runs: nothing runs with more than the revision's own user may do.

The standard library only, and Python 3.6's: it runs on whatever Python the image holds.
"""

import ctypes
import os
import signal
import sys

PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
LAST_CAPABILITY = 63


def fail(message: str) -> None:
    sys.stderr.write("homerun: cannot enter the sandbox: " + message + "\n")
    sys.exit(126)


def main(argv: "list") -> None:
    if len(argv) < 6 or argv[4] != "--":
        fail("usage: _homerun_enter.py UID GID SIGNALS -- COMMAND...")
    uid, gid, signals, command = int(argv[1]), int(argv[2]), argv[3], argv[5:]
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in range(LAST_CAPABILITY + 1):
        # EINVAL past the kernel's last capability: nothing to drop there.
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            if ctypes.get_errno() != 22:
                fail(f"dropping capability {capability}: {os.strerror(ctypes.get_errno())}")
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        fail("no_new_privs: " + os.strerror(ctypes.get_errno()))
    for name in signals.split(","):
        if name:
            signal.signal(getattr(signal, "SIG" + name), signal.SIG_DFL)
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    if os.getuid() != uid or os.geteuid() != uid or os.getgid() != gid:
        fail("the user did not change")
    try:
        os.execvp(command[0], command)
    except OSError as error:
        sys.stderr.write(f"homerun: cannot run {command[0]}: {error.strerror}\n")
        sys.exit(127)


main(sys.argv)
