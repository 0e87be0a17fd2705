"""The runtime inspector and `homerun services advise` on the seeds' apps, through the daemon:
the FastAPI seed's 1 s sync endpoint (anyio's 40 threads) and its async one, an async endpoint
that calls time.sleep (forked from a zygote, and spawned), and the Flask seed under its
Dockerfile (gunicorn 1 x 8 behind 80)."""

from __future__ import annotations

import json
import re
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from .harness import APPS, Platform, describe

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# The inspector writes its snapshot every second; the advice reads it.
SNAPSHOT_SECONDS = 10.0


def advice_when(platform: Platform, service: str, ready: Any) -> dict[str, Any]:
    """`homerun services advise --format json`, once `ready(advice)` holds (bounded)."""
    deadline = time.monotonic() + SNAPSHOT_SECONDS
    while True:
        result = platform.run("services", "advise", service, "--format", "json", timeout=30)
        assert result.returncode == 0, describe(result)
        advice: dict[str, Any] = json.loads(result.stdout)
        if ready(advice):
            return advice
        if time.monotonic() > deadline:
            pytest.fail(f"the advice never showed it:\n{json.dumps(advice, indent=2)}")
        time.sleep(0.25)


def _overview(platform: Platform) -> dict[str, Any]:
    """The dashboard's JSON (what its page draws)."""
    status = platform.run("status", check=True).stdout
    dashboard = re.search(r"dashboard: (http://\S+)", status)
    assert dashboard, status
    answer = httpx.get(f"{dashboard.group(1)}/api/overview", trust_env=False, timeout=30)
    assert answer.status_code == 200, answer.text
    overview: dict[str, Any] = answer.json()
    return overview


def kinds(advice: dict[str, Any]) -> list[str]:
    return [finding["kind"] for finding in advice["findings"]]


def _blocking_advice(platform: Platform, service: str) -> dict[str, Any]:
    for _ in range(4):
        response = platform.request(service, "GET", "/lookup", params={"seconds": 0.25})
        assert response.status_code == 200, response.text
    advice = advice_when(
        platform,
        service,
        lambda a: (
            (a["inspection"] or {}).get("blocking") and a["inspection"]["blocking"][0]["count"] >= 3
        ),
    )
    place = advice["inspection"]["blocking"][0]
    assert (place["place"], place["function"]) == ("main.py:11", "legacy_lookup")
    assert "blocking-call" in kinds(advice)
    assert advice["recommended_concurrency"] == 1
    # Logged once as a WARNING entry of the service, with the place.
    deadline = time.monotonic() + SNAPSHOT_SECONDS
    while True:
        logged = platform.run(
            "logs", "read", service, "--severity", "WARNING", "--format", "json", "--limit", "50"
        )
        assert logged.returncode == 0, describe(logged)
        entries = [
            entry
            for entry in map(json.loads, logged.stdout.splitlines())
            if "legacy_lookup" in entry.get("message", "")
        ]
        if entries or time.monotonic() > deadline:
            break
        time.sleep(0.25)
    assert len(entries) == 1, entries
    assert "main.py:11 in legacy_lookup" in entries[0]["message"]
    return advice


def test_an_async_endpoint_calling_time_sleep_is_found_forked(platform: Platform) -> None:
    platform.ensure_deployed("blocking", APPS / "blocking_async", "--max-instances", "1")
    revision = platform.describe_service("blocking")["revisions"][0]
    assert revision["start_mode"]["mode"] == "zygote", revision["start_mode"]
    _blocking_advice(platform, "blocking")
    text = platform.run("services", "advise", "blocking", check=True).stdout
    assert "Blocking call:      main.py:11 in legacy_lookup" in text
    assert "Recommended --concurrency: 1 (homerun services update blocking --concurrency 1)" in text
    described = platform.run("services", "describe", "blocking", check=True).stdout
    assert "main.py:11 in legacy_lookup" in described
    # The dashboard's "Inside the instances" panel reads the same from its overview.
    overview = _overview(platform)
    [service] = [service for service in overview["services"] if service["name"] == "blocking"]
    inside = service["revisions"][0]["inside"]
    assert inside["blocking"][0]["place"] == "main.py:11"
    assert inside["blocking"][0]["function"] == "legacy_lookup"
    assert inside["loop_lag_ms_max"] >= 150


def test_an_async_endpoint_calling_time_sleep_is_found_spawned(platform: Platform) -> None:
    # A command with a `cd` is a real shell script: a zygote cannot run it, so it is spawned.
    platform.ensure_deployed(
        "blocking-spawned",
        APPS / "blocking_async",
        "--max-instances",
        "1",
        "--command",
        "cd . && exec uvicorn main:app --host 127.0.0.1 --port $PORT",
    )
    revision = platform.describe_service("blocking-spawned")["revisions"][0]
    assert revision["start_mode"]["mode"] == "spawn", revision["start_mode"]
    _blocking_advice(platform, "blocking-spawned")


def test_the_fastapi_seeds_sync_endpoint_fills_anyios_40_threads(platform: Platform) -> None:
    platform.ensure_deployed("seed-advise", APPS / "fastapi_seed", "--max-instances", "1")
    assert platform.request("seed-advise", "GET", "/usuarios").status_code == 200

    # One client shared by the threads (httpx's is thread-safe): 80 requests of 1 s start
    # within that second even on a busy machine, so more than 40 overlap.
    with httpx.Client(
        base_url=f"http://127.0.0.1:{platform.port}",
        headers={"Host": platform.host("seed-advise")},
        timeout=60,
        trust_env=False,
        limits=httpx.Limits(max_connections=100),
    ) as client:

        def produtos(_: int) -> int:
            return client.get("/produtos").status_code

        with ThreadPoolExecutor(80) as pool:
            assert set(pool.map(produtos, range(80))) == {200}
    advice = advice_when(
        platform, "seed-advise", lambda a: (a["inspection"] or {}).get("pool_peak_waiting")
    )
    inspection = advice["inspection"]
    assert inspection["pool_total"] == 40 and inspection["pool_peak_borrowed"] == 40
    assert not inspection["blocking"]  # `async def listar_usuarios` awaits: no stall
    assert advice["capacity"]["sync_pool"] == 40
    assert "sync-pool-full" in kinds(advice)
    assert advice["recommended_concurrency"] == 40


def test_the_flask_seed_under_its_dockerfile_has_8_threads_behind_80(platform: Platform) -> None:
    result = platform.ensure_deployed("helloworld", APPS / "flask_seed")
    # Said at deploy, as a suggestion: nothing is changed.
    assert "up to 72 requests wait inside gunicorn" in result.stdout + result.stderr
    assert platform.request("helloworld", "GET", "/").status_code == 200
    advice = advice_when(
        platform, "helloworld", lambda a: (a["capacity"] or {}).get("source") == "measured"
    )
    assert advice["capacity"]["workers"] == 1 and advice["capacity"]["threads"] == 8
    assert advice["concurrency"] == 80 and advice["recommended_concurrency"] == 8
    assert advice["server_settings"] == "gunicorn --workers 1 --threads 80"
    described = platform.describe_service("helloworld")["revisions"][0]
    assert any("8 thread(s) = 8 request(s) at once" in w for w in described["warnings"])
    # What it used so far, in Cloud Run's terms: busy time, its requests, both billings.
    request_based, instance_based = advice["cost"]["costs"]
    assert request_based["billing"] == "request-based" and request_based["requests"] >= 1
    # A few fast requests: milliseconds busy, against the instance's whole life.
    assert 0 <= request_based["vcpu_seconds"] < instance_based["vcpu_seconds"]
    assert request_based["usd_after_free_tier"] == 0


def test_a_ramp_on_a_private_instance_finds_the_40_thread_knee(platform: Platform) -> None:
    platform.ensure_deployed("seed-ramp", APPS / "fastapi_seed", "--min-instances", "1")
    before = platform.describe_service("seed-ramp")["revisions"][0]
    live = {instance["name"] for instance in before["instances"]}
    began = time.monotonic()
    result = platform.run(
        "services", "advise", "seed-ramp", "--path", "/produtos", "--max-concurrency", "64",
        "--duration", "16", "--target-rps", "200", "--format", "json", timeout=200,
    )  # fmt: skip
    took = time.monotonic() - began
    assert result.returncode == 0, describe(result)
    advice = json.loads(result.stdout)
    ramp = advice["ramp"]
    levels = [step["concurrency"] for step in ramp["steps"]]
    assert levels == [1, 2, 4, 8, 16, 32, 40, 64]  # 40: anyio's pool, a level of its own
    # 1 s a request in 40 threads: about 40 req/s, however many are in flight past 40.
    assert ramp["knee"] in (32, 40, 64), ramp
    assert 25 <= ramp["knee_rps"] <= 45, ramp
    assert advice["recommended_concurrency"] == ramp["knee"]
    assert advice["instances_for_target"] >= 5
    # A million requests at the knee: 1e6 / knee_rps busy vCPU-seconds (1 vCPU by default).
    million = advice["cost_per_million_at_knee"]["costs"][0]
    assert million["requests"] == 1_000_000
    assert abs(million["vcpu_seconds"] - 1_000_000 / ramp["knee_rps"]) < 1
    # Bounded: 16 s of load, the instance's start and stop, and the CLI around it.
    assert took < 16 + 40, took
    # The private instance saw the pool fill; it is gone, and the live one never moved.
    assert advice["inspection"]["pool_peak_borrowed"] == 40
    after = platform.describe_service("seed-ramp")["revisions"][0]
    assert {instance["name"] for instance in after["instances"]} == live
    # describe and the dashboard show the latest ramp; a later advise keeps its knee.
    assert after["ramp"]["knee"] == ramp["knee"]
    again = json.loads(
        platform.run("services", "advise", "seed-ramp", "--format", "json", check=True).stdout
    )
    assert again["recommended_concurrency"] == ramp["knee"]
    overview = _overview(platform)
    [service] = [service for service in overview["services"] if service["name"] == "seed-ramp"]
    assert service["revisions"][0]["inside"]["ramp"]["knee"] == ramp["knee"]
    assert ramp["instance"] not in live
    logged = platform.run("logs", "read", "seed-ramp", "--limit", "200", check=True).stdout
    assert ramp["instance"] in logged  # its own log lines, named
