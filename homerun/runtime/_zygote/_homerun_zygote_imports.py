"""Importing a zygote's server and app (or a base's server and framework): the server's own
option parsing, the modules it loads on the way to its first response, the environment
variables the imports read (and where), an app module named as one its base imported, and
whether what the imports left behind (threads, sockets, files open for writing) can be forked.

Imported by _zygote_main.py from this folder, on the app's Python: the standard library only,
and Python 3.8's.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
import traceback
from typing import Any


class Unfit(Exception):
    """Why this revision's instances cannot be forked from a zygote."""


class EnvReads:
    """Records which variables are looked up in os.environ while it is in force, and where
    (os.environ.get, `in`, os.getenv and copies all go through __getitem__)."""

    def __init__(self) -> None:
        self.places: dict[str, list[str]] = {}
        self._original: Any = type(os.environ)

    def __enter__(self) -> EnvReads:
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


def import_everything(boot: dict[str, Any]) -> str:
    """Import the server, what it loads at startup, and the app; the app's import string."""
    sys.argv = [boot["program"] or boot["module"], *boot["args"]]
    reads = EnvReads()
    try:
        if boot["server"] == "gunicorn":
            app = _import_gunicorn(reads, boot)
        else:
            app = _import_uvicorn(reads, boot)
    except (Unfit, KeyboardInterrupt):
        raise
    except BaseException as error:  # SystemExit included: the app or its server gave up
        raise Unfit(f"importing the app failed ({_one_line(error)})") from None
    port_reads = reads.places.get("PORT")
    if port_reads:
        raise Unfit(
            f"the app reads $PORT while it is imported ({', '.join(port_reads)}); "
            "each instance has its own port, so each is started on its own"
        )
    return app


def import_server(server: str) -> None:
    """What a base imports of the server: the modules its zygotes' servers load at startup."""
    try:
        if server == "gunicorn":
            importlib.import_module("gunicorn.app.wsgiapp")
            for name in (*_GUNICORN_WARM, "gunicorn.workers.sync", "gunicorn.workers.gthread"):
                warm(name)
        else:
            importlib.import_module("uvicorn.main")
            _warm_uvicorn({})
    except (Unfit, KeyboardInterrupt):
        raise
    except BaseException as error:
        raise Unfit(f"importing {server} failed ({_one_line(error)})") from None


def _import_gunicorn(reads: EnvReads, boot: dict[str, Any]) -> str:
    # The revision's gunicorn, not one homerun may have: imported by name, untyped.
    WSGIApplication = importlib.import_module("gunicorn.app.wsgiapp").WSGIApplication

    # Reads the options as the `gunicorn` command does: argv, GUNICORN_CMD_ARGS, the config file.
    try:
        application = WSGIApplication("%(prog)s [OPTIONS] [APP_MODULE]")
    except SystemExit:
        raise Unfit("gunicorn rejected its options (the instance's log shows why)") from None
    config = application.cfg
    if config.daemon:
        raise Unfit("gunicorn --daemon detaches from the instance")
    if config.paste:
        raise Unfit("gunicorn --paste loads the app through PasteDeploy")
    worker = str(config.worker_class_str)
    if worker not in ("sync", "gthread") and not worker.startswith(_FORKABLE_WORKERS):
        raise Unfit(
            f"gunicorn's worker class {worker} sets itself up (monkey-patching, its own loop) "
            "when the worker starts, after the app would have been imported"
        )
    config.worker_class  # noqa: B018 - imports the worker's module (gthread with --threads)
    for name in _GUNICORN_WARM:
        warm(name)
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


def _import_uvicorn(reads: EnvReads, boot: dict[str, Any]) -> str:
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
        raise Unfit(f"uvicorn rejected its options ({_one_line(error)})") from None
    finally:
        cli.run = real_run
    if "app" not in options:
        raise Unfit("uvicorn did not get to loading an app (the instance's log shows why)")
    if options.get("reload"):
        raise Unfit("uvicorn --reload runs the app in a watched subprocess of its own")
    workers = options.get("workers") or int(os.environ.get("WEB_CONCURRENCY") or 1)
    if workers > 1:
        raise Unfit(f"uvicorn --workers {workers} starts every worker as a fresh interpreter")
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
    warm("uvicorn.server")
    for table, choice in (
        ("HTTP_PROTOCOLS", options.get("http", "auto")),
        ("WS_PROTOCOLS", options.get("ws", "auto")),
        ("LIFESPAN", options.get("lifespan", "auto")),
        ("LOOP_FACTORIES", options.get("loop", "auto")),
        ("LOOP_SETUPS", options.get("loop", "auto")),
    ):
        target = getattr(config, table, {}).get(choice) if isinstance(choice, str) else None
        if isinstance(target, str):
            warm(target.split(":")[0])
    # The "auto" loop factory imports one of these when the server starts.
    warm("uvicorn.loops.asyncio")
    if options.get("loop", "auto") in ("auto", "uvloop"):
        warm("uvloop")
        warm("uvicorn.loops.uvloop")
    warm("encodings.idna")


def warm(module: str) -> None:
    try:
        importlib.import_module(module)
    except Exception:  # optional pieces (uvloop, websockets): the instance decides
        pass


def _one_line(error: BaseException) -> str:
    if isinstance(error, SystemExit):
        return f"it exited with {error.code!r}"
    text = traceback.format_exception_only(type(error), error)[-1].strip()
    return text if len(text) <= 300 else text[:297] + "..."


class Shadowed(Unfit):
    """The app's folder has a module its base imported from the virtualenv: the app would
    import its own when started on its own, the base's when forked from it."""


def _check_shadowing(boot: dict[str, Any]) -> None:
    """Shadowed if a folder the server put on sys.path (the app's) has a module or package
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
                raise Shadowed(
                    f"{os.path.join(folder, name)} has the name of a module the shared base "
                    f"imported from the virtualenv ({module})"
                )


_MODULE_SUFFIXES = ("py", "pyc", "so")


def _is_package(folder: str, name: str) -> bool:
    return os.path.exists(os.path.join(folder, name, "__init__.py"))


# -- fork safety ----------------------------------------------------------------------


def check_fork_safety(descriptors_before: set[int], control_fd: int) -> None:
    """Unfit for threads, or sockets, pipes, event fds or writable files the imports left."""
    native_threads = len(os.listdir("/proc/self/task"))
    if native_threads > 1 or threading.active_count() > 1:
        names = [thread.name for thread in threading.enumerate()]
        names.remove(threading.main_thread().name)
        which = f" ({', '.join(names[:5])})" if names else ""
        raise Unfit(
            f"the app starts threads while it is imported: {native_threads - 1} besides the "
            f"main one{which}; a forked instance would not have them"
        )
    held = []
    for fd in sorted(open_descriptors() - descriptors_before - {control_fd}):
        what = _unsafe_descriptor(fd)
        if what:
            held.append(what)
    if held:
        raise Unfit(
            f"the app keeps {', '.join(held[:5])} open after it is imported; forked instances "
            "would share it"
        )


def open_descriptors() -> set[int]:
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
