"""Suite-wide test settings: end-to-end tests run after the unit tests."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # Unit tests take seconds and e2e tests minutes: report the fast failures first. The sort is
    # stable, so each group keeps its file order (and e2e its session fixtures stay shared).
    items.sort(key=lambda item: item.get_closest_marker("e2e") is not None)
