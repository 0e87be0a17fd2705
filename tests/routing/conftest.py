"""The routing tests' instance: a real uvicorn app in its own process, shared by a module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fakes import proxy_app


@pytest.fixture(scope="module")
def instance() -> Iterator[tuple[str, int]]:
    """tests/routing/apps/proxy_app.py under uvicorn, as homerun runs an instance."""
    with proxy_app() as address:
        yield address
