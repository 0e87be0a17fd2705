"""The advisor's decision, from settings, capacity and measurements (pure)."""

from __future__ import annotations

from homerun.model.inspection import BlockingPlace, Capacity, RevisionInspection
from homerun.observe.advisor import advise

SEED_GUNICORN = Capacity(
    server="gunicorn", workers=1, threads=8, requests_at_once=8, source="command"
)
UVICORN = Capacity(
    server="uvicorn",
    workers=1,
    threads=None,
    requests_at_once=None,
    sync_pool=40,
    source="measured",
)


def inspection(**fields: object) -> RevisionInspection:
    values: dict[str, object] = {
        "processes": 1,
        "capacity": UVICORN,
        "requests": 0,
        "peak_busy": 0,
        "saturated_seconds": 0.0,
        "loop_lag_ms_mean": 1.0,
        "loop_lag_ms_max": 3.0,
        "loop_stalled_seconds": 0.0,
        "pool_total": 40,
        "pool_peak_borrowed": 2,
        "pool_peak_waiting": 0,
        "pool_full_seconds": 0.0,
        "blocking": [],
    }
    values.update(fields)
    return RevisionInspection.model_validate(values)


def test_gunicorn_8_threads_behind_80() -> None:
    advice = advise(
        service="s", revision="s-1", concurrency=80, declared=SEED_GUNICORN, inspection=None
    )
    assert advice.recommended_concurrency == 8
    assert advice.server_settings == "gunicorn --workers 1 --threads 80"
    [finding] = advice.findings
    assert finding.kind == "capacity-below-concurrency" and finding.severity == "warning"
    assert "up to 72 requests wait inside gunicorn" in finding.message


def test_capacity_that_covers_the_concurrency_is_fine() -> None:
    declared = SEED_GUNICORN.model_copy(update={"threads": 80, "requests_at_once": 80})
    advice = advise(service="s", revision="s-1", concurrency=80, declared=declared, inspection=None)
    assert advice.recommended_concurrency == 80 and advice.server_settings is None
    assert [finding.kind for finding in advice.findings] == ["no-limit-seen"]
    assert "no instance has reported yet" in advice.findings[0].message


def test_the_measured_capacity_wins_over_the_command() -> None:
    measured = SEED_GUNICORN.model_copy(
        update={"threads": 4, "requests_at_once": 4, "source": "measured"}
    )
    advice = advise(
        service="s",
        revision="s-1",
        concurrency=80,
        declared=SEED_GUNICORN,
        inspection=inspection(capacity=measured, pool_total=None),
    )
    assert advice.recommended_concurrency == 4


def test_a_blocking_call_in_a_coroutine_names_its_place_and_limits_concurrency() -> None:
    place = BlockingPlace(place="main.py:11", function="legacy_lookup", count=12, worst_ms=200.0)
    advice = advise(
        service="s",
        revision="s-1",
        concurrency=80,
        declared=None,
        inspection=inspection(blocking=[place], loop_lag_ms_max=205.0),
    )
    [finding] = [finding for finding in advice.findings if finding.kind == "blocking-call"]
    assert "main.py:11 in legacy_lookup" in finding.message
    assert "about 5 of them per second" in finding.message
    assert advice.recommended_concurrency == 1


def test_a_full_sync_pool_caps_the_concurrency_at_its_threads() -> None:
    advice = advise(
        service="s",
        revision="s-1",
        concurrency=80,
        declared=None,
        inspection=inspection(pool_peak_borrowed=40, pool_peak_waiting=25, pool_full_seconds=3.0),
    )
    [finding] = [finding for finding in advice.findings if finding.kind == "sync-pool-full"]
    assert "anyio's thread pool of 40" in finding.message
    assert advice.recommended_concurrency == 40
