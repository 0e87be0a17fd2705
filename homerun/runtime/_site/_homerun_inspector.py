"""homerun's runtime inspector, inside a Python instance: what one instance does with the
requests it is given (event-loop lag, blocking calls in coroutines, thread-pool occupancy, the
server's real capacity), written as a small JSON snapshot the daemon reads.

It is loaded by this folder's sitecustomize.py (the daemon puts the folder first on the
instance's PYTHONPATH, and HOMERUN_INSPECT names the folder of snapshots), and installs only
import hooks: nothing runs until the server does, so a zygote that imported uvicorn or gunicorn
forks instances with the hooks in place and no thread started.

- uvicorn (`Server.serve`, so also gunicorn's UvicornWorker): a probe task wakes every
  PROBE_SECONDS and measures how late it woke (the event loop's lag); a watchdog thread, seeing
  no probe for longer than the threshold, samples the loop thread's stack and records the app's
  frame that blocks it (file:line, function), logged once per place as a WARNING entry; the probe
  also reads anyio's default thread limiter (40 tokens: Starlette runs sync endpoints there).
- gunicorn's own workers (sync, gthread): the WSGI callable is wrapped to count the requests it
  holds at once, against the worker's threads; the capacity is workers x threads.

Standard library only, no annotations needing 3.7+ at runtime: it runs on the app's Python.
Any failure here is swallowed: the inspector must never break the app it watches.
"""

import asyncio
import json
import os
import sys
import threading
import time

VERSION = 1
ENV_DIR = "HOMERUN_INSPECT"
ENV_THRESHOLD = "HOMERUN_INSPECT_BLOCK_MS"
PROBE_SECONDS = 0.1
WRITE_SECONDS = 1.0
DEFAULT_THRESHOLD_MS = 100.0  # asyncio's debug mode calls a callback slow past 100 ms
MAX_PLACES = 50  # distinct blocking places kept (a hostile app cannot grow this)
STACK_FRAMES = 6

_HERE = os.path.dirname(os.path.abspath(__file__))
_LIBRARY_MARKS = (os.sep + "site-packages" + os.sep, os.sep + "dist-packages" + os.sep)


class _State:
    """Everything this process measured; one per process (gunicorn's workers have their own)."""

    def __init__(self):
        self.lock = threading.Lock()
        self.server = ""
        self.workers = 1
        self.threads = 0  # requests one worker takes at once (0: not known yet)
        self.worker_class = ""
        # WSGI requests (gunicorn)
        self.busy = 0
        self.peak_busy = 0
        self.requests = 0
        self.saturated_since = None
        self.saturated_seconds = 0.0
        # The event loop (uvicorn)
        self.loop_thread = None
        self.last_beat = 0.0
        self.lag_samples = 0
        self.lag_total = 0.0
        self.lag_max = 0.0
        self.lag_last = 0.0
        self.stalled_seconds = 0.0
        self.stall_place = None  # the place sampled during the stall under way
        self.places = {}  # "file:line function" -> dict
        # anyio's default limiter (Starlette's run_in_threadpool)
        self.pool_total = 0
        self.pool_borrowed = 0
        self.pool_peak = 0
        self.pool_waiting = 0
        self.pool_peak_waiting = 0
        self.pool_full_seconds = 0.0
        # Output
        self.started = False
        self.path = None
        self.threshold = DEFAULT_THRESHOLD_MS / 1000.0


_state = _State()


# -- the writer and watchdog thread ----------------------------------------------------------


def _start(server):
    """Start measuring in this process (the instance, or one of gunicorn's workers)."""
    state = _state
    if state.started:
        return
    folder = os.environ.get(ENV_DIR)
    if not folder:
        return
    state.started = True
    state.server = server
    try:
        state.threshold = max(0.01, float(os.environ.get(ENV_THRESHOLD, "")) / 1000.0)
    except ValueError:
        pass
    port = os.environ.get("PORT", "0")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError:
        return
    state.path = os.path.join(folder, f"{port}.{os.getpid()}.json")
    thread = threading.Thread(target=_watch, name="homerun-inspector", daemon=True)
    thread.start()


def _watch():
    state = _state
    period = min(state.threshold / 4.0, 0.05)
    next_write = 0.0
    while True:
        time.sleep(period)
        try:
            now = time.monotonic()
            if state.loop_thread is not None and state.last_beat:
                _check_stall(state, now)
            if now >= next_write:
                next_write = now + WRITE_SECONDS
                _write(state)
        except Exception:  # noqa: BLE001 - never break the app
            pass


def _check_stall(state, now):
    late = now - state.last_beat - PROBE_SECONDS
    if late < state.threshold or state.stall_place is not None:
        return
    frame = sys._current_frames().get(state.loop_thread)
    if frame is None:
        return
    found = _blocking_place(frame)
    if found is None:
        return
    place, function, stack = found
    key = f"{place} {function}"
    with state.lock:
        entry = state.places.get(key)
        if entry is None:
            if len(state.places) >= MAX_PLACES:
                return
            entry = {"place": place, "function": function, "count": 0, "worst_ms": 0.0}
            entry["stack"] = stack
            state.places[key] = entry
            first = True
        else:
            first = False
        entry["count"] += 1
        state.stall_place = key
    if first:
        _log_warning(
            f"the event loop was blocked for over {state.threshold * 1000:.0f} ms at {place} "
            f"in {function}: a blocking call inside a coroutine stalls every request of this "
            "instance; await an async version, run it in a thread (asyncio.to_thread, "
            "starlette's run_in_threadpool), or make the endpoint a plain def. Logged once; "
            "later stalls here are counted (homerun services describe, homerun services "
            "advise).",
            place,
            function,
        )


def _blocking_place(frame):
    """The app's own frame nearest the top of the loop thread's stack, or None when no app
    code is on it (the loop waiting in C while starved of CPU is lag, not a blocking call)."""
    stack = []
    chosen = None
    current = frame
    app_folder = os.getcwd() + os.sep
    while current is not None:
        filename = current.f_code.co_filename
        if len(stack) < STACK_FRAMES:
            stack.append(f"{_shown(filename)}:{current.f_lineno} {current.f_code.co_name}")
        if chosen is None and _is_app_file(filename, app_folder):
            chosen = current
        current = current.f_back
    if chosen is None:
        return None
    return (
        f"{_shown(chosen.f_code.co_filename)}:{chosen.f_lineno}",
        chosen.f_code.co_name,
        stack,
    )


def _is_app_file(filename, app_folder):
    """Code of the app's own folder (the instance's working directory), not a library
    installed there."""
    if not filename.startswith(app_folder) or filename.startswith(_HERE):
        return False
    return not any(mark in filename for mark in _LIBRARY_MARKS)


def _shown(filename):
    cwd = os.getcwd()
    if filename.startswith(cwd + os.sep):
        return filename[len(cwd) + 1 :]
    return filename


def _log_warning(message, place, function):
    entry = {
        "severity": "WARNING",
        "message": message,
        "inspector": {"kind": "blocking-call", "place": place, "function": function},
    }
    try:
        os.write(2, (json.dumps(entry) + "\n").encode())
    except OSError:
        pass


def _write(state):
    if state.path is None:
        return
    now = time.monotonic()
    with state.lock:
        saturated = state.saturated_seconds
        if state.saturated_since is not None:
            saturated += now - state.saturated_since
        snapshot = {
            "version": VERSION,
            "pid": os.getpid(),
            "port": int(os.environ.get("PORT", "0") or 0),
            "written_at": time.time(),
            "server": state.server,
            "worker_class": state.worker_class,
            "workers": state.workers,
            "threads": state.threads,
            "busy": state.busy,
            "peak_busy": state.peak_busy,
            "requests": state.requests,
            "saturated_seconds": round(saturated, 3),
            "loop": None,
            "thread_pool": None,
            "blocking": [dict(entry) for entry in state.places.values()],
        }
        if state.loop_thread is not None:
            snapshot["loop"] = {
                "lag_ms_last": round(state.lag_last * 1000, 2),
                "lag_ms_mean": round(state.lag_total / state.lag_samples * 1000, 2)
                if state.lag_samples
                else 0.0,
                "lag_ms_max": round(state.lag_max * 1000, 2),
                "samples": state.lag_samples,
                "stalled_seconds": round(state.stalled_seconds, 3),
                "threshold_ms": state.threshold * 1000,
            }
        if state.pool_total:
            snapshot["thread_pool"] = {
                "total": state.pool_total,
                "borrowed": state.pool_borrowed,
                "peak_borrowed": state.pool_peak,
                "waiting": state.pool_waiting,
                "peak_waiting": state.pool_peak_waiting,
                "full_seconds": round(state.pool_full_seconds, 3),
            }
    temporary = state.path + ".tmp"
    with open(temporary, "w") as file:
        json.dump(snapshot, file)
    os.replace(temporary, state.path)


# -- uvicorn: the event loop -----------------------------------------------------------------


async def _probe(state):
    anyio_limiter = None
    while True:
        asleep = time.monotonic()
        await asyncio.sleep(PROBE_SECONDS)
        woke = time.monotonic()
        lag = max(0.0, woke - asleep - PROBE_SECONDS)
        with state.lock:
            state.last_beat = woke
            state.lag_samples += 1
            state.lag_total += lag
            state.lag_last = lag
            state.lag_max = max(state.lag_max, lag)
            if lag >= state.threshold:
                state.stalled_seconds += lag
                if state.stall_place is not None:
                    entry = state.places.get(state.stall_place)
                    if entry is not None:
                        entry["worst_ms"] = max(entry["worst_ms"], round(lag * 1000, 1))
            state.stall_place = None
        if anyio_limiter is None and "anyio" in sys.modules:
            try:
                anyio_limiter = sys.modules["anyio"].to_thread.current_default_thread_limiter()
            except Exception:  # noqa: BLE001 - not under anyio's asyncio backend
                anyio_limiter = False
        if anyio_limiter:
            _read_limiter(state, anyio_limiter, PROBE_SECONDS + lag)


def _read_limiter(state, limiter, elapsed):
    try:
        total = int(limiter.total_tokens)
        borrowed = int(limiter.borrowed_tokens)
        waiting = int(limiter.statistics().tasks_waiting)
    except Exception:  # noqa: BLE001
        return
    with state.lock:
        state.pool_total = total
        state.pool_borrowed = borrowed
        state.pool_peak = max(state.pool_peak, borrowed)
        state.pool_waiting = waiting
        state.pool_peak_waiting = max(state.pool_peak_waiting, waiting)
        if borrowed >= total:
            state.pool_full_seconds += elapsed


def _patch_uvicorn_server(module):
    server_class = getattr(module, "Server", None)
    original = getattr(server_class, "serve", None)
    if original is None or getattr(original, "_homerun_inspected", False):
        return

    async def serve(self, *args, **kwargs):
        try:
            _start_loop(self)
        except Exception:  # noqa: BLE001
            pass
        return await original(self, *args, **kwargs)

    serve._homerun_inspected = True
    server_class.serve = serve


def _start_loop(server):
    state = _state
    if state.loop_thread is not None or not os.environ.get(ENV_DIR):
        return
    config = getattr(server, "config", None)
    state.workers = int(getattr(config, "workers", None) or 1)
    state.loop_thread = threading.get_ident()
    state.last_beat = time.monotonic()
    # Held here: the loop keeps only a weak reference to its tasks.
    state.probe_task = asyncio.get_running_loop().create_task(_probe(state))
    _start("uvicorn")


# -- gunicorn: workers x threads -------------------------------------------------------------


def _patch_gunicorn_worker(module):
    worker_class = getattr(module, "Worker", None)
    original = getattr(worker_class, "load_wsgi", None)
    if original is None or getattr(original, "_homerun_inspected", False):
        return

    def load_wsgi(self):
        original(self)
        try:
            _count_wsgi(self)
        except Exception:  # noqa: BLE001
            pass

    load_wsgi._homerun_inspected = True
    worker_class.load_wsgi = load_wsgi


def _count_wsgi(worker):
    # An ASGI worker (uvicorn's) has no WSGI callable to count: Server.serve is measured.
    if not type(worker).__module__.startswith("gunicorn.workers"):
        return
    if not os.environ.get(ENV_DIR):
        return
    cfg = worker.cfg
    state = _state
    state.worker_class = type(worker).__name__
    state.workers = int(cfg.workers or 1)
    # gunicorn turns a sync worker with --threads > 1 into gthread; a sync one takes one.
    state.threads = int(cfg.threads or 1) if state.worker_class == "ThreadWorker" else 1
    application = worker.wsgi
    worker.wsgi = _counted(application, state)
    _start("gunicorn")


def _counted(application, state):
    def leave():
        with state.lock:
            state.busy -= 1
            if state.saturated_since is not None and state.busy < state.threads:
                state.saturated_seconds += time.monotonic() - state.saturated_since
                state.saturated_since = None

    def counted(environ, start_response):
        with state.lock:
            state.busy += 1
            state.requests += 1
            state.peak_busy = max(state.peak_busy, state.busy)
            if state.busy >= state.threads and state.saturated_since is None:
                state.saturated_since = time.monotonic()
        try:
            result = application(environ, start_response)
        except BaseException:
            leave()
            raise
        file_wrapper = environ.get("wsgi.file_wrapper")
        if isinstance(file_wrapper, type) and isinstance(result, file_wrapper):
            leave()  # gunicorn sends it with sendfile; wrapping it would lose that
            return result
        return _Closing(result, leave)

    return counted


class _Closing:
    """A WSGI response that counts its request done when the server closes it."""

    def __init__(self, result, leave):
        self._result = result
        self._leave = leave
        self._closed = False

    def __iter__(self):
        return iter(self._result)

    def close(self):
        if self._closed:
            return
        self._closed = True
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._leave()


# -- installing the hooks --------------------------------------------------------------------

_PATCHES = {
    "uvicorn.server": _patch_uvicorn_server,
    "gunicorn.workers.base": _patch_gunicorn_worker,
}


class _Loader:
    """Runs the real loader, then the patch."""

    def __init__(self, loader, patch):
        self._loader = loader
        self._patch = patch

    def create_module(self, spec):
        create = getattr(self._loader, "create_module", None)
        return create(spec) if create is not None else None

    def exec_module(self, module):
        self._loader.exec_module(module)
        try:
            self._patch(module)
        except Exception:  # noqa: BLE001
            pass

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _Finder:
    """Finds the modules to patch through the other finders, and wraps their loader."""

    def find_spec(self, name, path=None, target=None):
        patch = _PATCHES.get(name)
        if patch is None:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader, patch)
                return spec
        return None


def install():
    """Patch what is imported already; hook what is imported later."""
    for name, patch in _PATCHES.items():
        module = sys.modules.get(name)
        if module is not None:
            patch(module)
    if not any(isinstance(finder, _Finder) for finder in sys.meta_path):
        sys.meta_path.insert(0, _Finder())
