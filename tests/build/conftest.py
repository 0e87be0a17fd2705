"""Fixtures for the builder tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from .helpers import Output


@pytest.fixture(scope="session")
def venv_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the whole run, so flask + gunicorn are installed once."""
    return tmp_path_factory.mktemp("venv-cache")


@pytest.fixture
def output() -> Output:
    return Output()
