"""Cost in Cloud Run's terms (pure): units, both billing settings, the free tier."""

from __future__ import annotations

import pytest

from homerun.model.cost import DEFAULT_PRICES, Usage, estimate, gib, per_million_requests, vcpus


@pytest.mark.parametrize(
    ("cpu", "expected"), [(None, 1.0), ("2", 2.0), ("500m", 0.5), ("0.25", 0.25)]
)
def test_vcpus(cpu: str | None, expected: float) -> None:
    assert vcpus(cpu) == expected


@pytest.mark.parametrize(
    ("memory", "expected"), [(None, 0.5), ("1Gi", 1.0), ("256Mi", 0.25), ("2G", 2e9 / 2**30)]
)
def test_gib(memory: str | None, expected: float) -> None:
    assert gib(memory) == pytest.approx(expected)


def test_request_based_bills_busy_time_and_instance_based_the_whole_life() -> None:
    # An hour alive, ten minutes of it with requests in flight, 10,000 requests, 1 vCPU, 512 MiB.
    usage = Usage(instance_seconds=3600, busy_seconds=600, requests=10_000, vcpus=1, gib=0.5)
    request_based, instance_based = estimate(usage, DEFAULT_PRICES).costs
    assert (request_based.vcpu_seconds, request_based.gib_seconds) == (600, 300)
    # 600 x 0.000024 + 300 x 0.0000025 + 0.01 x 0.40
    assert request_based.usd == pytest.approx(0.0144 + 0.00075 + 0.004)
    assert request_based.usd_after_free_tier == 0  # well inside the monthly free tier
    assert (instance_based.vcpu_seconds, instance_based.requests) == (3600, 0)
    assert instance_based.usd == pytest.approx(3600 * 0.000018 + 1800 * 0.000002)


def test_the_free_tier_is_taken_off_first() -> None:
    usage = Usage(instance_seconds=0, busy_seconds=200_000, requests=3_000_000, vcpus=1, gib=1)
    request_based = estimate(usage, DEFAULT_PRICES).costs[0]
    # 20,000 vCPU-s and 1,000,000 requests past the free tier; memory is inside it.
    assert request_based.usd_after_free_tier == pytest.approx(20_000 * 0.000024 + 0.40)


def test_a_million_requests_at_the_knee() -> None:
    # The FastAPI seed's sync endpoint: 40 requests/s per 1-vCPU instance.
    request_based = per_million_requests(40, 1, 0.5, DEFAULT_PRICES).costs[0]
    assert request_based.vcpu_seconds == 25_000
    assert request_based.usd == pytest.approx(25_000 * 0.000024 + 12_500 * 0.0000025 + 0.40)
    assert DEFAULT_PRICES.source.startswith("https://cloud.google.com/run/pricing")
