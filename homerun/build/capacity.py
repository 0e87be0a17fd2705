"""How many requests a start command's server takes at once, read from its flags: gunicorn's
workers x threads, uvicorn's workers (each an event loop, with anyio's 40 threads for `def`
endpoints). Pure: the words of the command, no process."""

from __future__ import annotations

import posixpath
from collections.abc import Mapping, Sequence

from homerun.model.inspection import Capacity
from homerun.shellwords import WordError, split_words

# anyio's default limiter: Starlette (FastAPI) runs each `def` endpoint in one of 40 threads.
ANYIO_THREADS = 40
_SHELLS = ("sh", "bash", "dash")
_ASGI_WORKERS = ("uvicorn.workers.UvicornWorker", "uvicorn_worker.UvicornWorker")


def command_capacity(argv: Sequence[str], env: Mapping[str, str]) -> Capacity | None:
    """The capacity the command asks for, or None when it does not start gunicorn or uvicorn
    in a way read here (a script, `python main.py`)."""
    words = _words(argv)
    for index, word in enumerate(words):
        name = posixpath.basename(word)
        if word == "-m" and index + 1 < len(words):
            name = words[index + 1]
            index += 1
        if name == "gunicorn":
            return _gunicorn(words[index + 1 :], env)
        if name == "uvicorn":
            return _uvicorn(words[index + 1 :], env)
    return None


def _words(argv: Sequence[str]) -> list[str]:
    words = list(argv)
    if len(words) >= 3 and posixpath.basename(words[0]) in _SHELLS and words[1] == "-c":
        try:
            return [word.text for word in split_words(words[2], {}, substitute=False)]
        except WordError:
            return words[2].split()
    return words


def _flag(words: Sequence[str], names: Sequence[str]) -> str | None:
    """The last value given to any of `names` (`--threads 8`, `--threads=8`, `-w4`)."""
    found = None
    for index, word in enumerate(words):
        for name in names:
            if word == name and index + 1 < len(words):
                found = words[index + 1]
            elif name.startswith("--") and word.startswith(name + "="):
                found = word[len(name) + 1 :]
            elif not name.startswith("--") and word.startswith(name) and len(word) > len(name):
                found = word[len(name) :]
    return found


def _number(text: str | None, default: int) -> int:
    try:
        return max(1, int(text)) if text is not None else default
    except ValueError:
        return default


def _gunicorn(words: Sequence[str], env: Mapping[str, str]) -> Capacity:
    # gunicorn's defaults: WEB_CONCURRENCY (else 1) workers, 1 thread each.
    workers = _number(_flag(words, ("--workers", "-w")), _number(env.get("WEB_CONCURRENCY"), 1))
    worker_class = _flag(words, ("--worker-class", "-k")) or "sync"
    if worker_class in _ASGI_WORKERS:
        return Capacity(
            server="gunicorn",
            workers=workers,
            threads=None,
            requests_at_once=None,
            sync_pool=ANYIO_THREADS,
            source="command",
        )
    threads = _number(_flag(words, ("--threads",)), 1)
    if worker_class in ("gevent", "eventlet"):
        # Green threads take --worker-connections each (1000 by default).
        threads = _number(_flag(words, ("--worker-connections",)), 1000)
    return Capacity(
        server="gunicorn",
        workers=workers,
        threads=threads,
        requests_at_once=workers * threads,
        source="command",
    )


def _uvicorn(words: Sequence[str], env: Mapping[str, str]) -> Capacity:
    workers = _number(_flag(words, ("--workers",)), _number(env.get("WEB_CONCURRENCY"), 1))
    return Capacity(
        server="uvicorn",
        workers=workers,
        threads=None,
        requests_at_once=None,
        sync_pool=ANYIO_THREADS,
        source="command",
    )
