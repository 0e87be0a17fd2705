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
server's own script would have).

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
    daemon -> base    {"fork": ID, "zygote": {"boot": {...}, "env": {...}, "cwd": DIR}}
                      with three: the new zygote's control socket, its stdout and its stderr
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

import array
import ctypes
import gc
import importlib
import importlib.util
import json
import os
import runpy
import select
import signal
import socket
import sys
import threading
import time
import traceback
from typing import Any

_PR_SET_PDEATHSIG = 1
_PR_SET_NAME = 15
# The zygote's name in ps -o comm, top and /proc/PID/comm (15 bytes at most); its instances
# take the name a spawned one has (the console script's, say "gunicorn"). Its command line,
# which instances inherit, cannot be changed without privileges.
ZYGOTE_NAME = b"homerun-zygote"
BASE_NAME = b"homerun-base"
_MAX_MESSAGE = 1 << 20  # an instance's environment travels in one message
# The web frameworks a base imports when the virtualenv has them, so that the zygotes forked
# from it share their pages instead of each importing its own copy (Flask and what it pulls in
# are some 10 MB of a zygote's 15, FastAPI and pydantic more).
FRAMEWORKS = ("flask", "fastapi")
# Variables a base does not compare with a revision's: PORT is each instance's own (gunicorn's
# default bind is computed again), PWD is the folder (gunicorn's default chdir is too).
_PER_INSTANCE = ("PORT", "PWD")
# A base waits this long for its zygotes to stop, then SIGKILLs them.
_STOP_SECONDS = 5.0


class _Unfit(Exception):
    """Why this revision's instances cannot be forked from a zygote."""


def main(argv: list[str]) -> None:
    started = time.monotonic()
    # The daemon's death (even by SIGKILL) sends us SIGTERM; until the serve loop handles it,
    # its default action ends the zygote, which has no instances yet.
    _set_parent_death_signal(signal.SIGTERM)
    control = socket.socket(fileno=int(argv[1]))
    first = control.recv(_MAX_MESSAGE)
    if not first:
        return  # the daemon is gone already
    boot: dict[str, Any] = json.loads(first)["boot"]
    if boot["daemon_pid"] is not None and os.getppid() != boot["daemon_pid"]:
        return  # the daemon died before the parent-death signal was set (None: sandboxed)
    given: dict[str, str] = json.loads(first)["env"]
    sys.path[0] = boot["path0"]
    with open("/proc/self/comm", "rb") as comm:
        boot["comm"] = comm.read().strip()  # what exec gave it: "python3.11", say
    _set_name(BASE_NAME if boot.get("base") else ZYGOTE_NAME)
    _warm("pkgutil")  # runpy imports it to start each instance's server
    if boot.get("base"):
        forked = _base(control, boot, given)  # returns only in a zygote it forked
        if forked is None:
            return
        control, boot, given = forked
        started = time.monotonic()
    job = _zygote(control, boot, given, started)  # returns only in a forked instance
    if job is not None:
        _run_instance(job)


def _zygote(
    control: socket.socket, boot: dict[str, Any], given: dict[str, str], started: float
) -> _Job | None:
    """A revision's zygote: import the app, say ready (or why not), fork instances."""
    descriptors_before = _open_descriptors()
    try:
        app = _import_everything(boot)
        _check_fork_safety(descriptors_before, control.fileno())
    except _Shadowed as shadowed:
        _send(control, {"standalone": str(shadowed)})
        return None
    except _Unfit as unfit:
        _send(control, {"unfit": str(unfit)})
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
    _send(control, {"ready": os.getpid(), "app": app, "import_ms": import_ms})
    request = _serve(control, boot)  # returns only in a forked instance
    return _Job(request["argv"], boot)


def _base(
    control: socket.socket, boot: dict[str, Any], given: dict[str, str]
) -> tuple[socket.socket, dict[str, Any], dict[str, str]] | None:
    """A base: import the server and the framework, say ready (with what the imports read),
    fork revisions' zygotes. In a forked zygote: its control socket, boot and environment."""
    descriptors_before = _open_descriptors()
    # What the shell and the interpreter added at startup: a zygote forked from here gets the
    # same (with its own folder as PWD), as it would have started the same way.
    boot["startup_env"] = {
        name: value for name, value in os.environ.items() if given.get(name) != value
    }
    reads = _EnvReads()
    try:
        with reads:
            _import_server(boot["server"])
            before = set(sys.modules)
            for framework in FRAMEWORKS:
                if importlib.util.find_spec(framework) is not None:
                    _warm(framework)
        _check_fork_safety(descriptors_before, control.fileno())
    except _Unfit as unfit:
        _send(control, {"unfit": str(unfit)})
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
    _send(
        control,
        {
            "ready": os.getpid(),
            "reads": {name: given.get(name) for name in read if name not in _PER_INSTANCE},
            "modules": boot["shadowable"],
            "frameworks": [name for name in FRAMEWORKS if name in sys.modules],
        },
    )
    request = _serve(control, boot)  # returns only in a forked zygote
    zygote_boot = dict(
        request["zygote"]["boot"],
        comm=boot["comm"],
        shadowable=boot["shadowable"],
        base_path=boot["base_path"],
    )
    return socket.socket(fileno=request["control"]), zygote_boot, request["zygote"]["env"]


# -- importing ------------------------------------------------------------------------


class _EnvReads:
    """Records which variables are looked up in os.environ while it is in force, and where
    (os.environ.get, `in`, os.getenv and copies all go through __getitem__)."""

    def __init__(self) -> None:
        self.places: dict[str, list[str]] = {}
        self._original: Any = type(os.environ)

    def __enter__(self) -> _EnvReads:
        original, places = self._original, self.places

        class Watched(original):  # type: ignore[misc,valid-type]
            def __getitem__(self, key: str) -> str:
                # Python 3.8's os.get_exec_path tries os.environ[b"PATH"] first (TypeError).
                if isinstance(key, str):
                    seen = places.setdefault(key, [])
                    if len(seen) < 3:
                        seen.append(_caller())
                return str(original.__getitem__(self, key))

        os.environ.__class__ = Watched
        return self

    def __exit__(self, *exc_info: object) -> None:
        os.environ.__class__ = self._original


# Where os.environ lookups go through on their way (_collections_abc calls itself this).
_LOOKUP_MODULES = ("os", "_collections_abc", "collections.abc")


def _caller() -> str:
    """file:line of the code that looked the variable up, past os and collections.abc."""
    frame = sys._getframe(2)
    while frame is not None and frame.f_globals.get("__name__") in _LOOKUP_MODULES:
        frame = frame.f_back  # type: ignore[assignment]
    if frame is None:
        return "?"
    filename = frame.f_code.co_filename
    try:
        filename = os.path.relpath(filename)
    except ValueError:
        pass
    return f"{filename}:{frame.f_lineno}"


def _import_everything(boot: dict[str, Any]) -> str:
    """Import the server, what it loads at startup, and the app; the app's import string."""
    sys.argv = [boot["program"] or boot["module"], *boot["args"]]
    reads = _EnvReads()
    try:
        if boot["server"] == "gunicorn":
            app = _import_gunicorn(reads, boot)
        else:
            app = _import_uvicorn(reads, boot)
    except (_Unfit, KeyboardInterrupt):
        raise
    except BaseException as error:  # SystemExit included: the app or its server gave up
        raise _Unfit(f"importing the app failed ({_one_line(error)})") from None
    port_reads = reads.places.get("PORT")
    if port_reads:
        raise _Unfit(
            f"the app reads $PORT while it is imported ({', '.join(port_reads)}); "
            "each instance has its own port, so each is started on its own"
        )
    return app


def _import_server(server: str) -> None:
    """What a base imports of the server: the modules its zygotes' servers load at startup."""
    try:
        if server == "gunicorn":
            importlib.import_module("gunicorn.app.wsgiapp")
            for name in (*_GUNICORN_WARM, "gunicorn.workers.sync", "gunicorn.workers.gthread"):
                _warm(name)
        else:
            importlib.import_module("uvicorn.main")
            _warm_uvicorn({})
    except (_Unfit, KeyboardInterrupt):
        raise
    except BaseException as error:
        raise _Unfit(f"importing {server} failed ({_one_line(error)})") from None


def _import_gunicorn(reads: _EnvReads, boot: dict[str, Any]) -> str:
    # The revision's gunicorn, not one homerun may have: imported by name, untyped.
    WSGIApplication = importlib.import_module("gunicorn.app.wsgiapp").WSGIApplication

    # Reads the options as the `gunicorn` command does: argv, GUNICORN_CMD_ARGS, the config file.
    try:
        application = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]")
    except SystemExit:
        raise _Unfit("gunicorn rejected its options (the instance's log shows why)") from None
    config = application.cfg
    if config.daemon:
        raise _Unfit("gunicorn --daemon detaches from the instance")
    if config.paste:
        raise _Unfit("gunicorn --paste loads the app through PasteDeploy")
    worker = str(config.worker_class_str)
    if worker not in ("sync", "gthread") and not worker.startswith(_FORKABLE_WORKERS):
        raise _Unfit(
            f"gunicorn's worker class {worker} sets itself up (monkey-patching, its own loop) "
            "when the worker starts, after the app would have been imported"
        )
    config.worker_class  # noqa: B018 - imports the worker's module (gthread with --threads)
    for name in _GUNICORN_WARM:
        _warm(name)
    _check_shadowing(boot)  # with the app's folder on sys.path (gunicorn's --chdir)
    with reads:
        application.wsgi()  # util.import_app: the module and its `app`
    return str(application.app_uri)


# Imported by gunicorn's master and worker on the way to the first response (seen with strace
# on gunicorn 23 to 27): the master's modules, gthread's pool, and the Host header's codec.
_GUNICORN_WARM = (
    "gunicorn.arbiter",
    "gunicorn.glogging",
    "gunicorn.sock",
    "gunicorn.http.wsgi",
    "gunicorn.workers.workertmp",
    "concurrent.futures.thread",
    "encodings.idna",
)

# Workers that build nothing at import that a fork would break: gunicorn's sync and threads
# workers ("sync", "gthread" or their class paths), and uvicorn's worker classes (their event
# loop is made in the worker).
_FORKABLE_WORKERS = (
    "gunicorn.workers.sync.",
    "gunicorn.workers.gthread.",
    "uvicorn.workers.",
    "uvicorn_worker.",
)


def _import_uvicorn(reads: _EnvReads, boot: dict[str, Any]) -> str:
    cli: Any = importlib.import_module("uvicorn.main")

    # Parse the options with uvicorn's own command, stopping where it would start serving.
    options: dict[str, Any] = {}
    real_run = cli.run

    def capture(app: Any, **kwargs: Any) -> None:
        options.update(kwargs, app=app)

    cli.run = capture
    try:
        cli.main.main(args=sys.argv[1:], prog_name="uvicorn", standalone_mode=False)
    except (SystemExit, Exception) as error:  # click's usage errors, --version...
        raise _Unfit(f"uvicorn rejected its options ({_one_line(error)})") from None
    finally:
        cli.run = real_run
    if "app" not in options:
        raise _Unfit("uvicorn did not get to loading an app (the instance's log shows why)")
    if options.get("reload"):
        raise _Unfit("uvicorn --reload runs the app in a watched subprocess of its own")
    workers = options.get("workers") or int(os.environ.get("WEB_CONCURRENCY") or 1)
    if workers > 1:
        raise _Unfit(f"uvicorn --workers {workers} starts every worker as a fresh interpreter")
    if options.get("app_dir") is not None:
        sys.path.insert(0, options["app_dir"])
    if options.get("env_file"):
        # uvicorn loads it before importing the app; the app may read it at import.
        importlib.import_module("dotenv").load_dotenv(dotenv_path=options["env_file"])
    _warm_uvicorn(options)
    importer = importlib.import_module("uvicorn.importer")
    _check_shadowing(boot)  # with the app's folder on sys.path (--app-dir)
    with reads:
        importer.import_from_string(options["app"])  # a factory is called later, in each instance
    return str(options["app"])


def _warm_uvicorn(options: dict[str, Any]) -> None:
    """Import what uvicorn's Config.load and Server import, as far as this version has them."""
    try:
        config = importlib.import_module("uvicorn.config")
    except ImportError:
        return
    _warm("uvicorn.server")
    for table, choice in (
        ("HTTP_PROTOCOLS", options.get("http", "auto")),
        ("WS_PROTOCOLS", options.get("ws", "auto")),
        ("LIFESPAN", options.get("lifespan", "auto")),
        ("LOOP_FACTORIES", options.get("loop", "auto")),
        ("LOOP_SETUPS", options.get("loop", "auto")),
    ):
        target = getattr(config, table, {}).get(choice) if isinstance(choice, str) else None
        if isinstance(target, str):
            _warm(target.split(":")[0])
    # The "auto" loop factory imports one of these when the server starts.
    _warm("uvicorn.loops.asyncio")
    if options.get("loop", "auto") in ("auto", "uvloop"):
        _warm("uvloop")
        _warm("uvicorn.loops.uvloop")
    _warm("encodings.idna")


def _warm(module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception:  # optional pieces (uvloop, websockets): the instance decides
        pass


def _one_line(error: BaseException) -> str:
    if isinstance(error, SystemExit):
        return f"it exited with {error.code!r}"
    text = traceback.format_exception_only(type(error), error)[-1].strip()
    return text if len(text) <= 300 else text[:297] + "..."


class _Shadowed(_Unfit):
    """The app's folder has a module its base imported from the virtualenv: the app would
    import its own when started on its own, the base's when forked from it."""


def _check_shadowing(boot: dict[str, Any]) -> None:
    """_Shadowed if a folder the server put on sys.path (the app's) has a module or package
    named as one the base imported for the framework (a vendored `flask/`, say)."""
    shadowable = set(boot.get("shadowable", ()))
    if not shadowable:
        return  # not forked from a base
    base_path = set(boot["base_path"])
    for entry in sys.path:
        if entry in base_path:
            continue
        folder = entry or os.getcwd()
        try:
            names = os.listdir(folder)
        except OSError:
            continue  # a zip file, or gone
        for name in names:
            module, dot, suffix = name.partition(".")
            if module not in shadowable:
                continue
            # A folder without __init__.py (static files named `html`) is only a namespace
            # portion, which a regular package later on sys.path wins over.
            if suffix.endswith(_MODULE_SUFFIXES) if dot else _is_package(folder, name):
                raise _Shadowed(
                    f"{os.path.join(folder, name)} has the name of a module the shared base "
                    f"imported from the virtualenv ({module})"
                )


_MODULE_SUFFIXES = ("py", "pyc", "so")


def _is_package(folder: str, name: str) -> bool:
    return os.path.exists(os.path.join(folder, name, "__init__.py"))


# -- fork safety ----------------------------------------------------------------------


def _check_fork_safety(descriptors_before: set[int], control_fd: int) -> None:
    """_Unfit for threads, or sockets, pipes, event fds or writable files the imports left."""
    native_threads = len(os.listdir("/proc/self/task"))
    if native_threads > 1 or threading.active_count() > 1:
        names = [thread.name for thread in threading.enumerate()]
        names.remove(threading.main_thread().name)
        which = f" ({', '.join(names[:5])})" if names else ""
        raise _Unfit(
            f"the app starts threads while it is imported: {native_threads - 1} besides the "
            f"main one{which}; a forked instance would not have them"
        )
    held = []
    for fd in sorted(_open_descriptors() - descriptors_before - {control_fd}):
        what = _unsafe_descriptor(fd)
        if what:
            held.append(what)
    if held:
        raise _Unfit(
            f"the app keeps {', '.join(held[:5])} open after it is imported; forked instances "
            "would share it"
        )


def _open_descriptors() -> set[int]:
    listed = [int(name) for name in os.listdir("/proc/self/fd")]
    return {fd for fd in listed if _is_open(fd)}  # less the one os.listdir used, now closed


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


def _unsafe_descriptor(fd: int) -> str | None:
    try:
        target = os.readlink(f"/proc/self/fd/{fd}")
        with open(f"/proc/self/fdinfo/{fd}") as info:
            fields = dict(line.split(":", 1) for line in info if ":" in line)
    except OSError:
        return None  # closed meanwhile (the descriptor os.listdir itself used)
    if target.startswith(("socket:", "pipe:")):
        return f"a {target.split(':')[0]}"
    if target.startswith("anon_inode:"):
        return target  # anon_inode:[eventpoll]: an event loop's selector, for one
    flags = int(fields.get("flags", "0").strip(), 8)
    if flags & os.O_ACCMODE != os.O_RDONLY:
        return f"{target} open for writing"
    return None


# -- serving fork requests ------------------------------------------------------------


class _Job:
    """What a forked instance runs: the server's entry point with the instance's arguments."""

    def __init__(self, argv: list[str], boot: dict[str, Any]) -> None:
        self.argv = argv
        self.program: str | None = boot["program"]
        self.module: str | None = boot["module"]
        self.server: str = boot["server"]


def _serve(control: socket.socket, boot: dict[str, Any]) -> dict[str, Any]:
    """Fork what the daemon asks for until it closes the socket; in a forked child, the
    request it was forked for (its state set up as the request says)."""
    children: set[int] = set()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_read, False)
    os.set_blocking(wake_write, False)
    # Signals only note their number on the wake-up pipe; the loop below acts on them.
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, _note)
    signal.signal(signal.SIGTERM, _note)
    poller = select.poll()
    poller.register(control, select.POLLIN)
    poller.register(wake_read, select.POLLIN)
    try:
        while True:
            stop = False
            for fd, _ in poller.poll():
                if fd == wake_read:
                    stop = signal.SIGTERM in _drain(wake_read)
                    _reap(children, control)
                elif fd == control.fileno():
                    try:
                        message, fds = _recv_fds(control, _MAX_MESSAGE, 8)
                    except ConnectionError:
                        message, fds = b"", []
                    if not message:
                        stop = True
                        continue
                    request = json.loads(message)
                    forked = _fork(request, fds, control, (wake_read, wake_write), boot)
                    if isinstance(forked, dict):
                        return forked  # in the child
                    if forked:
                        children.add(forked)
            if stop:
                break
    except BaseException:
        _stop_all(children, boot)
        raise
    _stop_all(children, boot)
    sys.exit(0)


def _note(signum: int, frame: object) -> None:
    pass


def _drain(fd: int) -> bytes:
    received = b""
    while True:
        try:
            chunk = os.read(fd, 512)
        except BlockingIOError:
            return received
        if not chunk:
            return received
        received += chunk


def _fork(
    request: dict[str, Any],
    fds: list[int],
    control: socket.socket,
    wake: tuple[int, int],
    boot: dict[str, Any],
) -> int | dict[str, Any] | None:
    """Fork an instance (or, in a base, a zygote); here its pid (or None), in the child the
    request."""
    zygote = "zygote" in request
    # An instance's: stdout, stderr, then its cgroup.procs files, opened by the daemon.
    expected = 3 if zygote else 2 + int(request.get("cgroup_fds", 0))
    if len(fds) != expected or zygote != bool(boot.get("base")):
        for fd in fds:
            os.close(fd)
        _send(control, {"failed": request["fork"], "error": "not a request this process serves"})
        return None
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # else the child would write the zygote's pending output again
    try:
        pid = os.fork()
    except OSError as error:
        for fd in fds:
            os.close(fd)
        _send(control, {"failed": request["fork"], "error": str(error)})
        return None
    if pid == 0:
        try:
            if zygote:
                _become_zygote(request, fds, control, wake, boot)
            else:
                _become_instance(request, fds, control, wake, boot)
            return request
        except BaseException:
            traceback.print_exc()
            os._exit(1)
    for fd in fds:
        os.close(fd)
    _send(control, {"forked": request["fork"], "pid": pid})
    return pid


def _leave_the_parent(control: socket.socket, wake: tuple[int, int], death_signal: int) -> None:
    """In a new child: its own session and process group, which the daemon signals as a
    whole; dying with its parent; none of the parent's signal handling or descriptors."""
    parent = os.getppid()
    os.setsid()
    _set_parent_death_signal(death_signal)
    if os.getppid() != parent:
        os._exit(1)
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    control.close()
    for fd in wake:
        os.close(fd)


def _take_streams(stdout: int, stderr: int) -> None:
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.dup2(stdout, 1)
    os.dup2(stderr, 2)
    for fd in (null, stdout, stderr):
        os.close(fd)


def _become_instance(
    request: dict[str, Any],
    fds: list[int],
    control: socket.socket,
    wake: tuple[int, int],
    boot: dict[str, Any],
) -> None:
    """In the new child: the same process state a spawned instance would start with."""
    # Into the instance's control groups before anything else: all it starts is there too.
    # (Descriptors the daemon opened as root: a sandboxed zygote could not open the files.)
    pid = str(os.getpid()).encode()
    for fd in fds[2:]:
        os.write(fd, pid)
        os.close(fd)
    # As a spawned instance dies with the daemon, this one dies with the zygote (which kills
    # the group when the daemon goes: this covers a zygote killed outright).
    _leave_the_parent(control, wake, signal.SIGKILL)
    # As exec'ing the console script names the process after it; `python -m` after python.
    _set_name(os.path.basename(boot["program"]).encode() if boot["program"] else boot["comm"])
    _take_streams(*fds[:2])
    os.environ.clear()
    os.environ.update(request["env"])
    os.environ.update(boot["env_changes"])
    for name in boot["env_removed"]:
        os.environ.pop(name, None)
    if "_" in boot["env_changes"] and boot["program"]:
        os.environ["_"] = boot["program"]  # bash's: the command it exec'd, here the server
    os.chdir(request["cwd"])


def _become_zygote(
    request: dict[str, Any],
    fds: list[int],
    control: socket.socket,
    wake: tuple[int, int],
    boot: dict[str, Any],
) -> None:
    """In a child of a base: a revision's zygote, in the state a zygote the daemon started in
    the revision's folder with its environment would be in before importing the app."""
    # SIGTERM, as the daemon's death tells a zygote it started: it kills its instances.
    _leave_the_parent(control, wake, signal.SIGTERM)
    _set_name(ZYGOTE_NAME)
    own_control, stdout, stderr = fds
    request["control"] = own_control
    _take_streams(stdout, stderr)
    zygote = request["zygote"]
    os.chdir(zygote["cwd"])
    os.environ.clear()
    os.environ.update(zygote["env"])
    os.environ.update(boot["startup_env"])
    if "PWD" in boot["startup_env"]:
        os.environ["PWD"] = os.getcwd()  # the shell's, in this folder
    sys.path[0] = zygote["boot"]["path0"]
    _gunicorn_reads_cwd_again()
    _show_environment()


def _show_environment() -> None:
    """Write the zygote's environment where /proc/PID/environ reads it (the strings exec put
    on the stack, which its instances inherit): there, a zygote the daemon started, and an
    instance spawned, show their revision's variables (K_REVISION...), which tools that find
    instances read; a base's child would show the base's. The base was started with room to
    spare for this (HOMERUN_ENVIRON_ROOM, which the daemon checks a revision's fit in)."""
    try:
        with open("/proc/self/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
        start, end = int(fields[47]), int(fields[48])  # env_start, env_end (fields 50, 51)
    except (OSError, IndexError, ValueError):
        return
    shown = b"".join(
        name.encode() + b"=" + value.encode() + b"\0" for name, value in os.environ.items()
    )
    if not start or len(shown) > end - start:
        return
    # Nothing points into these strings any more: os.environ.clear() unset every variable, and
    # the ones set since are libc's own copies.
    ctypes.memmove(start, shown + bytes(end - start - len(shown)), end - start)


def _reap(instances: set[int], control: socket.socket) -> None:
    while instances:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        instances.discard(pid)
        _send(control, {"exited": pid, "status": _exit_status(status)})


def _stop_all(children: set[int], boot: dict[str, Any]) -> None:
    """A zygote SIGKILLs its instances' groups; a base SIGTERMs its zygotes (each then kills
    its own instances), SIGKILLs those left after a few seconds; both reap them."""
    if not boot.get("base"):
        _signal_groups(children, signal.SIGKILL)
        for pid in children:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        return
    _signal_groups(children, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_SECONDS
    while children:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid:
            children.discard(pid)
        elif time.monotonic() < deadline:
            time.sleep(0.005)
        else:
            _signal_groups(children, signal.SIGKILL)
            deadline = float("inf")


def _signal_groups(groups: set[int], signum: int) -> None:
    for pgid in groups:
        try:
            os.killpg(pgid, signum)
        except (ProcessLookupError, PermissionError):
            pass


def _send(control: socket.socket, message: dict[str, Any]) -> None:
    try:
        control.send(json.dumps(message).encode())
    except OSError:
        pass  # the daemon is gone; end of file on the socket will stop the loop


# -- the instance ---------------------------------------------------------------------


def _run_instance(job: _Job) -> None:
    """Run the start command's own entry point, as exec'ing it would have (never returns)."""
    sys.argv = [job.program or job.module or job.server, *job.argv]
    if job.server == "gunicorn":
        _gunicorn_reads_port_again()
    if job.module:
        runpy.run_module(job.module, run_name="__main__", alter_sys=True)
    else:
        assert job.program is not None
        runpy.run_path(job.program, run_name="__main__")
    sys.exit(0)


def _gunicorn_reads_port_again() -> None:
    """gunicorn's default --bind comes from $PORT when gunicorn.config is imported, which was
    in the zygote (without PORT): compute it again as that import would have now."""
    bind = getattr(sys.modules.get("gunicorn.config"), "Bind", None)
    if bind is not None and "PORT" in os.environ:
        bind.default = [f"0.0.0.0:{os.environ['PORT']}"]


def _gunicorn_reads_cwd_again() -> None:
    """gunicorn's default --chdir is the folder gunicorn.config was imported in, which for a
    base is `/`: compute it again in the zygote's folder, as that import would have."""
    config = sys.modules.get("gunicorn.config")
    util = sys.modules.get("gunicorn.util")
    if config is None or util is None:
        return
    for setting in getattr(config, "KNOWN_SETTINGS", ()):
        if getattr(setting, "name", None) == "chdir":
            setting.default = util.getcwd()


def _set_parent_death_signal(signum: int) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signum)


def _set_name(name: bytes) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_NAME, ctypes.c_char_p(name[:15]))


def _exit_status(status: int) -> int:
    """os.waitstatus_to_exitcode, which Python 3.8 lacks: -N when killed by signal N."""
    if os.WIFSIGNALED(status):
        return -os.WTERMSIG(status)
    return os.WEXITSTATUS(status)


def _recv_fds(sock: socket.socket, size: int, max_fds: int) -> tuple[bytes, list[int]]:
    """socket.recv_fds, which Python 3.8 (a `FROM python:3.8` revision's) lacks."""
    fds = array.array("i")
    message, ancillary, _, _ = sock.recvmsg(size, socket.CMSG_LEN(max_fds * fds.itemsize))
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(data[: len(data) - (len(data) % fds.itemsize)])
    return message, list(fds)


if __name__ == "__main__":
    main(sys.argv)
