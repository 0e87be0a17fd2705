"""The logs handlers' `limit`: a whole number from 1 to MAX_LIMIT, else 400 saying so."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from homerun.admin.api import MAX_LIMIT, create_app


def logs_answer(limit: str | None) -> httpx.Response:
    asked: list[int] = []

    async def logs(service: str, limit: int, **filters: str | None) -> list[dict[str, Any]]:
        asked.append(limit)
        return []

    # The handler reaches only control.views.logs.
    control: Any = SimpleNamespace(views=SimpleNamespace(logs=logs))
    app = create_app(control, shutdown=lambda: None)

    async def get() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://admin") as client:
            params = {} if limit is None else {"limit": limit}
            return await client.get("/v1/services/hello/logs", params=params)

    response = asyncio.run(get())
    if response.status_code == 200:
        assert asked == [int(limit) if limit is not None else 50]
    return response


@pytest.mark.parametrize("limit", [None, "1", "50", str(MAX_LIMIT)])
def test_a_limit_in_range_is_passed_on(limit: str | None) -> None:
    assert logs_answer(limit).status_code == 200


@pytest.mark.parametrize(
    "limit",
    ["1e20", "100000000000000000000", "9" * 5000, str(MAX_LIMIT + 1), "0", "-1", "5.0", "1_000",
     " 5", "abc", "", "٣"],
)  # fmt: skip
def test_any_other_limit_is_a_400_that_says_what_is_allowed(limit: str) -> None:
    response = logs_answer(limit)
    assert response.status_code == 400
    assert response.json()["error"].startswith(
        f"limit: expected a whole number from 1 to {MAX_LIMIT}"
    )
