"""homerun's default gunicorn command takes as many requests at once as the revision's
--concurrency, so requests never wait inside the app while the router counts them as served."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from .harness import APPS, Platform

pytestmark = pytest.mark.e2e

SLOW_SECONDS = 2.0
# More than the 8 threads of Cloud Run's sample flags, well under the concurrency of 80.
AT_ONCE = 24


def _timed_slow_requests(platform: Platform, service: str) -> list[float]:
    def one(_: int) -> float:
        began = time.monotonic()
        response = platform.request(
            service, "GET", "/slow", params={"seconds": SLOW_SECONDS}, timeout=30.0
        )
        assert response.status_code == 200, response.text
        return time.monotonic() - began

    with ThreadPoolExecutor(AT_ONCE) as pool:
        return sorted(pool.map(one, range(AT_ONCE)))


def test_default_gunicorn_serves_the_whole_concurrency_at_once(platform: Platform) -> None:
    # One instance only: a scale-out cannot hide requests queued inside gunicorn.
    platform.ensure_deployed(
        "flask-slow", APPS / "flask_slow", "--max-instances", "1", "--min-instances", "1"
    )
    described = platform.describe_service("flask-slow")
    latest = described["revisions"][0]
    assert latest["concurrency"] == 80
    assert "--workers 1 --threads 80 " in latest["entrypoint"][-1], latest["entrypoint"]
    platform.request("flask-slow", "GET", "/slow", params={"seconds": 0})  # warm

    latencies = _timed_slow_requests(platform, "flask-slow")
    # With 8 threads, 24 requests of 2 s take three rounds: the slowest waits 6 s, the
    # median 4 s. With a thread per request of the concurrency, all run at once.
    assert latencies[-1] < 2 * SLOW_SECONDS, latencies
    assert latencies[len(latencies) // 2] < 1.5 * SLOW_SECONDS, latencies


def test_a_concurrency_update_refits_the_default_command(platform: Platform) -> None:
    platform.deploy_ok("flask-refit", APPS / "flask_slow", "--concurrency", "6")
    first = platform.describe_service("flask-refit")["revisions"][0]
    assert "--workers 1 --threads 6 " in first["entrypoint"][-1], first["entrypoint"]
    # A settings-only update copies the artifact; its default command follows the concurrency.
    result = platform.run(
        "services", "update", "flask-refit", "--concurrency", "12", timeout=120, check=True
    )
    latest = platform.describe_service("flask-refit")["revisions"][0]
    assert latest["name"] != first["name"], result.stdout
    assert latest["concurrency"] == 12, result.stdout
    assert "--workers 1 --threads 12 " in latest["entrypoint"][-1], latest["entrypoint"]
    response = platform.request("flask-refit", "GET", "/slow", params={"seconds": 0})
    assert response.status_code == 200, response.text
