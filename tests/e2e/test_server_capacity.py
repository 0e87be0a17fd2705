"""homerun's default gunicorn command takes as many requests at once as the revision's
--concurrency, so requests never wait inside the app while the router counts them as served."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from .harness import APPS, Platform

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

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


def test_concurrency_auto_lowers_the_limit_of_a_40_thread_app(platform: Platform) -> None:
    platform.ensure_deployed(
        "seed-auto", APPS / "fastapi_seed", "--concurrency", "auto", "--max-instances", "1"
    )
    document = platform.run("services", "describe", "seed-auto", "--format", "yaml", check=True)
    assert "run.homerun.dev/concurrency: auto" in document.stdout
    assert "containerConcurrency: 80" in document.stdout  # the maximum
    text = platform.run("services", "describe", "seed-auto", check=True).stdout
    assert "concurrency auto (max 80)" in text

    limits: list[int] = []
    # 80 clients on the 1 s sync endpoint, twice what its 40 threads serve: bounded in time.
    with httpx.Client(
        base_url=f"http://127.0.0.1:{platform.port}",
        headers={"Host": platform.host("seed-auto")},
        timeout=60,
        trust_env=False,
        limits=httpx.Limits(max_connections=100),
    ) as client:
        deadline = time.monotonic() + 12

        def client_loop(_: int) -> int:
            answered = 0
            while time.monotonic() < deadline:
                assert client.get("/produtos").status_code == 200
                answered += 1
            return answered

        with ThreadPoolExecutor(80) as pool:
            load = [pool.submit(client_loop, index) for index in range(80)]
            while not all(future.done() for future in load):
                revision = platform.describe_service("seed-auto")["revisions"][0]
                limits += [i["limit"] for i in revision["instances"] if i["limit"] is not None]
                time.sleep(1.0)
            assert sum(future.result() for future in load) > 100
    # Started at 80; queued inside the app, latency doubled and the limit came down.
    assert limits and min(limits) < 70, limits

    platform.run("services", "update", "seed-auto", "--concurrency", "40", check=True)
    document = platform.run("services", "describe", "seed-auto", "--format", "yaml", check=True)
    assert "run.homerun.dev/concurrency" not in document.stdout
