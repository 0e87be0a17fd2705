"""Fixtures for the runtime tests: the seed apps built once (their virtualenvs), and runtimes
that leave no process behind."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from homerun.build import Artifact, build

from .helpers import REPO_ROOT, Leftovers, Seeds


@pytest.fixture(scope="session")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> Seeds:
    """The seed Flask app (its Dockerfile: gunicorn) and FastAPI app (uvicorn), as the builder
    makes them; HOMERUN_TEST_VENV_CACHE keeps their virtualenvs across sessions."""
    kept = os.environ.get("HOMERUN_TEST_VENV_CACHE")
    cache = Path(kept).expanduser() if kept else tmp_path_factory.mktemp("venv-cache")
    root = tmp_path_factory.mktemp("seeds")

    def built(source: Path, name: str) -> Artifact:
        return build(
            source,
            root / name,
            command=None,
            args=None,
            user_env={},
            venv_cache=cache,
            output=lambda line: None,
        )

    return Seeds(
        flask=built(REPO_ROOT / "examples" / "cloudrun_example", "flask"),
        fastapi=built(REPO_ROOT / "tests" / "apps" / "fastapi_seed", "fastapi"),
    )


@pytest.fixture
def leftovers() -> Iterator[Leftovers]:
    """What a test started; whatever is left of it is killed at teardown, pass or fail."""
    started = Leftovers()
    yield started
    started.kill()
