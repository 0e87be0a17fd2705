"""What the runtime inspector measured inside instances (runtime/_site/_homerun_inspector.py),
as read by the daemon, and a revision's sum of it.

Snapshots are written by the app's own process, so they are untrusted: every field is bounded
and a file that does not validate is skipped.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from homerun.model.cost import CostEstimate

_BIG = 10**9


class _Read(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class BlockingPlace(_Read):
    """App code that held the event loop past the threshold: where, how often, how long."""

    place: str = Field(max_length=500)  # "main.py:11"
    function: str = Field(max_length=200)
    count: int = Field(ge=0, le=_BIG)
    worst_ms: float = Field(ge=0, le=_BIG)
    stack: list[str] = Field(default_factory=list, max_length=20)


class LoopLag(_Read):
    lag_ms_last: float = Field(ge=0, le=_BIG)
    lag_ms_mean: float = Field(ge=0, le=_BIG)
    lag_ms_max: float = Field(ge=0, le=_BIG)
    samples: int = Field(ge=0, le=_BIG)
    stalled_seconds: float = Field(ge=0, le=_BIG)
    threshold_ms: float = Field(ge=0, le=_BIG)


class ThreadPool(_Read):
    """anyio's default limiter, where Starlette (FastAPI) runs `def` endpoints."""

    total: int = Field(ge=0, le=_BIG)
    borrowed: int = Field(ge=0, le=_BIG)
    peak_borrowed: int = Field(ge=0, le=_BIG)
    waiting: int = Field(ge=0, le=_BIG)
    peak_waiting: int = Field(ge=0, le=_BIG)
    full_seconds: float = Field(ge=0, le=_BIG)


class ProcessSnapshot(_Read):
    """One process of an instance (a uvicorn server, or one gunicorn worker)."""

    version: int
    pid: int = Field(ge=1)
    port: int = Field(ge=0, le=65535)
    written_at: float
    server: str = Field(max_length=20)  # "uvicorn" | "gunicorn"
    worker_class: str = Field(default="", max_length=100)
    workers: int = Field(ge=1, le=100_000)
    threads: int = Field(ge=0, le=100_000)  # gunicorn: requests one worker takes at once
    busy: int = Field(ge=-_BIG, le=_BIG)
    peak_busy: int = Field(ge=0, le=_BIG)
    requests: int = Field(ge=0, le=_BIG)
    saturated_seconds: float = Field(ge=0, le=_BIG)
    loop: LoopLag | None = None
    thread_pool: ThreadPool | None = None
    blocking: list[BlockingPlace] = Field(default_factory=list, max_length=100)


class Capacity(_Read):
    """How many requests an instance's server takes at once, and what decides it."""

    server: str  # "gunicorn" | "uvicorn"
    workers: int
    threads: int | None  # gunicorn's per worker; None for uvicorn
    requests_at_once: int | None  # workers x threads; None: only the event loop limits it
    sync_pool: int | None = None  # anyio's threads per worker, for `def` endpoints
    source: str  # "measured" | "command"


class RevisionInspection(_Read):
    """The sum of what a revision's instances measured since it started."""

    processes: int  # snapshots read (one per uvicorn server or gunicorn worker)
    capacity: Capacity | None
    requests: int  # WSGI requests counted (gunicorn)
    peak_busy: int  # most WSGI requests one process held at once
    saturated_seconds: float  # time all of a worker's threads were busy
    loop_lag_ms_mean: float | None
    loop_lag_ms_max: float | None
    loop_stalled_seconds: float
    pool_total: int | None
    pool_peak_borrowed: int
    pool_peak_waiting: int
    pool_full_seconds: float
    pool_waiting: int = 0  # waiting for a thread now (at the newest snapshots)
    blocking: list[BlockingPlace]  # most stalls first


class Finding(_Read):
    """One thing the advisor saw, in the terms of the second seed: what limits an instance."""

    kind: str  # "capacity-below-concurrency" | "blocking-call" | "sync-pool-full" | ...
    severity: str  # "warning" | "info"
    message: str


class RampRequest(_Read):
    """`services advise --ramp`: a bounded load on one private instance of the latest
    revision. Requests and time are both capped; it stops by itself."""

    path: str = Field(default="/", min_length=1, max_length=2000, pattern=r"^/")
    method: str = Field(default="GET", pattern=r"^(GET|HEAD|POST|PUT|PATCH|DELETE|OPTIONS)$")
    max_concurrency: int | None = Field(default=None, ge=1, le=1000)  # None: --concurrency
    duration_seconds: float = Field(default=30.0, ge=2.0, le=300.0)
    max_requests: int = Field(default=20_000, ge=10, le=200_000)
    target_rps: float | None = Field(default=None, gt=0, le=1_000_000)


class RampStep(_Read):
    """One level of the ramp: this many requests kept in flight for a while."""

    concurrency: int
    seconds: float
    requests: int  # answered (any status)
    errors: int  # no answer, or 5xx
    requests_per_second: float
    p50_ms: float | None
    p99_ms: float | None


class RampResult(_Read):
    steps: list[RampStep]
    knee: int | None  # the concurrency past which throughput stops growing
    knee_rps: float | None
    instance: str  # the private instance it loaded
    seconds: float  # the ramp's own run time, its instance's start included


class Advice(_Read):
    """What `homerun services advise` answers: the concurrency to set and why."""

    service: str
    revision: str
    concurrency: int  # the revision's --concurrency now
    recommended_concurrency: int
    # The CPU the recommended concurrency needs, where the revision's is below one (there an
    # instance takes one request at a time).
    recommended_cpu: str | None = None
    capacity: Capacity | None  # measured when instances reported, else read from the command
    server_settings: str | None  # a server change that would let the current concurrency in
    findings: list[Finding]
    inspection: RevisionInspection | None
    ramp: RampResult | None = None
    target_rps: float | None = None
    instances_for_target: int | None = None  # instances for --target-rps at the knee
    # In Cloud Run's terms: what the revision's observed use would cost, and what a million
    # requests would at the knee (the recommended setting's throughput).
    cost: CostEstimate | None = None
    cost_per_million_at_knee: CostEstimate | None = None
