"""How many requests a start command's server takes at once, read from its flags."""

from __future__ import annotations

import pytest

from homerun.build.capacity import command_capacity


def sh(command: str) -> list[str]:
    return ["/bin/sh", "-c", command]


@pytest.mark.parametrize(
    ("argv", "env", "workers", "threads", "at_once"),
    [
        # The seed's Dockerfile CMD.
        (
            sh("exec gunicorn --bind :$PORT --workers 1 --threads 8 --timeout 0 main:app"),
            {},
            1,
            8,
            8,
        ),
        (sh("gunicorn -w 4 --threads=2 main:app"), {}, 4, 2, 8),
        (sh("gunicorn -w4 main:app"), {}, 4, 1, 4),
        (["gunicorn", "main:app"], {"WEB_CONCURRENCY": "3"}, 3, 1, 3),
        (["python", "-m", "gunicorn", "--threads", "16", "main:app"], {}, 1, 16, 16),
        (sh("gunicorn -k gevent --worker-connections 500 main:app"), {}, 1, 500, 500),
    ],
)
def test_gunicorn_workers_times_threads(
    argv: list[str], env: dict[str, str], workers: int, threads: int, at_once: int
) -> None:
    capacity = command_capacity(argv, env)
    assert capacity is not None and capacity.server == "gunicorn"
    assert (capacity.workers, capacity.threads, capacity.requests_at_once) == (
        workers,
        threads,
        at_once,
    )
    assert capacity.source == "command"


def test_uvicorn_and_asgi_workers_have_an_event_loop_and_anyio_threads() -> None:
    capacity = command_capacity(sh("exec uvicorn main:app --port $PORT --workers 2"), {})
    assert capacity is not None
    assert (capacity.server, capacity.workers, capacity.requests_at_once) == ("uvicorn", 2, None)
    assert capacity.sync_pool == 40
    asgi = command_capacity(sh("gunicorn -k uvicorn.workers.UvicornWorker -w 2 main:app"), {})
    assert asgi is not None and asgi.requests_at_once is None and asgi.workers == 2


@pytest.mark.parametrize(
    "argv", [["python", "main.py"], sh("./serve.sh"), sh("gunicorn 'unterminated"), []]
)
def test_other_commands_have_no_declared_capacity(argv: list[str]) -> None:
    capacity = command_capacity(argv, {})
    assert capacity is None or capacity.server == "gunicorn"
