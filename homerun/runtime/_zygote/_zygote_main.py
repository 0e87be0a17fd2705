"""The zygotes: a revision's imports the app and its server once, then forks instances; a
base, shared by the revisions of one virtualenv and server, imports the server and the web
framework once, then forks revisions' zygotes, which import only the app.

The daemon runs this file with the revision's own interpreter, working directory and
environment (less PORT: every instance has its own), through the start command's shell if it
has one (so that what the shell and the interpreter add to the environment, PWD or LC_CTYPE,
is seen here and passed on), as

    PYTHON _zygote_main.py CONTROL_FD

A base is run the same way, in `/`, with only the variables the interpreter reads as it starts
(PYTHON*, the locale, PATH, HOME...): it holds no revision's folder, variables or secrets.

Only the standard library is used here: homerun is not installed in the revision's
virtualenv, and this file must not shadow the app's modules (sys.path[0] is set to what the
server's own script would have). Its two helpers sit beside it in this folder and are
imported while sys.path[0] is still the folder: _homerun_zygote_imports.py (importing the
server and the app, and whether the result can be forked) and _homerun_zygote_forks.py
(serving fork requests, and what a forked child becomes). Their names are no app's.

Messages on CONTROL_FD, a SOCK_SEQPACKET socket, are one JSON object each:

    daemon -> zygote  {"boot": {...}, "env": {...}}, first: the server ("gunicorn" | "uvicorn"),
                      how the start command runs it (a console script, or `python -m MODULE`),
                      its arguments, and the environment the zygote was given; `"base": true`
                      in the boot makes a base
    zygote -> daemon  {"ready": PID}  or  {"unfit": REASON}, once, after the imports; a base's
                      ready says which variables its imports read ("reads": NAME -> the value
                      it was given, or null) and the modules it imported for the framework
    daemon -> zygote  {"fork": ID, "argv": [...], "env": {...}, "cwd": DIR,
                      "cgroup_fds": N} with 2 + N descriptors (SCM_RIGHTS): the
                      instance's stdout and stderr, then the cgroup.procs files of its control
                      groups (runtime/limited.py), opened by the daemon, to each of which the
                      child first writes its pid
    daemon -> base    {"fork": ID, "zygote": {"boot": {...}, "env": {...}, "cwd": DIR},
                      "cgroup_fds": N} with 3 + N: the new zygote's control socket, its
                      stdout and its stderr, then the cgroup.procs files of its own control
                      groups, to each of which it first writes its pid (a zygote the daemon
                      starts joins its groups before exec)
    zygote -> daemon  {"forked": ID, "pid": PID}  or  {"failed": ID, "error": TEXT}
    zygote -> daemon  {"exited": PID, "status": N}  (N < 0: killed by signal -N)

A zygote forked by a base then talks to the daemon on its own socket, as one the daemon started
does; it may answer {"standalone": REASON} instead of ready when the app's folder has a module
of the name of one the base imported (the app would get the base's, not its own).

End of file on the socket (the daemon closed it, or died) or a SIGTERM (the daemon's or the
base's death, by PR_SET_PDEATHSIG) makes a zygote SIGKILL its instances' process groups, and a
base SIGTERM its zygotes, reap them and exit.
"""

from __future__ import annotations

import gc
import importlib.util
import json
import os
import signal
import socket
import sys
import time
from typing import Any

from _homerun_zygote_forks import (
    BASE_NAME,
    MAX_MESSAGE,
    ZYGOTE_NAME,
    Job,
    run_instance,
    send,
    serve,
    set_name,
    set_parent_death_signal,
)
from _homerun_zygote_imports import (
    EnvReads,
    Shadowed,
    Unfit,
    check_fork_safety,
    import_everything,
    import_server,
    open_descriptors,
    warm,
)

# The web frameworks a base imports when the virtualenv has them, so that the zygotes forked
# from it share their pages instead of each importing its own copy (Flask and what it pulls in
# are some 10 MB of a zygote's 15, FastAPI and pydantic more).
FRAMEWORKS = ("flask", "fastapi")
# Variables a base does not compare with a revision's: PORT is each instance's own (gunicorn's
# default bind is computed again), PWD is the folder (gunicorn's default chdir is too).
_PER_INSTANCE = ("PORT", "PWD")


def main(argv: list[str]) -> None:
    started = time.monotonic()
    # The daemon's death (even by SIGKILL) sends us SIGTERM; until the serve loop handles it,
    # its default action ends the zygote, which has no instances yet.
    set_parent_death_signal(signal.SIGTERM)
    control = socket.socket(fileno=int(argv[1]))
    first = control.recv(MAX_MESSAGE)
    if not first:
        return  # the daemon is gone already
    boot: dict[str, Any] = json.loads(first)["boot"]
    if boot["daemon_pid"] is not None and os.getppid() != boot["daemon_pid"]:
        return  # the daemon died before the parent-death signal was set (None: sandboxed)
    given: dict[str, str] = json.loads(first)["env"]
    sys.path[0] = boot["path0"]
    with open("/proc/self/comm", "rb") as comm:
        boot["comm"] = comm.read().strip()  # what exec gave it: "python3.11", say
    set_name(BASE_NAME if boot.get("base") else ZYGOTE_NAME)
    warm("pkgutil")  # runpy imports it to start each instance's server
    if boot.get("base"):
        forked = _base(control, boot, given)  # returns only in a zygote it forked
        if forked is None:
            return
        control, boot, given = forked
        started = time.monotonic()
    job = _zygote(control, boot, given, started)  # returns only in a forked instance
    if job is not None:
        run_instance(job)


def _zygote(
    control: socket.socket, boot: dict[str, Any], given: dict[str, str], started: float
) -> Job | None:
    """A revision's zygote: import the app, say ready (or why not), fork instances."""
    descriptors_before = open_descriptors()
    try:
        app = import_everything(boot)
        check_fork_safety(descriptors_before, control.fileno())
    except Shadowed as shadowed:
        send(control, {"standalone": str(shadowed)})
        return None
    except Unfit as unfit:
        send(control, {"unfit": str(unfit)})
        return None
    # What the shell and the interpreter's startup (dash: PWD; Python's C-locale coercion:
    # LC_CTYPE) and then the imports (Django's wsgi.py: DJANGO_SETTINGS_MODULE) changed in the
    # environment the daemon gave: a spawned instance would have made the same changes.
    boot["env_changes"] = {
        name: value for name, value in os.environ.items() if given.get(name) != value
    }
    boot["env_removed"] = [name for name in given if name not in os.environ]
    # Objects alive now are shared with every instance: keep the collector from walking (and
    # so copying) their pages in each of them.
    gc.collect()
    gc.freeze()
    import_ms = round((time.monotonic() - started) * 1000)
    send(control, {"ready": os.getpid(), "app": app, "import_ms": import_ms})
    request = serve(control, boot)  # returns only in a forked instance
    return Job(request["argv"], boot)


def _base(
    control: socket.socket, boot: dict[str, Any], given: dict[str, str]
) -> tuple[socket.socket, dict[str, Any], dict[str, str]] | None:
    """A base: import the server and the framework, say ready (with what the imports read),
    fork revisions' zygotes. In a forked zygote: its control socket, boot and environment."""
    descriptors_before = open_descriptors()
    # What the shell and the interpreter added at startup: a zygote forked from here gets the
    # same (with its own folder as PWD), as it would have started the same way.
    boot["startup_env"] = {
        name: value for name, value in os.environ.items() if given.get(name) != value
    }
    reads = EnvReads()
    try:
        with reads:
            import_server(boot["server"])
            before = set(sys.modules)
            for framework in FRAMEWORKS:
                if importlib.util.find_spec(framework) is not None:
                    warm(framework)
        check_fork_safety(descriptors_before, control.fileno())
    except Unfit as unfit:
        send(control, {"unfit": str(unfit)})
        return None
    # A zygote forked from here must not have a module of these names of its own in its folder.
    boot["shadowable"] = sorted(
        {name.partition(".")[0] for name in set(sys.modules) - before} - {"__main__"}
    )
    boot["base_path"] = list(sys.path)
    # The values the imports saw of the variables they read (or that the shell set): a
    # revision whose own differ would import differently, and gets a zygote of its own.
    read = [*reads.places, *boot["startup_env"]]
    gc.collect()
    gc.freeze()
    send(
        control,
        {
            "ready": os.getpid(),
            "reads": {name: given.get(name) for name in read if name not in _PER_INSTANCE},
            "modules": boot["shadowable"],
            "frameworks": [name for name in FRAMEWORKS if name in sys.modules],
        },
    )
    request = serve(control, boot)  # returns only in a forked zygote
    zygote_boot = dict(
        request["zygote"]["boot"],
        comm=boot["comm"],
        shadowable=boot["shadowable"],
        base_path=boot["base_path"],
    )
    return socket.socket(fileno=request["control"]), zygote_boot, request["zygote"]["env"]


if __name__ == "__main__":
    main(sys.argv)
