"""What running a revision would cost on Cloud Run, from what homerun observed: vCPU-seconds,
GiB-seconds and requests under request-based and instance-based billing, priced by a table
that is data (its date and source kept; config.yaml's `prices:` overrides it). Pure."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from homerun.model.limits import limits


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Prices(_Model):
    """One billing setting's prices in USD and its monthly free tier."""

    per_vcpu_second: float = Field(ge=0)
    per_gib_second: float = Field(ge=0)
    per_million_requests: float = Field(ge=0)
    free_vcpu_seconds: float = Field(ge=0)
    free_gib_seconds: float = Field(ge=0)
    free_requests: float = Field(ge=0)


class PriceTable(_Model):
    date: str
    source: str
    request_based: Prices
    instance_based: Prices


# https://cloud.google.com/run/pricing, Tier 1 regions, services, read 2026-12-05: request-based
# billing ("CPU only allocated during request processing") and instance-based billing ("CPU
# always allocated"); the free tier resets every month and is shared by the billing account.
DEFAULT_PRICES = PriceTable(
    date="2026-12-05",
    source="https://cloud.google.com/run/pricing (Tier 1)",
    request_based=Prices(
        per_vcpu_second=0.000024,
        per_gib_second=0.0000025,
        per_million_requests=0.40,
        free_vcpu_seconds=180_000,
        free_gib_seconds=360_000,
        free_requests=2_000_000,
    ),
    instance_based=Prices(
        per_vcpu_second=0.000018,
        per_gib_second=0.000002,
        per_million_requests=0.0,
        free_vcpu_seconds=240_000,
        free_gib_seconds=450_000,
        free_requests=0,
    ),
)


def vcpus(cpu: str | None) -> float:
    """`1`, `0.5`, `500m` as vCPUs (Cloud Run's default when None)."""
    return limits(cpu, None).cpu_millis / 1000


def gib(memory: str | None) -> float:
    """`512Mi`, `2Gi`, `1G` as GiB (Cloud Run's default when None)."""
    return limits(None, memory).memory_bytes / 2**30


class Usage(_Model):
    """What a revision's instances did while homerun watched them."""

    instance_seconds: float  # instances alive (starting, ready or draining)
    busy_seconds: float  # instances with at least one request in flight
    requests: int
    vcpus: float
    gib: float


class Cost(_Model):
    billing: str  # "request-based" | "instance-based"
    vcpu_seconds: float
    gib_seconds: float
    requests: int
    usd: float  # before the free tier
    usd_after_free_tier: float  # were this the billing account's only use this month


class CostEstimate(_Model):
    prices_date: str
    prices_source: str
    costs: list[Cost]  # request-based first


def estimate(usage: Usage, prices: PriceTable) -> CostEstimate:
    """Both billing settings for the observed usage. Request-based bills the time instances
    process requests (homerun does not add Cloud Run's rounding up to 100 ms per request, nor
    startup and shutdown); instance-based bills their whole life."""
    return CostEstimate(
        prices_date=prices.date,
        prices_source=prices.source,
        costs=[
            _cost("request-based", usage.busy_seconds, usage, prices.request_based),
            _cost("instance-based", usage.instance_seconds, usage, prices.instance_based),
        ],
    )


def per_million_requests(
    requests_per_second: float, cpu: float, memory: float, prices: PriceTable
) -> CostEstimate:
    """A million requests served by instances each busy at `requests_per_second` (the ramp's
    knee): 1e6 / rps instance-seconds, all of them busy."""
    seconds = 1_000_000 / requests_per_second
    usage = Usage(
        instance_seconds=seconds, busy_seconds=seconds, requests=1_000_000, vcpus=cpu, gib=memory
    )
    return estimate(usage, prices)


def _cost(billing: str, seconds: float, usage: Usage, prices: Prices) -> Cost:
    vcpu_seconds = seconds * usage.vcpus
    gib_seconds = seconds * usage.gib
    requests = usage.requests if prices.per_million_requests else 0

    def priced(cpu: float, memory: float, count: float) -> float:
        return (
            cpu * prices.per_vcpu_second
            + memory * prices.per_gib_second
            + count / 1e6 * prices.per_million_requests
        )

    return Cost(
        billing=billing,
        vcpu_seconds=round(vcpu_seconds, 3),
        gib_seconds=round(gib_seconds, 3),
        requests=requests,
        usd=round(priced(vcpu_seconds, gib_seconds, requests), 6),
        usd_after_free_tier=round(
            priced(
                max(0.0, vcpu_seconds - prices.free_vcpu_seconds),
                max(0.0, gib_seconds - prices.free_gib_seconds),
                max(0.0, requests - prices.free_requests),
            ),
            6,
        ),
    )
