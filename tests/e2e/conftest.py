"""Fixtures for the end-to-end tests: the session's shared daemon, per-test daemons, and the
acceptance apps deployed once each."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from .harness import APPS, SHARED_CONFIG, Platform, running_platform


@pytest.fixture(scope="session")
def venv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One virtualenv cache for every daemon of the session (HOMERUN_TEST_VENV_CACHE keeps it
    across sessions), so flask, gunicorn, uvicorn and Django install once."""
    kept = os.environ.get("HOMERUN_TEST_VENV_CACHE")
    if kept:
        path = Path(kept).expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
    return tmp_path_factory.mktemp("venv-cache")


@pytest.fixture(scope="session")
def platform(tmp_path_factory: pytest.TempPathFactory, venv_cache: Path) -> Iterator[Platform]:
    """The session's shared daemon."""
    with running_platform(
        tmp_path_factory.mktemp("shared") / "home", venv_cache, SHARED_CONFIG
    ) as shared:
        yield shared


@pytest.fixture
def own_platform(tmp_path: Path, venv_cache: Path) -> Iterator[Platform]:
    """A daemon for one test, for tests that stop, restart or kill it."""
    with running_platform(tmp_path / "home", venv_cache, {"stop-grace-seconds": 3}) as own:
        yield own


@pytest.fixture(scope="session")
def streaming(platform: Platform) -> str:
    """tests/apps/streaming deployed once as `streaming`, with user env vars."""
    platform.ensure_deployed(
        "streaming", APPS / "streaming", "--set-env-vars", "GREETING=hello,DSN=db://u@h/x?a=b"
    )
    return "streaming"


@pytest.fixture(scope="session")
def httpbin(platform: Platform) -> str:
    platform.ensure_deployed("httpbin", APPS / "httpbin", "--allow-unauthenticated")
    return "httpbin"
